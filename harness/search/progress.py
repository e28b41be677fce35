"""What a search shows while it runs: bars for trials, folds and epochs, and a line per finished trial."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.config.study import Candidate, Study
from harness.evaluation.scores import dead_warnings
from harness.specs import FoldRecord


class SearchProgress:
    """Bars for trials, folds and epochs; a line per finished trial."""

    def __init__(self, console: Console, disable: bool = False):
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=disable,
        )
        self.console = console

    def __enter__(self):
        self.bars.__enter__()
        self.trials = self.bars.add_task("trials", total=1)
        self.folds = self.bars.add_task("  folds", total=1)
        self.epochs = self.bars.add_task("    epochs", total=1)
        return self

    def __exit__(self, *exc):
        return self.bars.__exit__(*exc)


def trial_line(console: Console, label: str, candidate: Candidate, number: int, state: str, value: float,
               sampled: dict[str, Any], records: list[FoldRecord], study: Study) -> None:
    """The line a finished or pruned trial prints, and a warning when some of its folds learned nothing."""
    values = [r.metrics[study.metrics.objective] for r in records]
    spread = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
    shown = ", ".join(f"{k}={_short(v)}" for k, v in sampled.items()) or "fixed settings"
    console.print(
        f"{label}{candidate.name} trial {number} {state}: {study.metrics.objective} {value:.3f}{spread} "
        f"over {len(records)} fold(s) [dim]({shown})[/]"
    )
    flagged = [r for r in records if dead_warnings(r.warnings)]
    if flagged:
        console.print(
            f"[yellow]warning:[/] {label}{escape(candidate.name)} trial {number}: {len(flagged)} of {len(records)} "
            f"fold(s) {escape(dead_warnings(flagged[0].warnings)[0])}. Its score is no evidence of learning: check the learning "
            "rate, the weights and freeze_base."
        )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
