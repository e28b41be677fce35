"""Run, join, worker and validate a study; processes and the run lock; export's refit."""
