"""Datasets, decoding, image hashing, the image store, leakage groups, folds and the audit."""

from harness.core.compat import forwarding

__getattr__ = forwarding(__name__, "harness.data.dataset")  # the 0.1 names of harness.data, for a release
