"""The training seeds a study derives from its seed: one per configuration and fold."""

from __future__ import annotations

import hashlib


def fold_seed(seed: int, config: str, repeat: int, fold: int) -> int:
    """The training seed of one configuration on one fold; ``(-1, -1)``: its refit on every row
    cross-validation used (the test set's, the export's and the report's heat maps' model)."""
    digest = hashlib.sha256(f"{seed}/{config}/{repeat}/{fold}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def refit_seed(seed: int, config: str) -> int:
    """The seed of a configuration's refit: ``fold_seed(seed, config, -1, -1)``."""
    return fold_seed(seed, config, -1, -1)
