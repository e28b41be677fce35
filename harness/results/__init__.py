"""The results folder's layout, fold records and the study's storage."""
