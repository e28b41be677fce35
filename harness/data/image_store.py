"""The decode-once cache of images: probes and decoded arrays on disk, computed in parallel.

``ImageStore`` remembers what each file's probe told (a SQLite index, by content hash) and the
decoded pixels: one stacked ``.npy`` per exact image list, size and policy, whose rows the index
also finds for any other list of the same images, so every fold, trial, candidate and later run
reads the cache instead of the JPEG. Stacked files are written row by row as images decode (see
``harness.data.stacked``): no image list is ever held in memory whole.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from harness.core.choices import RESIZE_POLICIES
from harness.data.images import DECODER_VERSION, UnreadableImage, decode, read_bytes
from harness.data.probes import PROBE_VERSION, Probe, probe_bytes
from harness.data.stacked import BLOCK_ROWS, StackWriter, open_stack, read_rows
from harness.errors import HarnessError

_PROBES = f"probes_v{PROBE_VERSION}"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, hash TEXT);
CREATE TABLE IF NOT EXISTS {_PROBES} (hash TEXT PRIMARY KEY, reason TEXT, width INTEGER, height INTEGER,
    format TEXT, mode TEXT, phash TEXT, pixel_hash TEXT, pixel_orientation INTEGER, oriented_phashes TEXT);
CREATE TABLE IF NOT EXISTS rows (hash TEXT, folder TEXT, bundle TEXT, row INTEGER, PRIMARY KEY (hash, folder));
CREATE TABLE IF NOT EXISTS probed (bundle TEXT PRIMARY KEY);
"""


def _probe_row(probe: Probe) -> tuple:
    """A Probe as a row of the probes table (its hashes in each orientation joined by commas)."""
    return (probe.hash, probe.reason, probe.width, probe.height, probe.format, probe.mode, probe.phash,
            probe.pixel_hash, probe.pixel_orientation, ",".join(probe.oriented_phashes))


