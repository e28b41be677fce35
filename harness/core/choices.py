"""Choices and defaults that the study schema offers and the data code applies (one place for both)."""

from __future__ import annotations

#: How a decoded image is brought to the study's size: stretch to it (what the original studies
#: did), crop the centre to its aspect ratio, or pad to it with black.
RESIZE_POLICIES = ("stretch", "crop", "pad")

#: Default near-duplicate threshold: the share of a perceptual hash's bits that may differ. Calibrated
#: on the shared datasets: resized or re-encoded copies differ by up to 7 % (sports15), different shells
#: of one species photographed alike by 9 % or more (seashells8), also when one is turned or mirrored.
NEAR_DUPLICATES = 0.08
