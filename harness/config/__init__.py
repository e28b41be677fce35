"""The study file: its schema, loading, overrides and the search space."""

from harness.core.compat import forwarding

__getattr__ = forwarding(__name__, "harness.config.study")  # the 0.1 names of harness.config, for a release
