"""Stacked uint8 ``.npy`` files of images, written and read a few rows at a time.

``StackWriter`` fills a new file row by row as images decode (a temporary file beside the target,
renamed into place only once complete, so a reader never trusts a torn one) and ``read_rows``
gathers rows of a memory-mapped stack with plain reads: pages of a mapping that a process touches
count towards its resident memory until the mapping goes, so gathering a study's batches through
the mapping would make it look as large as the file; reads leave them in the page cache only.
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path
from typing import Self

import numpy as np

from harness.core.files import sweep_orphans, temporary_beside

#: Rows gathered per read when a whole stack is walked (``blocks``).
BLOCK_ROWS = 1024


class StackWriter:
    """A uint8 array of ``shape`` written row by row into ``target`` (a ``.npy``).

    The rows go to a temporary file beside it (``np.lib.format.open_memmap`` writes its header
    and sizes it); ``commit()`` renames it into place, and leaving the ``with`` block without a
    commit removes it. Rows may be written from several threads at once.
    """

    def __init__(self, target: str | os.PathLike, shape: tuple[int, ...]):
        self.target, self.shape = Path(target), tuple(int(s) for s in shape)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        sweep_orphans(self.target)  # a killed run's half-written stack of this target
        fd, name = temporary_beside(self.target)
        os.close(fd)
        self.temporary = Path(name)
        try:
            header = np.lib.format.open_memmap(name, mode="w+", dtype=np.uint8, shape=self.shape)
            self.offset = header.offset
            del header  # the file is sized (sparse); rows are written with pwrite, not through a mapping
            self._fd: int | None = os.open(name, os.O_WRONLY)
        except BaseException:
            self.temporary.unlink(missing_ok=True)
            raise
        self.row_bytes = math.prod(self.shape[1:])

    def write(self, row: int, array: np.ndarray) -> None:
        """Write one row (an array of the row shape)."""
        array = np.ascontiguousarray(array, dtype=np.uint8)
        if array.shape != self.shape[1:]:
            raise ValueError(f"row of shape {array.shape}, expected {self.shape[1:]}")
        os.pwrite(self._fd, array.data, self.offset + int(row) * self.row_bytes)

    def write_rows(self, rows, arrays: np.ndarray) -> None:
        """Write ``arrays[k]`` at row ``rows[k]`` for each k."""
        for row, array in zip(rows, arrays):
            self.write(row, array)

    def commit(self, target: str | os.PathLike | None = None) -> Path:
        """Rename the complete file into place (``target``, else the one given at the start, in
        the same folder); returns where it went."""
        self._close()
        target = self.target if target is None else Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temporary, target)
        return target

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self._close()
        self.temporary.unlink(missing_ok=True)  # already gone after a commit


def open_stack(path: str | os.PathLike, shape: tuple[int, ...]) -> np.memmap | None:
    """The stacked uint8 file at ``path`` mapped read-only, or None when it is absent, unreadable
    or not of ``shape``."""
    try:
        stacked = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if stacked.shape != tuple(shape) or stacked.dtype != np.uint8:
        return None
    return stacked


def _file_of(array) -> tuple[str, int] | None:
    """(file name, data offset) of a memory map of a whole file's array (``np.load(mmap_mode=...)``),
    else None: a slice or view of one reads by indexing."""
    if not isinstance(array, np.memmap) or not isinstance(array.base, mmap.mmap) or array.filename is None:
        return None
    if not array.flags.c_contiguous:
        return None
    return array.filename, array.offset


def read_rows(array, rows) -> np.ndarray:
    """``array[rows]`` for an integer array of rows: from a memory map (``np.load(mmap_mode="r")``
    of a whole file) with reads in sorted order (runs of neighbours at once), else by indexing."""
    rows = np.asarray(rows, dtype=np.int64)
    where = _file_of(array)
    if where is None or rows.size == 0:
        return np.asarray(array[rows])
    n = len(array)
    if rows.min() < -n or rows.max() >= n:
        raise IndexError(f"row index out of range for {n} rows")
    rows = np.where(rows < 0, rows + n, rows)
    unique, inverse = np.unique(rows, return_inverse=True)
    row_bytes = math.prod(array.shape[1:]) * array.dtype.itemsize
    out = np.empty((len(unique), *array.shape[1:]), array.dtype)
    flat = out.reshape(len(unique), -1).view(np.uint8)
    starts = np.flatnonzero(np.diff(unique, prepend=-2) != 1)
    ends = np.append(starts[1:], len(unique))
    name, offset = where
    fd = os.open(name, os.O_RDONLY)
    try:
        for a, b in zip(starts, ends):
            want = (b - a) * row_bytes
            view = memoryview(flat[a:b].reshape(-1))
            got = os.preadv(fd, [view], offset + int(unique[a]) * row_bytes)
            if got != want:
                raise OSError(f"{name}: short read ({got} of {want} bytes)")
    finally:
        os.close(fd)
    return out[inverse.reshape(-1)]


def blocks(array, block_rows: int = BLOCK_ROWS):
    """``(start, rows)`` for consecutive blocks of ``array``'s rows, read as ``read_rows`` reads."""
    for start in range(0, len(array), block_rows):
        yield start, read_rows(array, np.arange(start, min(start + block_rows, len(array))))
