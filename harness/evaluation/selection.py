"""Which configuration a search selected: the best mean objective over its complete configurations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.specs import FoldRecord


@dataclass
class Selection:
    """A search's selected configuration, its fold records, and every complete configuration's mean."""

    config_id: str
    records: list[FoldRecord]
    means: dict[str, float]

    @property
    def score(self) -> float:
        return self.means[self.config_id]


def select_configuration(records: list[FoldRecord], objective: str, maximize: bool, n_splits: int) -> Selection | None:
    """The configuration with the best mean ``objective`` among those with all ``n_splits`` folds
    recorded (the first of equals, in the records' order); None when none is complete."""
    by_config: dict[str, list[FoldRecord]] = {}
    for record in records:
        by_config.setdefault(record.config_id, []).append(record)
    complete = {cid: rs for cid, rs in by_config.items() if len(rs) == n_splits}
    if not complete:
        return None
    means = {cid: float(np.mean([r.metrics[objective] for r in rs])) for cid, rs in complete.items()}
    best = (max if maximize else min)(means, key=means.get)
    return Selection(best, sorted(complete[best], key=lambda r: (r.repeat, r.fold)), means)
