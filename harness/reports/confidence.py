"""How sure a model is when it is right and when it is wrong, from its out-of-fold predictions.

A well-calibrated model is unsure of its errors; errors made with over 90 % confidence are the ones
nobody downstream will catch (the rocks study: "15 of 33 errors above 90 % confidence"). The
report shows the top-1 probability of right and wrong predictions side by side, and the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.evaluation.evidence import OutOfFold, out_of_fold
from harness.reports.figures import png
from harness.results.records import RECORDS_FILE, fold_predictions, read_records

#: An error above this top-1 probability counts as confidently wrong.
CONFIDENT = 0.9


@dataclass
class Confidence:
    """Top-1 probabilities of the right and the wrong out-of-fold predictions of one configuration."""

    right: np.ndarray
    wrong: np.ndarray

    @property
    def predictions(self) -> int:
        return len(self.right) + len(self.wrong)

    @property
    def errors(self) -> int:
        return len(self.wrong)

    @property
    def confident_errors(self) -> int:
        """Errors made with a top-1 probability above ``CONFIDENT``."""
        return int(np.sum(self.wrong > CONFIDENT))

    @property
    def confident_share(self) -> float:
        return self.confident_errors / self.errors if self.errors else 0.0

    def sentence(self) -> str:
        """E.g. "15 of 33 errors (45 %) above 90 % confidence"."""
        if not self.errors:
            return f"no errors in {self.predictions} out-of-fold predictions"
        return (f"{self.confident_errors} of {self.errors} errors ({self.confident_share:.0%}) above "
                f"{CONFIDENT:.0%} confidence; {self.predictions} out-of-fold predictions")


def confidence(oof: OutOfFold) -> Confidence:
    """Split the top-1 probabilities by whether the prediction was right."""
    top = oof.probabilities.max(axis=1)
    right = oof.predicted == oof.labels
    return Confidence(top[right], top[~right])


def confidence_plot(conf: Confidence, classes: int) -> str:
    """Two histograms of the top-1 probability, right and wrong predictions, on one axis (PNG URI)."""
    from matplotlib.figure import Figure


    figure = Figure(figsize=(4.5, 3.2))
    axis = figure.subplots()
    bins = np.linspace(1 / max(classes, 1), 1, 21)
    for values, label, color in ((conf.right, "right", "tab:blue"), (conf.wrong, "wrong", "tab:red")):
        if len(values):
            axis.hist(values, bins=bins, alpha=0.55, color=color, label=f"{label} ({len(values)})")
    axis.axvline(CONFIDENT, color="grey", linestyle=":", label=f"{CONFIDENT:.0%}")
    axis.set_xlabel("top-1 probability")
    axis.set_ylabel("predictions")
    axis.set_yscale("log")
    axis.legend(fontsize=7)
    return png(figure)


def confidence_rows(results_dir: Path, board) -> list[dict]:
    """Per candidate's best configuration: its name and ``Confidence`` (None without predictions)."""
    records = read_records(Path(results_dir) / RECORDS_FILE)
    rows = []
    for _, row in board.iterrows():
        if not isinstance(row.get("config_id"), str):
            continue
        mine = [r for r in records if r.candidate == row["candidate"] and r.config_id == row["config_id"]]
        oof = out_of_fold(fold_predictions(results_dir, mine))
        rows.append({"candidate": row["candidate"], "confidence": None if oof is None else confidence(oof)})
    return rows


def confidence_markdown(results_dir: Path, board) -> str:
    """report.md's section: per candidate, its errors and those made above 90 % confidence."""
    rows = confidence_rows(results_dir, board)
    if not rows:
        return ""
    lines = ["## Confidence of the out-of-fold predictions", "",
             (f"Top-1 probability of each candidate's best configuration; an error above {CONFIDENT:.0%} "
              "confidence is one the model gives no sign of."), "",
             "| candidate | predictions | errors | errors above 90% | share | median top-1 right | median top-1 wrong |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        c = row["confidence"]
        if c is None:
            lines.append(f"| {row['candidate']} | — | — | — | — | — | — |")
            continue
        right = f"{np.median(c.right):.3f}" if len(c.right) else "—"
        wrong = f"{np.median(c.wrong):.3f}" if len(c.wrong) else "—"
        share = f"{c.confident_share:.0%}" if c.errors else "—"
        lines.append(f"| {row['candidate']} | {c.predictions} | {c.errors} | {c.confident_errors} | {share} "
                     f"| {right} | {wrong} |")
    return "\n".join(lines) + "\n"