def _probe_from_row(row: tuple) -> Probe:
    *facts, oriented = row
    return Probe(*facts, tuple(oriented.split(",")) if oriented else ())


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class ImageStore:
    """Probes and decoded arrays, cached under ``cache_dir`` and computed in parallel.

    Files are known by content hash; an index (path, size, mtime) → hash spares rereading files
    that did not change. A changed file gets a new hash, so its stale arrays are never used.
    """

    def __init__(self, cache_dir: str | Path, workers: int | None = None, progress: bool = True):
        self.root = Path(cache_dir).expanduser()
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / f"index-v{DECODER_VERSION}.sqlite3", timeout=60)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise HarnessError(
                f"cannot use the image cache at {self.root}: {exc}. Set HARNESS_CACHE to a writable folder."
            ) from None

    def close(self) -> None:
        self._db.close()

    # -- probes --------------------------------------------------------------------------------

    def probe(self, paths: Sequence[str], size: tuple[int, int] | None = None, policy: str = "stretch") -> list[Probe]:
        """One Probe per path (same order); unchanged files are answered from the index.

        With ``size``, files read for the first time are also decoded at that size in the same
        pass, their rows written to a stacked file as they decode, so a study at that size
        decodes each new file only once.
        """
        results: list[Probe | None] = [None] * len(paths)
        keys = [_stat_key(p) for p in paths]
        known = self._known_hashes(paths, keys)
        cached = self.cached({h for h in known.values()})
        todo = []
        for i, (path, key) in enumerate(zip(paths, keys)):
            digest = known.get(path)
            if key is not None and digest is not None and digest in cached:
                results[i] = cached[digest]
            else:
                todo.append(i)
        jobs = [(row, paths[i]) for row, i in enumerate(todo)]
        if size is not None and todo:
            size = (int(size[0]), int(size[1]))
            fresh = self._probe_into_stack(jobs, size, policy)
        else:
            fresh = self._parallel(partial(self._probe_job, None), jobs, "reading images")
        files, probes = [], []
        for i, result in zip(todo, fresh):
            results[i] = result
            if result.hash is not None and keys[i] is not None:
                files.append((paths[i], keys[i][0], keys[i][1], result.hash))
                probes.append(_probe_row(result))
        if files:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", files)
                self._db.executemany(f"INSERT OR REPLACE INTO {_PROBES} VALUES ({', '.join('?' * 10)})", probes)
        return results  # type: ignore[return-value]

    def _probe_into_stack(self, jobs: list[tuple[int, str]], size: tuple[int, int], policy: str) -> list[Probe]:
        """Probe the files of ``jobs`` ((row, path) pairs), writing their pixels at ``size`` as rows
        of one stacked file, which the rows index then finds for any list of these images."""
        staging = self.root / "bundles" / self._folder(size, policy) / "probed.npy"
        with StackWriter(staging, (len(jobs), size[0], size[1], 3)) as writer:
            fresh = self._parallel(partial(self._probe_job, (writer, size, policy)), jobs, "reading images")
            if not any(probe.ok for probe in fresh):
                return fresh
            bundle = writer.commit(self.bundle_path([probe.hash or "" for probe in fresh], size, policy))
        self._index_rows(bundle, size, policy, [(row, probe.hash) for row, probe in enumerate(fresh) if probe.ok])
        with self._db:  # a row source for ``pixels``, in whichever process it runs, kept while indexed
            self._db.execute("INSERT OR REPLACE INTO probed VALUES (?)", (str(bundle.relative_to(self.root)),))
        return fresh

    def _probe_job(self, into: tuple[StackWriter, tuple[int, int], str] | None, job: tuple[int, str]) -> Probe:
        row, path = job
        try:
            data = read_bytes(path)
        except UnreadableImage as exc:
            return Probe(None, str(exc))
        if into is None:
            return probe_bytes(data)[0]
        writer, size, policy = into
        probe, pixels = probe_bytes(data, size, policy)
        if pixels is not None:
            writer.write(row, pixels)
        return probe

    def _known_hashes(self, paths: Sequence[str], keys: Sequence[tuple[int, int] | None]) -> dict[str, str]:
        rows = self._select("SELECT path, size, mtime_ns, hash FROM files WHERE path IN ({})", paths)
        stats = dict(zip(paths, keys))
        return {p: h for p, size, mtime, h in rows if stats.get(p) == (size, mtime)}

    def cached(self, hashes: Iterable[str]) -> dict[str, Probe]:
        """The stored probes of these content hashes (those probed before)."""
        rows = self._select(f"SELECT * FROM {_PROBES} WHERE hash IN ({{}})", list(hashes))
        return {r[0]: _probe_from_row(r) for r in rows}

    def _select(self, sql: str, values: Sequence[str], *fixed: str) -> list[tuple]:
        """Rows of ``sql`` whose ``IN ({})`` is each chunk of ``values``, after the ``fixed`` parameters."""
        rows: list[tuple] = []
        for start in range(0, len(values), 500):
            chunk = list(values[start:start + 500])
            rows += self._db.execute(sql.format(",".join("?" * len(chunk))), [*fixed, *chunk]).fetchall()
        return rows

    # -- pixels --------------------------------------------------------------------------------

    @staticmethod
    def _folder(size: tuple[int, int], policy: str) -> str:
        return f"v{DECODER_VERSION}-{policy}-{size[0]}x{size[1]}"

    def array_path(self, digest: str, size: tuple[int, int], policy: str) -> Path:
        """Where the array of one content hash at one size and policy lives when saved on its own."""
        return self.root / "pixels" / self._folder(size, policy) / f"{digest}.npy"

    def bundle_path(self, hashes: Sequence[str], size: tuple[int, int], policy: str) -> Path:
        """Where the stacked arrays of one exact list of images live (the warm path's single read)."""
        key = hashlib.blake2b("\n".join(hashes).encode(), digest_size=16).hexdigest()
        return self.root / "bundles" / self._folder(size, policy) / f"{key}.npy"

    def pixels(self, paths: Sequence[str], hashes: Sequence[str], size: tuple[int, int],
               policy: str = "stretch") -> np.ndarray:
        """uint8 (n, height, width, 3), memory-mapped read-only: cached rows where present, the
        rest decoded once.

        The rows are written to one stacked file as they are found or decode (never the whole
        array in memory), so a warm start is one file however many images there are; its rows
        are indexed, so another list of the same images (a subset, another order) reads them too.
        """
        size = (int(size[0]), int(size[1]))
        if policy not in RESIZE_POLICIES:
            raise HarnessError(f"unknown resize policy '{policy}'; use one of: {', '.join(RESIZE_POLICIES)}.")
        shape = (len(paths), size[0], size[1], 3)
        bundle = self.bundle_path(hashes, size, policy)
        stacked = open_stack(bundle, shape)  # absent, or torn by a killed writer: None, assemble again
        if stacked is not None:
            return stacked
        folder = self._folder(size, policy)
        query = "SELECT hash, bundle, row FROM rows WHERE folder = ? AND hash IN ({})"
        stored = {h: (b, r) for h, b, r in self._select(query, sorted(set(hashes)), folder)}
        with StackWriter(bundle, shape) as writer:
            missing = self._copy_stored(writer, hashes, stored)
            for digest in list(missing):
                if self._from_file(writer, missing[digest], self.array_path(digest, size, policy)):
                    del missing[digest]
            if missing:
                work = [(paths[rows[0]], size, policy, rows) for rows in missing.values()]
                errors = self._parallel(partial(self._decode, writer), work,
                                        f"decoding {len(work)} images at {size[0]}×{size[1]}")
                for (path, *_), error in zip(work, errors):
                    if error is not None:
                        raise HarnessError(
                            f"{path}: {error}. It changed or vanished after the dataset was loaded; run again."
                        )
            writer.commit()
        self._index_rows(bundle, size, policy, [(i, h) for h, i in {h: i for i, h in enumerate(hashes)}.items()])
        self._drop_unindexed_probes(bundle)
        return open_stack(bundle, shape)

    def _drop_unindexed_probes(self, kept: Path) -> None:
        """Remove the stacked files that probes wrote whose every row now lives in another file (the
        dataset's list differed from the probed one: unreadable files, duplicates, another order),
        so that a first run does not leave its pixels on disk twice. A process that still maps one
        keeps reading it (POSIX); where the system refuses (Windows), it stays for a later run."""
        kept_name = str(kept.relative_to(self.root))
        orphaned = self._db.execute(
            "SELECT bundle FROM probed WHERE bundle != ? AND bundle NOT IN (SELECT bundle FROM rows)", (kept_name,)
        ).fetchall()
        for (name,) in orphaned:
            try:
                (self.root / name).unlink(missing_ok=True)
            except OSError:
                continue
            with self._db:
                self._db.execute("DELETE FROM probed WHERE bundle = ?", (name,))

    def _index_rows(self, bundle: Path, size: tuple[int, int], policy: str, rows: list[tuple[int, str]]) -> None:
        """Record that the stacked file ``bundle`` holds the image of each (row, content hash)."""
        folder, name = self._folder(size, policy), str(bundle.relative_to(self.root))
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)",
                                 [(h, folder, name, row) for row, h in rows])

    def _copy_stored(self, writer: StackWriter, hashes: Sequence[str], stored: dict) -> dict[str, list[int]]:
        """Copy the rows that earlier stacked files hold (``stored``: hash → (file, row)), a block
        at a time; returns the rest: content hash → the rows that need it."""
        by_file: dict[str, list[tuple[int, int]]] = {}
        missing: dict[str, list[int]] = {}
        for i, digest in enumerate(hashes):
            found = stored.get(digest)
            if found is None:
                missing.setdefault(digest, []).append(i)
            else:
                by_file.setdefault(found[0], []).append((i, found[1]))
        for name, pairs in by_file.items():
            source = self._stack_of(self.root / name, writer.shape[1:])
            usable = [(i, row) for i, row in pairs if source is not None and row < len(source)]
            for start in range(0, len(usable), BLOCK_ROWS):
                block = usable[start : start + BLOCK_ROWS]
                writer.write_rows([i for i, _ in block], read_rows(source, [row for _, row in block]))
            for i, _ in pairs if source is None else [p for p in pairs if p[1] >= len(source)]:
                missing.setdefault(hashes[i], []).append(i)  # removed or torn: decode instead
        return missing

    @staticmethod
    def _stack_of(path: Path, row_shape: tuple[int, ...]) -> np.ndarray | None:
        """An earlier stacked file of rows of ``row_shape``, mapped read-only, or None."""
        try:
            stacked = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None
        return stacked if stacked.shape[1:] == tuple(row_shape) and stacked.dtype == np.uint8 else None

    @staticmethod
    def _from_file(writer: StackWriter, rows: list[int], path: Path) -> bool:
        """Rows from an array saved on its own (caches written before stacked files were streamed)."""
        try:
            array = np.load(path, allow_pickle=False)
            for row in rows:
                writer.write(row, array)
            return True
        except (OSError, ValueError, EOFError):  # absent, or torn by a killed writer
            return False

    def _decode(self, writer: StackWriter, job: tuple[str, tuple[int, int], str, list[int]]) -> str | None:
        """Decode one file into its rows of ``writer``; the reason it failed, or None."""
        path, size, policy, rows = job
        try:
            array = decode(read_bytes(path), size, policy)
        except UnreadableImage as exc:
            return str(exc)
        for row in rows:
            writer.write(row, array)
        return None

    # -- parallel map with a progress bar -------------------------------------------------------

    def _parallel(self, fn: Callable, items: Sequence, label: str) -> list:
        if not items:
            return []
        if len(items) == 1 or self.workers == 1:
            return [fn(item) for item in items]
        # Pillow releases the GIL while decoding and resizing, so threads use every core.
        with ThreadPoolExecutor(self.workers) as pool:
            results = pool.map(fn, items)
            console = Console(stderr=True)
            if not self.progress or len(items) < 50 or not console.is_terminal:
                return list(results)
            columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, console=console, transient=True) as bar:
                task = bar.add_task(label, total=len(items))
                collected = []
                for result in results:
                    collected.append(result)
                    bar.advance(task)
                return collected
