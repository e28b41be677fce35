"""Images read by content, not by name, and decoded once into a uint8 cache.

``probe_bytes`` decodes a file once: its content hash, whether it decodes, its size, a perceptual
hash and (given a size) its pixels. ``decode`` turns bytes into a (height, width, 3) uint8 array
under a resize policy. ``ImageStore`` remembers both on disk (a SQLite index and one stacked
``.npy`` per exact image list, size and policy, whose rows the index also finds for any other list
of the same images), so every fold, trial, candidate and later run reads the cache instead of the JPEG.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from harness.errors import HarnessError

#: How a decoded image is brought to the study's size: stretch to it (what the original studies
#: did), crop the centre to its aspect ratio, or pad to it with black.
RESIZE_POLICIES = ("stretch", "crop", "pad")
#: Files that operating systems and sync tools leave behind; never images, never reported.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r", "ehthumbs.db"})
SYSTEM_FOLDERS = frozenset({"__macosx", "@eadir", ".trashes"})
#: Images with more pixels than this are refused unless JPEG draft mode can decode them smaller.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Bump when decoding changes what a cached array holds, so old arrays are not reused.
DECODER_VERSION = 1
#: JPEGs are decoded at a reduced scale (draft mode) down to this side at least. The perceptual
#: hash is always taken at this scale, so it does not depend on the size a study asks for, and
#: a study at this size or below decodes each file once for both the hash and its pixels.
DRAFT_SIDE = 256
#: Arrays a probe decodes are kept in memory, up to this many bytes, for the pixels() call that
#: follows it and stacks them into one file; beyond that they are saved one file per image.
FRESH_BYTES = 1 << 30
#: Transparent pixels are shown on white, as image viewers and web pages show them.
ALPHA_BACKGROUND = (255, 255, 255)
PAD_COLOUR = (0, 0, 0)

# We enforce our own limit (MAX_PIXELS, JPEG draft mode); Pillow's warning would only be noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class UnreadableImage(Exception):
    """A file that is not a decodable image; the message is the reason shown in reports."""


def is_ignored(name: str) -> bool:
    """Hidden and system files or folders (.DS_Store, ._x, Thumbs.db, __MACOSX) that are never images."""
    lower = name.lower()
    return name.startswith(".") or lower in SYSTEM_FILES or lower in SYSTEM_FOLDERS


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, or UnreadableImage naming a broken link, an empty file or a folder."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise UnreadableImage(f"broken link to {os.readlink(path)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableImage("file not found") from None
    except IsADirectoryError:
        raise UnreadableImage("a folder, not a file") from None
    except OSError as exc:
        raise UnreadableImage(f"cannot read: {exc.strerror or exc}") from None
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    return data


def content_hash(data: bytes) -> str:
    """A hex digest of the bytes: equal for exact duplicates whatever their names."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _not_an_image(data: bytes) -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "not an image: an HTML page saved under an image name"
    if head.startswith((b"<?xml", b"<svg")):
        return "not a raster image: XML/SVG"
    try:
        head.decode("utf-8")
        return "not an image: a text file"
    except UnicodeDecodeError:
        return "not an image: unknown format"


