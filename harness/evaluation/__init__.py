"""Scores, statistics (intervals, corrected tests) and per-class evidence."""
