"""`harness compare A B`: two studies over the same images side by side, candidate by candidate.

For protocol questions (one split against K-fold cross-validation, grouped against ungrouped folds):
what each protocol says of the same candidate, with its spread and interval, and how far apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import HarnessError
from harness.reports.leaderboard import build_leaderboard
from harness.results.layout import RUN_FILE, folds_grouped


@dataclass
class Protocol:
    """How a results folder scored its candidates."""

    name: str
    objective: str
    description: str
    ids: set[str]


def protocol(results_dir: Path) -> Protocol:
    if not (results_dir / RUN_FILE).is_file():
        raise HarnessError(f"{results_dir}: not a results folder of harness (no {RUN_FILE}); give a study's results "
                           "folder, e.g. results/minerals.")
    info = json.loads((results_dir / RUN_FILE).read_text())
    folds = pd.read_csv(results_dir / "folds.csv", dtype={"id": str, "group": str}, keep_default_na=False)
    repeats = [c for c in folds.columns if c.startswith("repeat_")]
    grouped = "grouped" if folds_grouped(info, folds) else "ungrouped"
    if info["folds"] == 1:  # a holdout split: fold 0 validates, the rows marked 1 only train
        how = f"one split ({(folds[repeats[0]] == 0).mean():.0%} validation)"
    else:
        how = f"{info['folds']}-fold CV" + (f" × {len(repeats)} repeats" if len(repeats) > 1 else "")
    held = (folds["part"].astype(str) == "test").sum() if "part" in folds.columns else 0
    test = f" ({held} in a locked test set)" if held else ""
    return Protocol(info["study"], info["objective"], f"{how}, {grouped}, {len(folds)} images{test}", set(folds["id"]))


def compare(first: Path, second: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per candidate in both studies: each protocol's mean, spread, interval and folds, and
    the difference; and notes (different images, candidates in one study only)."""
    first, second = Path(first), Path(second)
    a, b = protocol(first), protocol(second)
    if a.objective != b.objective:
        raise HarnessError(f"{first} ranks by {a.objective}, {second} by {b.objective}: compare studies with one objective.")
    notes = []
    if a.ids != b.ids:
        notes.append(f"not the same images: {len(a.ids - b.ids)} only in {a.name}, {len(b.ids - a.ids)} only in "
                     f"{b.name}; the comparison mixes data and protocol")
    boards = [build_leaderboard(Path(first)), build_leaderboard(Path(second))]
    metric = a.objective
    rows = []
    names = [n for n in boards[0]["candidate"] if n in set(boards[1]["candidate"])]
    for side, board in zip((a, b), boards):
        only = sorted(set(board["candidate"]) - set(names))
        if only:
            notes.append(f"only in {side.name}: {', '.join(only)}")
    for name in names:
        row = {"candidate": name}
        for tag, board in zip(("a", "b"), boards):
            r = board[board["candidate"] == name].iloc[0]
            row[f"{tag}_mean"] = r.get(f"{metric}_mean")
            row[f"{tag}_std"] = r.get(f"{metric}_std")
            row[f"{tag}_ci_low"] = r.get(f"{metric}_ci_low")
            row[f"{tag}_ci_high"] = r.get(f"{metric}_ci_high")
            row[f"{tag}_folds"] = r.get("folds")
        row["difference"] = row["a_mean"] - row["b_mean"]
        inside = row["b_ci_low"] <= row["a_mean"] <= row["b_ci_high"] if pd.notna(row["b_ci_low"]) else None
        row["a_within_b_interval"] = inside
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(a=a, b=b, metric=metric, scores=_unseen_scores(table, boards, names, (a, b), notes))
    return table, notes


#: Scores on images no search saw: (label, leaderboard column of the value, prefix of its interval columns).
UNSEEN = (("test", "test_accuracy", "test_accuracy"), ("nested", "nested_accuracy_mean", "nested_accuracy"))


def _unseen_scores(table: pd.DataFrame, boards: list[pd.DataFrame], names: list[str], sides: tuple,
                   notes: list[str]) -> list[str]:
    """Add ``<a|b>_<test|nested>`` (accuracy) with ``_low`` / ``_high`` where both studies have them;
    returns which were added, and notes a score only one study has."""
    added = []
    for label, column, prefix in UNSEEN:
        has = [column in board.columns and board[column].notna().any() for board in boards]
        if has[0] != has[1]:
            what = "a locked test set" if label == "test" else "nested cross-validation"
            notes.append(f"only {sides[has.index(True)].name} has {what}: its {label} accuracy is not compared")
        if not all(has) or table.empty:
            continue
        added.append(label)
        for tag, board in zip(("a", "b"), boards):
            indexed = board.set_index("candidate")
            for suffix, source in (("", column), ("_low", f"{prefix}_low"), ("_high", f"{prefix}_high")):
                table[f"{tag}_{label}{suffix}"] = [indexed[source].get(n) if source in indexed else None for n in names]
    return added


def print_comparison(table: pd.DataFrame, notes: list[str], console: Console) -> None:
    a, b, metric = table.attrs["a"], table.attrs["b"], table.attrs["metric"]
    console.print(f"[bold]A[/] {escape(a.name)}: {escape(a.description)}")
    console.print(f"[bold]B[/] {escape(b.name)}: {escape(b.description)}")
    rich_table = Table(title=f"{metric}: A against B", caption="mean ± std over folds of each candidate's best "
                       "configuration; 95% CI corrected (Nadeau–Bengio); one split has no spread")
    scores = table.attrs.get("scores", [])
    unseen = [f"{side} {label} accuracy (95% CI)" for label in scores for side in ("A", "B")]
    for column in ("candidate", "A", "A 95% CI", "B", "B 95% CI", "A − B", "A inside B's CI", *unseen):
        rich_table.add_column(column)
    if not console.is_terminal:
        console.width = max(console.width, 160 + 24 * len(unseen))  # a log file has no width: keep the rows whole

    def cell(row, tag):
        mean, std, folds = row[f"{tag}_mean"], row[f"{tag}_std"], row[f"{tag}_folds"]
        if pd.isna(mean):
            return "—", "—"
        low, high = row[f"{tag}_ci_low"], row[f"{tag}_ci_high"]
        spread = f"{mean:.3f} (1 split)" if folds == 1 else f"{mean:.3f} ± {std:.3f} ({int(folds)} folds)"
        return spread, "—" if pd.isna(low) or low == high else f"{low:.3f}–{high:.3f}"

    for _, row in table.iterrows():
        a_cells, b_cells = cell(row, "a"), cell(row, "b")
        inside = row["a_within_b_interval"]
        difference = "—" if pd.isna(row["difference"]) else f"{row['difference']:+.3f}"
        rich_table.add_row(escape(str(row["candidate"])), *a_cells, *b_cells, difference,
                           "—" if inside is None or pd.isna(inside) else "yes" if inside else "no",
                           *(_unseen_cell(row, f"{tag}_{label}") for label in scores for tag in ("a", "b")))
    console.print(rich_table)
    if scores:
        console.print("test: the configuration selected by CV scored once on the locked test set; nested: outer "
                      "folds pooled; exact binomial 95% CI", soft_wrap=True, highlight=False)
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True, highlight=False)


def _unseen_cell(row: pd.Series, column: str) -> str:
    value, low, high = row.get(column), row.get(f"{column}_low"), row.get(f"{column}_high")
    if value is None or pd.isna(value):
        return "—"
    return f"{value:.3f}" + ("" if low is None or pd.isna(low) else f" ({low:.3f}–{high:.3f})")