def open_image(data: bytes) -> Image.Image:
    """Open bytes as an image, identified by content (first frame of an animation)."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise UnreadableImage(f"too large: {exc}") from None
    except UnidentifiedImageError:
        raise UnreadableImage(_not_an_image(data)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(f"corrupt {_format_guess(data)}: {exc}") from None
    return image  # an animation opens at its first frame


def _format_guess(data: bytes) -> str:
    signatures = {b"\xff\xd8": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
    for magic, name in signatures.items():
        if data.startswith(magic):
            return name
    return "image"


def _draftable(image: Image.Image) -> bool:
    return image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK", "YCbCr")


def _draft_scale(image: Image.Image, target: int) -> int:
    """The reduction (1, 2, 4 or 8) JPEG draft mode picks for a target side (Pillow's rule)."""
    if not _draftable(image):
        return 1
    fits = min(image.width // target, image.height // target)
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def _load(image: Image.Image, target: int) -> Image.Image:
    """Decode to RGB, at a reduced scale for JPEG (draft mode), within the pixel limit, EXIF-oriented."""
    if _draftable(image):
        # libjpeg scales by 1/2..1/8 while decoding: far faster on large photos
        image.draft(image.mode, (max(target, DRAFT_SIDE),) * 2)
    if image.width * image.height > MAX_PIXELS:
        raise UnreadableImage(
            f"too large: {image.width}×{image.height} pixels, over the limit of {MAX_PIXELS:,} "
            "(harness.images.MAX_PIXELS); downscale it"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(f"corrupt or truncated {image.format or 'image'}: {exc}") from None
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a damaged EXIF block must not cost the image itself
        pass
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode: 16-bit and 32-bit grey scaled down, alpha and palette transparency on white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.size else 0
        scale = 255.0 if top <= 255 else (65535.0 if top <= 65535 else top)
        image = Image.fromarray(np.clip(values * (255.0 / scale), 0, 255).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        background.alpha_composite(rgba)
        image = background
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise UnreadableImage(f"unsupported colour mode {image.mode}: {exc}") from None


def resize(image: Image.Image, size: tuple[int, int], policy: str = "stretch") -> Image.Image:
    """Bring an RGB image to (height, width) by the policy: stretch, crop (centre) or pad."""
    target = (size[1], size[0])
    method = Image.Resampling.BILINEAR
    if policy == "stretch":
        return image.resize(target, method, reducing_gap=2.0)  # box-reduce first: faster, as sharp
    if policy == "crop":
        return ImageOps.fit(image, target, method)
    if policy == "pad":
        return ImageOps.pad(image, target, method, color=PAD_COLOUR)
    raise HarnessError(f"unknown resize policy '{policy}'; use one of: {', '.join(RESIZE_POLICIES)}.")


def decode(data: bytes, size: tuple[int, int], policy: str = "stretch") -> np.ndarray:
    """Bytes of any supported format to a uint8 (height, width, 3) array."""
    return np.asarray(resize(_load(open_image(data), max(size)), size, policy), dtype=np.uint8)


def decode_file(path: str | Path, size: tuple[int, int], policy: str = "stretch") -> np.ndarray:
    """Decode one file (see ``decode``); raises UnreadableImage with the reason."""
    return decode(read_bytes(path), size, policy)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))


_DCT64, _DCT32 = _dct_matrix(64), _dct_matrix(32)


def _low_frequency_bits(channel: np.ndarray, dct: np.ndarray, keep: int) -> np.ndarray:
    coefficients = (dct @ channel @ dct.T)[:keep, :keep].ravel()[1:]  # without the mean (DC) term
    return coefficients > np.median(coefficients)


def perceptual_hash(image: Image.Image) -> str:
    """A DCT hash (pHash) of an RGB image as hex: 255 bits of luma, 63 of each chroma channel.

    Each bit says whether one low-frequency coefficient is above the median, so resizing,
    recompression and small edits keep most bits. Colour bits tell apart shells of one shape on
    the same background, which grey-only hashes (dHash, aHash) call duplicates.
    """
    small = image.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
    ycc = np.asarray(small.convert("YCbCr"), dtype=np.float64)
    bits = [_low_frequency_bits(ycc[..., 0], _DCT64, 16)]
    bits += [_low_frequency_bits(ycc[::2, ::2, c], _DCT32, 8) for c in (1, 2)]
    return np.packbits(np.concatenate(bits)).tobytes().hex()


#: Bits in a perceptual hash (255 + 63 + 63); near-duplicate thresholds are shares of this.
HASH_BITS = 381
#: Default near-duplicate threshold: the share of those bits that may differ. Calibrated on the
#: shared datasets: resized or re-encoded copies differ by up to 7 % (sports15), different shells
#: of one species photographed alike by 9 % or more (seashells8).
NEAR_DUPLICATES = 0.08


def _hash_words(hashes: Sequence[str]) -> np.ndarray:
    """Perceptual hashes as rows of uint64 words (zero-padded), for fast XOR and bit counts."""
    raw = [bytes.fromhex(h) for h in hashes]
    width = -(-max((len(r) for r in raw), default=8) // 8) * 8
    return np.frombuffer(b"".join(r.ljust(width, b"\0") for r in raw), dtype=np.uint64).reshape(len(raw), -1)


def hash_distances(hashes: Sequence[str]) -> np.ndarray:
    """Hamming distances (in bits) between every two perceptual hashes: a small (n, n) matrix."""
    words = _hash_words(hashes)
    return np.bitwise_count(words[:, None, :] ^ words[None, :, :]).sum(-1, dtype=np.int32)


def near_pairs(hashes: Sequence[str], max_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) of perceptual hashes at most ``max_bits`` apart, and their distances.

    Computed in blocks of rows, so memory stays small even for tens of thousands of images.
    """
    words = _hash_words(hashes)
    n = len(words)
    step = max(1, (1 << 24) // max(1, n * words.shape[1]))
    found_i, found_j, found_d = [], [], []
    for start in range(0, n, step):
        block = np.bitwise_count(words[start:start + step, None, :] ^ words[None, :, :]).sum(-1, dtype=np.int32)
        i, j = np.nonzero(block <= max_bits)
        keep = j > i + start
        found_i.append(i[keep] + start)
        found_j.append(j[keep])
        found_d.append(block[i[keep], j[keep]])
    if not found_i:
        return np.empty(0, int), np.empty(0, int), np.empty(0, np.int32)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


@dataclass(frozen=True)
class Probe:
    """What one read of a file tells: its content hash and either its image facts or why it failed."""

    hash: str | None
    reason: str | None = None
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    phash: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def probe_bytes(data: bytes, size: tuple[int, int] | None = None, policy: str = "stretch") -> tuple[Probe, np.ndarray | None]:
    """Decode bytes once: the Probe (proof that the whole file decodes, and its perceptual hash)
    and, when ``size`` is given, the pixels at that size as ``decode`` would give them."""
    digest = content_hash(data)
    try:
        image = open_image(data)
        fmt, mode = image.format or "", image.mode
        orientation = image.getexif().get(0x0112, 1)
        width, height = image.size if orientation not in (5, 6, 7, 8) else image.size[::-1]
        target = max(size) if size else DRAFT_SIDE
        same_scale = _draft_scale(image, max(target, DRAFT_SIDE)) == _draft_scale(image, DRAFT_SIDE)
        rgb = _load(image, target)
        hash_source = rgb if same_scale else _load(open_image(data), DRAFT_SIDE)
        pixels = np.asarray(resize(rgb, size, policy), dtype=np.uint8) if size else None
        return Probe(digest, None, width, height, fmt, mode, perceptual_hash(hash_source)), pixels
    except UnreadableImage as exc:
        return Probe(digest, str(exc)), None


def probe_file(path: str | Path) -> Probe:
    """Probe one file; a file that cannot even be read gives a Probe without hash."""
    try:
        return probe_bytes(read_bytes(path))[0]
    except UnreadableImage as exc:
        return Probe(None, str(exc))


# ---------------------------------------------------------------------------------------------
# The decode-once cache


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, hash TEXT);
CREATE TABLE IF NOT EXISTS probes (hash TEXT PRIMARY KEY, reason TEXT, width INTEGER, height INTEGER,
                                   format TEXT, mode TEXT, phash TEXT);
CREATE TABLE IF NOT EXISTS rows (hash TEXT, folder TEXT, bundle TEXT, row INTEGER, PRIMARY KEY (hash, folder));
"""


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
                probes.append((result.hash, result.reason, result.width, result.height, result.format,
                               result.mode, result.phash))
        if files:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", files)
                self._db.executemany("INSERT OR REPLACE INTO probes VALUES (?, ?, ?, ?, ?, ?, ?)", probes)
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
        rows = self._select("SELECT * FROM probes WHERE hash IN ({})", list(hashes))
        return {r[0]: Probe(*r) for r in rows}

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
        tmp = target.with_name(f"{target.stem}.{os.getpid()}-{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, target)  # atomic: a reader (another worker process too) sees the whole file or none

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

