"""Which rows a study may tune on: the locked test set taken out first, and the dataset's own
train/valid split for ``cv.scheme = "given"``.

Each image gets a part: "cv" (the folds are made from these), "test" (scored once, after
selection) or "unused" (in neither: a split the protocol does not name, or a copy of a test image
that would otherwise leak into training).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from harness.config.study import CVConfig
from harness.data.dataset import Dataset
from harness.errors import HarnessError, did_you_mean
from harness.toolkit.text import plural

CV, TEST, UNUSED = "cv", "test", "unused"


def take_share(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int, stratified: bool = True) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the rows, whole groups only: per class (a group counts
    for its most common label) the groups in a seeded order until the class's share is reached.

    scikit-learn's splitters are either stratified or group-aware with a fixed share (GroupShuffleSplit
    is not stratified, StratifiedGroupKFold cuts 1/K shares), hence this small loop.
    """
    frame = pd.DataFrame({"label": labels, "group": groups})
    sizes = frame.groupby("group").size()
    majority = frame.groupby("group")["label"].agg(lambda s: s.value_counts().index[0])
    position = np.random.default_rng(seed).permutation(len(sizes))
    order, order_sizes = sizes.index.to_numpy()[position], sizes.to_numpy()[position]
    order_majority = majority.to_numpy()[position]
    chosen: list = []
    strata = majority.unique() if stratified else [None]
    for stratum in sorted(strata, key=str):
        mine = np.ones(len(order), dtype=bool) if stratum is None else order_majority == stratum
        member_sizes = order_sizes[mine]
        before = np.cumsum(member_sizes) - member_sizes  # images taken before each group
        # the groups in order until the next would overshoot the share by more than half its size
        over = np.flatnonzero(before + member_sizes / 2 > fraction * member_sizes.sum())
        chosen.extend(order[mine][: over[0] if len(over) else len(member_sizes)])
    return frame["group"].isin(chosen).to_numpy()


def assign_parts(dataset: Dataset, cv: CVConfig) -> tuple[np.ndarray, list[str]]:
    """Each row's part (CV, TEST or UNUSED) and notes on what the protocol left out."""
    table = dataset.table
    parts = np.full(len(table), CV, dtype=object)
    notes: list[str] = []
    if cv.scheme == "given":
        named = {cv.train_split, cv.valid_split} | ({cv.test.split} if cv.test and cv.test.split else set())
        splits = _split_column(dataset, [cv.train_split, cv.valid_split, *sorted(named - {cv.train_split, cv.valid_split})], given=True)
        others = ~splits.isin(named)
        if others.any():
            parts[others.to_numpy()] = UNUSED
            left = ", ".join(f"'{s}'" for s in sorted(splits[others].unique()))
            notes.append(f"not used: {plural(int(others.sum()), 'image')} of split(s) {left}, in neither part of "
                         f'cv.scheme = "given" (train_split = "{cv.train_split}", valid_split = "{cv.valid_split}")')
    test = _test_mask(dataset, cv)
    if test is None:
        return parts, notes
    parts[test] = TEST
    notes += _check_both_sides(dataset, parts, cv)
    leaking = _copies_of_test_images(dataset.groups, parts)
    if leaking.any():
        parts[leaking] = UNUSED
        notes.append(f"left out of cross-validation: {plural(int(leaking.sum()), 'image')} outside the test set "
                     "that copy or nearly copy a test image (same group), so the test set stays unseen")
    return parts, notes


def _test_mask(dataset: Dataset, cv: CVConfig) -> np.ndarray | None:
    fraction = cv.test_fraction
    if fraction is not None:
        return take_share(dataset.labels, dataset.groups, fraction, cv.seed, cv.stratified)
    if cv.test is None:
        return None
    if cv.test.split is not None:
        return (_split_column(dataset, [cv.test.split]) == cv.test.split).to_numpy()
    return listed_rows(dataset, Path(cv.test.file))


