"""Build, compile and fit one fold; the kept model; feature and boundary caches; inference loops."""
