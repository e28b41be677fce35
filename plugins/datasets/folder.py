"""A folder of images, one subfolder per class, optionally inside split folders (train/valid/test).

The building block of the study datasets (rocks, minerals, gems, sports): they are this layout
with their own defaults and group keys. Files are taken whatever their extension (the core
decodes by content); hidden and system files are ignored. Files in subfolders of a class folder
belong to that class. Every row's ``id`` is the path relative to the root, so folds stay valid when
the data moves. What the layout holds besides (empty class folders, nested and loose files) is
noted for ``harness audit``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from harness import REQUIRED, DatasetContext, DatasetSpec, HarnessError, Samples, hookimpl
from harness.toolkit import did_you_mean, is_ignored, plural

#: Folder names read as splits (kept as spelt in the ``split`` column).
SPLIT_NAMES = frozenset({"train", "training", "valid", "validation", "val", "dev", "test", "testing"})

PARAMS = {
    "root": REQUIRED,       # folder under the data root (or an absolute path)
    "splits": [],           # split folders to use; [] = every split found
    "classes": [],          # classes to use, as spelt; [] = all
    "exclude": [],          # classes to leave out
    "random_classes": 0,    # pick this many classes at random (from sample_seed); 0 = all
    "max_per_class": 0,     # at most this many images per class, picked from sample_seed; 0 = all
    "sample_seed": 0,
    "metadata": "",         # CSV under root joined on 'path' (relative to root): extra inputs, 'group'
    "group_pattern": "",    # regex on file names; files whose first capture group matches share a group
}

Grouper = Callable[[pd.DataFrame], pd.Series]


@dataclass
class FolderSamples(Samples):
    """A folder layout's samples, and notes on the rest of the layout that ``harness audit`` reports."""

    #: (path relative to the root, what is odd about it), e.g. an empty class folder.
    layout_notes: list[tuple[str, str]] = field(default_factory=list)


def resolve_root(dataset: str, root: str, context: DatasetContext) -> Path:
    """The dataset's folder: ``root`` under the data root, or ``root`` itself when absolute."""
    path = Path(root).expanduser()
    path = path if path.is_absolute() else Path(context.data_root) / path
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise HarnessError(
            f"dataset '{dataset}': {path} {what} (dataset.root = '{root}', data root {context.data_root}). "
            "Point --data-root or HARNESS_DATA_ROOT at the folder that holds it, or fix dataset.root."
        )
    return path


