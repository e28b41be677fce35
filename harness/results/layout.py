"""The results folder's layout: the names of the files a study writes, and folds.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.core.files import atomic_write
from harness.errors import HarnessError

FOLDS_FILE = "folds.csv"
#: The run's description (the study, its candidates, where its data and storage are).
RUN_FILE = "run.json"
#: The trials of a study without a storage setting; optuna.db is where an older harness kept them.
SQLITE_FILE, JOURNAL_FILE = "optuna.db", "optuna.journal"


def save_or_check_folds(folds: pd.DataFrame, results_dir: Path) -> None:
    """Save the folds; on a rerun, insist they are the ones the saved results were scored on."""
    path = results_dir / FOLDS_FILE
    if path.exists():
        saved = pd.read_csv(path, dtype={"id": str, "label": str, "group": str}, keep_default_na=False)
        if list(saved.columns) != list(folds.columns) or not saved.equals(folds.astype(saved.dtypes.to_dict())):
            raise HarnessError(
                f"{path} holds different folds (the data or the [cv] settings changed since these results "
                "were made). Results of different folds are not comparable: run with another --results "
                "folder, or delete this one to start over."
            )
        return
    results_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, folds.to_csv(index=False), fsync=False)


def folds_grouped(info: dict, folds) -> bool:
    """Whether a run's folds kept groups together: from its run file, or for runs written before
    it said so, whether any image's group differs from its id."""
    if "grouped" in info:
        return bool(info["grouped"])
    return bool((folds["group"] != folds["id"]).any())
