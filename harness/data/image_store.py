"""The decode-once cache of images: probes and decoded arrays on disk, computed in parallel.

``ImageStore`` remembers what each file's probe told (a SQLite index, by content hash) and the
decoded pixels: one stacked ``.npy`` per exact image list, size and policy, whose rows the index
also finds for any other list of the same images, so every fold, trial, candidate and later run
reads the cache instead of the JPEG.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from harness.core.choices import RESIZE_POLICIES
from harness.core.files import atomic_writer
from harness.data.images import DECODER_VERSION, UnreadableImage, decode, read_bytes
from harness.data.probes import PROBE_VERSION, Probe, probe_bytes
from harness.errors import HarnessError

#: Arrays a probe decodes are kept in memory, up to this many bytes, for the pixels() call that
#: follows it and stacks them into one file; beyond that they are saved one file per image.
FRESH_BYTES = 1 << 30


_PROBES = f"probes_v{PROBE_VERSION}"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, hash TEXT);
CREATE TABLE IF NOT EXISTS {_PROBES} (hash TEXT PRIMARY KEY, reason TEXT, width INTEGER, height INTEGER,
    format TEXT, mode TEXT, phash TEXT, pixel_hash TEXT, pixel_orientation INTEGER, oriented_phashes TEXT);
CREATE TABLE IF NOT EXISTS rows (hash TEXT, folder TEXT, bundle TEXT, row INTEGER, PRIMARY KEY (hash, folder));
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
        self._folders: set[Path] = set()
        self._fresh: dict[tuple, np.ndarray] = {}  # arrays decoded by probe(), handed to pixels()
        self._fresh_bytes = 0
        self._lock = threading.Lock()
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
        pass and their arrays cached, so a study at that size decodes each new file only once.
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
        size = (int(size[0]), int(size[1])) if size else None
        jobs = [(paths[i], size, policy) for i in todo]
        fresh = self._parallel(self._probe_job, jobs, "reading images")
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

    def _probe_job(self, job: tuple[str, tuple[int, int] | None, str]) -> Probe:
        path, size, policy = job
        try:
            data = read_bytes(path)
        except UnreadableImage as exc:
            return Probe(None, str(exc))
        probe, pixels = probe_bytes(data, size, policy)
        if pixels is not None and size is not None:
            self._keep_fresh(probe.hash, size, policy, pixels)
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
        """uint8 (n, height, width, 3): cached arrays where present, the rest decoded once.

        The result is saved as one stacked file, memory-mapped (read-only) on the next call with
        the same images, so a warm start is one file however many images there are; its rows are
        indexed, so another list of the same images (a subset, another order) reads them too.
        """
        size = (int(size[0]), int(size[1]))
        if policy not in RESIZE_POLICIES:
            raise HarnessError(f"unknown resize policy '{policy}'; use one of: {', '.join(RESIZE_POLICIES)}.")
        shape = (len(paths), size[0], size[1], 3)
        bundle = self.bundle_path(hashes, size, policy)
        try:
            stacked = np.load(bundle, mmap_mode="r", allow_pickle=False)
            if stacked.shape == shape and stacked.dtype == np.uint8:
                return stacked
        except (OSError, ValueError):  # absent, or torn by a killed writer: assemble again
            pass
        out = np.empty(shape, dtype=np.uint8)
        missing: dict[str, list[int]] = {}
        folder = self._folder(size, policy)
        query = "SELECT hash, bundle, row FROM rows WHERE folder = ? AND hash IN ({})"
        stored = {h: (b, r) for h, b, r in self._select(query, sorted(set(hashes)), folder)}
        bundles: dict[str, np.ndarray | None] = {}
        for i, digest in enumerate(hashes):
            fresh = self._fresh.get((digest, size, policy))
            if fresh is not None:
                out[i] = fresh
            elif not self._from_bundle(out, i, stored.get(digest), bundles, shape) and not self._from_file(
                out, i, self.array_path(digest, size, policy)
            ):
                missing.setdefault(digest, []).append(i)
        if missing:
            firsts = [rows[0] for rows in missing.values()]
            work = [(paths[i], size, policy) for i in firsts]
            decoded = self._parallel(self._decode, work, f"decoding {len(work)} images at {size[0]}×{size[1]}")
            for digest, (array, error) in zip(missing, decoded):
                if error is not None:
                    raise HarnessError(
                        f"{paths[missing[digest][0]]}: {error}. It changed or vanished after the dataset was "
                        "loaded; run again."
                    )
                out[missing[digest]] = array
        self._save(bundle, out)
        name = str(bundle.relative_to(self.root))
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)",
                [(h, folder, name, i) for h, i in {h: i for i, h in enumerate(hashes)}.items()],
            )
        self._fresh.clear()
        self._fresh_bytes = 0
        return out

    def _from_bundle(self, out: np.ndarray, i: int, found: tuple[str, int] | None, bundles: dict, shape) -> bool:
        """Copy row ``found`` = (bundle, row) of an earlier stacked file into ``out[i]``, if it is there."""
        if found is None:
            return False
        name, row = found
        if name not in bundles:
            try:
                bundles[name] = np.load(self.root / name, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):  # removed or torn: decode instead
                bundles[name] = None
        stacked = bundles[name]
        if stacked is None or stacked.shape[1:] != shape[1:] or row >= len(stacked):
            return False
        out[i] = stacked[row]
        return True

    @staticmethod
    def _from_file(out: np.ndarray, i: int, path: Path) -> bool:
        try:
            out[i] = np.load(path, allow_pickle=False)
            return True
        except (OSError, ValueError, EOFError):  # absent, or torn by a killed writer
            return False

    def _decode(self, job: tuple[str, tuple[int, int], str]) -> tuple[np.ndarray | None, str | None]:
        path, size, policy = job
        try:
            return decode(read_bytes(path), size, policy), None
        except UnreadableImage as exc:
            return None, str(exc)

    def _keep_fresh(self, digest: str, size: tuple[int, int], policy: str, array: np.ndarray) -> None:
        """Keep a probe's array in memory for the next ``pixels`` (up to FRESH_BYTES), else save it."""
        with self._lock:
            if self._fresh_bytes + array.nbytes <= FRESH_BYTES:
                self._fresh[(digest, size, policy)] = array
                self._fresh_bytes += array.nbytes
                return
        target = self.array_path(digest, size, policy)
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        self._save(target, array, mkdir=False)

    @staticmethod
    def _save(target: Path, array: np.ndarray, mkdir: bool = True) -> None:
        if mkdir:
            target.parent.mkdir(parents=True, exist_ok=True)
        # atomic: a reader (another worker process too) sees the whole file or none
        with atomic_writer(target, fsync=False) as fh:
            np.save(fh, array, allow_pickle=False)

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