def subfolders(folder: Path) -> list[Path]:
    """Visible subfolders, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not is_ignored(p.name)), key=lambda p: p.name)


def list_files(folder: Path) -> list[Path]:
    """Every visible file under a folder (recursively, broken links included), sorted."""
    found = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_ignored(d)]
        found += [Path(here) / f for f in files if not is_ignored(f)]
    return sorted(found)


def detect_splits(root: Path) -> list[Path]:
    """The split folders of a root whose subfolders are all splits (train/valid/test…), else []."""
    folders = subfolders(root)
    if folders and all(p.name.lower() in SPLIT_NAMES for p in folders):
        return folders
    return []


def scan(root: Path) -> pd.DataFrame:
    """One row per file: id (relative path), path, label (class folder) and split when the layout has one."""
    rows = []
    splits = detect_splits(root)
    for split in splits or [None]:
        base = split or root
        for class_dir in subfolders(base):
            for file in list_files(class_dir):
                row = {"id": file.relative_to(root).as_posix(), "path": str(file), "label": class_dir.name}
                if split is not None:
                    row["split"] = split.name
                rows.append(row)
    columns = ["id", "path", "label"] + (["split"] if splits else [])
    return pd.DataFrame(rows, columns=columns)


def layout_notes(root: Path, table: pd.DataFrame) -> list[tuple[str, str]]:
    """What the layout holds besides files in class folders, given its ``scan``: image files outside
    any class folder (not used), empty class folders, and subfolders of a class folder (their files
    are used as that class). Paths are relative to the root; folders end in '/'."""
    image_extensions = Image.registered_extensions()
    bases = detect_splits(root) or [root]
    depth = 3 if "split" in table.columns else 2  # [split/]class/file
    parts = table["id"].str.split("/")
    notes = [
        (file.relative_to(root).as_posix(), "an image file outside any class folder: not used")
        for base in bases for file in sorted(base.iterdir())
        if file.is_file() and not is_ignored(file.name) and file.suffix.lower() in image_extensions
    ]
    used = set(parts.str[:depth - 1].str.join("/"))
    class_folders = sorted(folder.relative_to(root).as_posix() for base in bases for folder in subfolders(base))
    notes += [(folder + "/", "an empty class folder: no files, so no class") for folder in class_folders if folder not in used]
    nested = parts[parts.str.len() > depth].str[:-1].str.join("/")
    for folder, count in nested.value_counts().sort_index().items():
        label = folder.split("/")[depth - 2]
        notes.append((folder + "/", f"a subfolder of class folder '{label}' with {plural(count, 'file')}, used as '{label}'"))
    return notes


def _names(params: dict, key: str, dataset: str) -> list[str]:
    values = params.get(key) or []
    if not all(isinstance(v, str) for v in values):
        raise HarnessError(f"dataset '{dataset}': {key} must be a list of names (strings), got {values!r}.")
    return list(values)


def _check_known(wanted: list[str], known: list[str], key: str, dataset: str, root: Path) -> None:
    for name in wanted:
        if name not in known:
            raise HarnessError(
                f"dataset '{dataset}': {key} names '{name}', which is not a folder of {root}."
                f"{did_you_mean(name, known)} Found: {', '.join(known)}."
            )


def select(table: pd.DataFrame, params: dict, dataset: str, root: Path) -> pd.DataFrame:
    """Apply splits, classes, exclude, random_classes and max_per_class."""
    if "split" in table.columns:
        splits = _names(params, "splits", dataset)
        _check_known(splits, sorted(table["split"].unique()), "splits", dataset, root)
        if splits:
            table = table[table["split"].isin(splits)]
    elif params.get("splits"):
        raise HarnessError(
            f"dataset '{dataset}': splits = {params['splits']} but {root} has no split folders "
            "(train/valid/test); remove dataset.splits."
        )
    known = sorted(table["label"].unique())
    classes, exclude = _names(params, "classes", dataset), _names(params, "exclude", dataset)
    _check_known(classes + exclude, known, "classes" if classes else "exclude", dataset, root)
    chosen = [c for c in (classes or known) if c not in exclude]
    rng = np.random.default_rng(params.get("sample_seed", 0))
    pick = params.get("random_classes", 0)
    if pick:
        if not 2 <= pick <= len(chosen):
            raise HarnessError(
                f"dataset '{dataset}': random_classes = {pick}, but {len(chosen)} classes are available; "
                f"choose between 2 and {len(chosen)}, or 0 for all."
            )
        chosen = sorted(rng.choice(chosen, size=pick, replace=False).tolist())
    table = table[table["label"].isin(chosen)]
    cap = params.get("max_per_class", 0)
    if cap:
        keep = [rows.index[np.sort(rng.permutation(len(rows))[:cap])] for _, rows in table.groupby("label", sort=True)]
        table = table.loc[np.sort(np.concatenate(keep))] if keep else table
    return table.reset_index(drop=True)


def join_metadata(table: pd.DataFrame, root: Path, csv: str, dataset: str) -> pd.DataFrame:
    """Join a CSV of per-image metadata on 'path' (relative to root); a 'group' column sets groups."""
    source = root / csv
    if not source.is_file():
        raise HarnessError(f"dataset '{dataset}': metadata file {source} not found (dataset.metadata = '{csv}').")
    meta = pd.read_csv(source, dtype=str, keep_default_na=False)
    if "path" not in meta.columns:
        raise HarnessError(f"{source}: no 'path' column; it must name each image relative to {root}.")
    clash = sorted(set(meta.columns) & {"id", "label", "split"})
    if clash:
        raise HarnessError(f"{source}: columns {clash} would overwrite the layout's own; rename them.")
    meta = meta.rename(columns={"path": "id"}).drop_duplicates("id")
    missing = table.loc[~table["id"].isin(meta["id"]), "id"]
    if len(missing):
        raise HarnessError(
            f"{source}: {len(missing)} image(s) have no row (e.g. {', '.join(missing.head(3))}); "
            "add rows for them, or remove the images."
        )
    if "group" in meta.columns:
        table = table.drop(columns="group", errors="ignore")
    return table.merge(meta, on="id", how="left")


def pattern_groups(pattern: str, dataset: str) -> Grouper:
    """Group key from a regex on the file name: '<class>/<first capture group>' (the whole match without groups)."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise HarnessError(f"dataset '{dataset}': group_pattern {pattern!r} is not a valid regular expression: {exc}.") from None

    def groups(table: pd.DataFrame) -> pd.Series:
        names = table["id"].str.rsplit("/", n=1).str[-1]
        keys = names.map(lambda name: (m := regex.search(name)) and (m.group(1) if regex.groups else m.group(0)))
        return (table["label"] + "/" + keys.fillna("")).where(keys.notna() & (keys != ""), table["id"])

    return groups


def load_folder(params: dict, context: DatasetContext, dataset: str = "folder", groups: Grouper | None = None) -> Samples:
    """The folder layout as a sample table; ``groups`` maps the table to group keys (default: none)."""
    root = resolve_root(dataset, params["root"], context)
    table = scan(root)
    if table.empty:
        raise HarnessError(
            f"dataset '{dataset}': no images in {root}. Expected one subfolder per class "
            "(optionally inside train/valid/test folders)."
        )
    notes = layout_notes(root, table)
    table = select(table, params, dataset, root)
    if groups is None and params.get("group_pattern"):
        groups = pattern_groups(params["group_pattern"], dataset)
    if groups is not None:
        table["group"] = groups(table)
    if params.get("metadata"):
        table = join_metadata(table, root, params["metadata"], dataset)
    return FolderSamples(table, layout_notes=notes)


def load(params: dict, context: DatasetContext) -> Samples:
    return load_folder(params, context)


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="folder",
            load=load,
            params=PARAMS,
            description="one subfolder per class, optionally inside train/valid/test; class and split selection",
        )
    ]
