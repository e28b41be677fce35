"""The search: one Optuna study per candidate (or keras-tuner), a trial is one configuration on all folds."""

from harness.core.compat import forwarding

__getattr__ = forwarding(__name__, "harness.search.engine")  # the 0.1 names of harness.search, for a release
