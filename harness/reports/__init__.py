"""Leaderboard tables, compare and report.html."""