def _split_column(dataset: Dataset, wanted: list[str], given: bool = False) -> pd.Series:
    """The dataset's split column, after checking it has every split in ``wanted``."""
    table = dataset.table
    if "split" not in table.columns:
        instead = ('cv.scheme = "given" needs them: use cv.scheme = "kfold" or "holdout"' if given
                   else 'use cv.test = { fraction = 0.1 } or { list = "FILE" }')
        raise HarnessError(
            f"dataset '{dataset.name}' gives no split (no 'split' column; a folder dataset has one when its root "
            f"holds train/valid/test folders), so split '{wanted[0]}' cannot be used: {instead}."
        )
    splits = table["split"].astype(str)
    known = sorted(splits.unique())
    for name in wanted:
        if name not in known:
            raise HarnessError(
                f"dataset '{dataset.name}' has no split '{name}'.{did_you_mean(name, known)} Its splits: "
                f"{', '.join(known)} (dataset.splits may have left some out)."
            )
    return splits


#: A list line's trailing numbers (the Conus thesis's lists: "<path> <species> <region>").
_TRAILING_NUMBERS = re.compile(r"(\s+-?\d+)+\s*$")


def listed_rows(dataset: Dataset, file: Path) -> np.ndarray:
    """The rows a list file names: one path a line (blank lines and # comments skipped, trailing
    numbers ignored), matched to the image whose id or path it ends with, so absolute paths from
    another machine match too."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"cannot read the test list {file}: {exc}. Give a UTF-8 text file of paths.") from None
    index = _suffix_index(dataset.table)
    mask = np.zeros(len(dataset.table), dtype=bool)
    missing = []
    for line in lines:
        entry = _TRAILING_NUMBERS.sub("", line).strip()
        if not entry or entry.startswith("#"):
            continue
        row = _match(entry, index)
        if row is None:
            missing.append(entry)
        else:
            mask[row] = True
    if missing:
        shown = "; ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise HarnessError(
            f"{file}: {plural(len(missing), 'line')} name no image of dataset '{dataset.name}' ({shown}). "
            "Each line is a path relative to the dataset's root (or ending with one); fix the list or the data."
        )
    if not mask.any():
        raise HarnessError(f"{file}: the test list names no image; give one path a line.")
    return mask


def _suffix_index(table: pd.DataFrame) -> dict[str, int | None]:
    """Every trailing run of path components of each image's id and path -> its row (None when
    two images share it)."""
    index: dict[str, int | None] = {}
    columns = [table["id"]] + ([table["path"]] if "path" in table.columns else [])
    for column in columns:
        for row, value in enumerate(column.astype(str)):
            parts = PurePosixPath(value.replace("\\", "/")).parts
            for start in range(len(parts)):
                key = "/".join(parts[start:])
                if index.get(key, row) != row:
                    index[key] = None
                else:
                    index[key] = row
    return index


def _match(entry: str, index: dict[str, int | None]) -> int | None:
    """The row whose id or path the entry names, longest match first."""
    parts = PurePosixPath(entry.replace("\\", "/")).parts
    for start in range(len(parts)):
        row = index.get("/".join(parts[start:]), -1)
        if row is None:
            raise HarnessError(f"test list entry '{entry}' matches several images; give more of its path.")
        if row >= 0:
            return row
    return None


def _check_both_sides(dataset: Dataset, parts: np.ndarray, cv: CVConfig) -> list[str]:
    """Every class in cross-validation (else it cannot be learned: an error); a drawn share has every
    class in the test set too (an error), a given split or list may lack some (a note)."""
    labels = dataset.table["label"]
    in_test, in_cv = set(labels[parts == TEST]), set(labels[parts == CV])
    source = cv.test.source if cv.test is not None else f"the test ratio {cv.test_fraction}"
    drawn = cv.test_fraction is not None
    notes = []
    for where, present in (("cross-validation", in_cv), ("the test set", in_test)):
        absent = sorted(set(dataset.classes) - present)
        if not absent:
            continue
        shown = ", ".join(f"'{c}'" for c in absent[:5]) + (" …" if len(absent) > 5 else "")
        if where == "the test set" and not drawn:
            notes.append(f"{source} has no image of {plural(len(absent), 'class', 'classes')} ({shown}): "
                         "the test score says nothing of them")
            continue
        raise HarnessError(
            f"dataset '{dataset.name}': {source} leaves {plural(len(absent), 'class', 'classes')} out of "
            f"{where} ({shown}). Every class needs images on both sides: change cv.test, or leave the "
            "class out (dataset.exclude)."
        )
    return notes


def _copies_of_test_images(groups: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """Rows outside the test set whose group (duplicates, near-duplicates, the dataset's own
    groups) has an image in it."""
    test_groups = set(groups[parts == TEST])
    return (parts != TEST) & np.isin(groups, list(test_groups))
