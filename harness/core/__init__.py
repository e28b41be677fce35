"""Foundation used by every layer: Keras backend start-up, memory, default paths, settings, files and locks."""
