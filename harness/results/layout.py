"""The results folder's layout: the names of the files a study writes, and folds.csv."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError

FOLDS_FILE = "folds.csv"


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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: two processes may write at once
    folds.to_csv(tmp, index=False)
    tmp.replace(path)
