"""The leaderboard: per candidate, its best configuration's mean and spread over folds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.errors import HarnessError
from harness.records import RECORDS_FILE, read_records
from harness.search import RUN_FILE

CSV_FILE = "leaderboard.csv"
MARKDOWN_FILE = "leaderboard.md"


def metric_names(info: dict) -> list[str]:
    """Accuracy, each top-k accuracy that can tell models apart, loss. With k at or above the number
    of classes top-k accuracy is 1 for every model: the fold records keep it, the leaderboard not
    (unless it is the objective)."""
    classes, objective = len(info["classes"]), info["objective"]
    top = [f"top_{k}_accuracy" for k in info["top_k"] if k < classes or f"top_{k}_accuracy" == objective]
    return ["accuracy", *top, "loss"]


def build_leaderboard(results_dir: Path) -> pd.DataFrame:
    """Rank candidates by the objective's mean over folds of their best complete configuration.

    Built from the fold records alone, so it is the same whether the search finished in one run or
    was resumed. A configuration counts only when all its folds are recorded.
    """
    results_dir = Path(results_dir)
    run_path = results_dir / RUN_FILE
    if not run_path.exists():
        raise HarnessError(f"{results_dir}: not a results folder of harness (no {RUN_FILE}); run a study first.")
    info = json.loads(run_path.read_text())
    records = read_records(results_dir / RECORDS_FILE)
    n_splits = info["folds"] * info["repeats"]
    objective, maximize = info["objective"], info["direction"] == "maximize"
    names = metric_names(info)
    extra = sorted({m for r in records for m in r.metrics} - set(names) - {f"top_{k}_accuracy" for k in info["top_k"]})
    rows = []
    for cand in info["candidates"]:
        mine = [r for r in records if r.search_id == cand["search_id"]]
        by_config: dict[str, list] = {}
        for r in mine:
            by_config.setdefault(r.config_id, []).append(r)
        complete = {cid: rs for cid, rs in by_config.items() if len(rs) == n_splits}
        row = {"candidate": cand["name"], "model": cand["model"]}
        row["trials"] = len({r.trial for r in mine})
        row["complete"] = len(complete)
        if complete:
            frame = {cid: pd.DataFrame([r.metrics for r in rs]) for cid, rs in complete.items()}
            means = pd.Series({cid: f[objective].mean() for cid, f in frame.items()})
            best = means.idxmax() if maximize else means.idxmin()
            folds = frame[best]
            for m in names + extra:
                row[f"{m}_mean"] = folds[m].mean()
                row[f"{m}_std"] = folds[m].std(ddof=1) if len(folds) > 1 else 0.0
            best_records = complete[best]
            row["folds"] = len(best_records)
            row["fit_seconds"] = sum(r.fit_seconds for r in best_records) / len(best_records)
            row["best_trial"] = min(r.trial for r in best_records)
            row["best_params"] = json.dumps(best_records[0].tuned, sort_keys=True)
            row["config"] = json.dumps(best_records[0].params, sort_keys=True)
        rows.append(row)
    table = pd.DataFrame(rows)
    key = f"{objective}_mean"
    if key not in table.columns:
        table[key] = float("nan")
    table = table.sort_values(key, ascending=not maximize, na_position="last", kind="stable").reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def write_leaderboard(table: pd.DataFrame, results_dir: Path) -> None:
    table.to_csv(Path(results_dir) / CSV_FILE, index=False, float_format="%.6g")
    (Path(results_dir) / MARKDOWN_FILE).write_text(to_markdown(table))


def _cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells: 'mean ± std' per metric, the rest as is."""
    # top-1 accuracy is accuracy: shown once on screen, kept in the CSV
    metrics = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean") and c != "top_1_accuracy_mean"]
    headers = ["#", "candidate", "model", *(_short_name(m) for m in metrics), "trials", "s/fold", "best parameters"]
    rows = []
    for _, r in table.iterrows():
        cells = [str(r["rank"]), str(r["candidate"]), str(r["model"])]
        for m in metrics:
            mean, std = r.get(f"{m}_mean"), r.get(f"{m}_std")
            cells.append("—" if pd.isna(mean) else f"{mean:.3f}±{std:.3f}")
        cells.append(f"{int(r['complete'])}/{int(r['trials'])}")
        fit = r.get("fit_seconds")
        cells.append("—" if fit is None or pd.isna(fit) else f"{fit:.1f}")
        cells.append(_params_text(r.get("best_params")))
        rows.append(cells)
    return headers, rows


def _short_name(metric: str) -> str:
    return metric.replace("_accuracy", "").replace("top_", "top-")


def _params_text(text: object) -> str:
    if not isinstance(text, str):
        return "—"
    params = json.loads(text)
    shown = (f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in params.items())
    return ", ".join(shown) or "fixed"


def to_markdown(table: pd.DataFrame) -> str:
    headers, rows = _cells(table)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_leaderboard(table: pd.DataFrame, console: Console, title: str = "Leaderboard") -> None:
    """The table with metric columns kept whole; each candidate's best parameters listed below it."""
    headers, rows = _cells(table)
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a log file has no width: keep the rows whole
    rich_table = Table(title=title, caption="mean ± std over folds of each candidate's best configuration")
    narrow = console.width < 110  # mean above spread, so a terminal of 80 columns shows every column
    keep = [i for i, h in enumerate(headers[:-1]) if not (narrow and h == "s/fold")]
    headers = [headers[i] for i in keep]
    shown = [[row[i].replace("±", "\n±") if narrow else row[i] for i in keep] for row in rows]
    for i, h in enumerate(headers):
        longest = max([len(h)] + [len(line) for row in shown for line in row[i].splitlines()])
        rich_table.add_column(h, overflow="fold", min_width=min(longest, 12))
    for row in shown:
        rich_table.add_row(*row)
    console.print(rich_table)
    for row in rows:
        console.print(f"  {row[1]}: {escape(row[-1])}", soft_wrap=True, highlight=False)
