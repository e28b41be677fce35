"""Images read by content, not by name, and decoded once into a uint8 cache.

``probe`` reads a file once: its content hash, whether it decodes, its size and a perceptual hash.
``decode`` turns the same bytes into a (height, width, 3) uint8 array under a resize policy.
``ImageStore`` remembers both on disk (a SQLite index and one ``.npy`` file per content hash, size
and policy), so every fold, trial, candidate and later run reads the cache instead of the JPEG.
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
#: Side of the small image a probe decodes (enough for the perceptual hash, cheap under draft mode).
PROBE_SIDE = 64
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
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    return image


def _format_guess(data: bytes) -> str:
    signatures = {b"\xff\xd8": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}
    for magic, name in signatures.items():
        if data.startswith(magic):
            return name
    return "image"


def _load(image: Image.Image, target: int) -> Image.Image:
    """Decode pixels, at a reduced scale for JPEG (draft mode), within the pixel limit."""
    if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK", "YCbCr"):
        # Draft mode lets libjpeg scale by 1/2..1/8 while decoding: far faster on large photos.
        image.draft(image.mode, (target, target))
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
        return ImageOps.exif_transpose(image)
    except Exception:  # a damaged EXIF block must not cost the image itself
        return image


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
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise UnreadableImage(f"unsupported colour mode {image.mode}: {exc}") from None


def resize(image: Image.Image, size: tuple[int, int], policy: str = "stretch") -> Image.Image:
    """Bring an RGB image to (height, width) by the policy: stretch, crop (centre) or pad."""
    target = (size[1], size[0])
    method = Image.Resampling.BILINEAR
    if policy == "stretch":
        return image.resize(target, method, reducing_gap=3.0)
    if policy == "crop":
        return ImageOps.fit(image, target, method)
    if policy == "pad":
        return ImageOps.pad(image, target, method, color=PAD_COLOUR)
    raise HarnessError(f"unknown resize policy '{policy}'; use one of: {', '.join(RESIZE_POLICIES)}.")


def decode(data: bytes, size: tuple[int, int], policy: str = "stretch") -> np.ndarray:
    """Bytes of any supported format to a uint8 (height, width, 3) array."""
    image = _load(open_image(data), max(size))
    return np.asarray(resize(to_rgb(image), size, policy), dtype=np.uint8)


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
    ycc = np.asarray(image.convert("YCbCr").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float64)
    bits = [_low_frequency_bits(ycc[..., 0], _DCT64, 16)]
    bits += [_low_frequency_bits(ycc[::2, ::2, c], _DCT32, 8) for c in (1, 2)]
    return np.packbits(np.concatenate(bits)).tobytes().hex()


#: Bits in a perceptual hash (255 + 63 + 63); near-duplicate thresholds are shares of this.
HASH_BITS = 381
#: Default near-duplicate threshold: the share of those bits that may differ. Calibrated on the
#: shared datasets: resized or re-encoded copies differ by up to 7 % (sports15), different shells
#: of one species photographed alike by 9 % or more (seashells8).
NEAR_DUPLICATES = 0.08


def hash_distances(hashes: Sequence[str], others: Sequence[str] | None = None) -> np.ndarray:
    """Hamming distances (in bits) between perceptual hashes: (len(hashes), len(others)) ints."""
    a = np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in hashes]).reshape(len(hashes), -1)
    b = a if others is None else np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in others]).reshape(len(others), -1)
    out = np.empty((len(a), len(b)), dtype=np.int32)
    for start in range(0, len(a), 256):  # chunks keep the (rows, n, bytes) xor small
        out[start:start + 256] = np.bitwise_count(a[start:start + 256, None, :] ^ b[None, :, :]).sum(-1)
    return out


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


def probe_bytes(data: bytes) -> Probe:
    """Decode bytes at thumbnail size: proves the whole file decodes and yields the perceptual hash."""
    digest = content_hash(data)
    try:
        image = open_image(data)
        fmt, mode = image.format or "", image.mode
        orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
        width, height = image.size if orientation not in (5, 6, 7, 8) else image.size[::-1]
        small = to_rgb(_load(image, PROBE_SIDE))
        return Probe(digest, None, width, height, fmt, mode, perceptual_hash(small))
    except UnreadableImage as exc:
        return Probe(digest, str(exc))


def probe_file(path: str | Path) -> Probe:
    """``probe_bytes`` on a file; a file that cannot even be read gives a Probe without hash."""
    try:
        return probe_bytes(read_bytes(path))
    except UnreadableImage as exc:
        return Probe(None, str(exc))


# ---------------------------------------------------------------------------------------------
# The decode-once cache


_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, hash TEXT);
CREATE TABLE IF NOT EXISTS probes (hash TEXT PRIMARY KEY, reason TEXT, width INTEGER, height INTEGER,
                                   format TEXT, mode TEXT, phash TEXT);
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

    def probe(self, paths: Sequence[str]) -> list[Probe]:
        """One Probe per path (same order); unchanged files are answered from the index."""
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
        fresh = self._parallel(probe_file, [paths[i] for i in todo], "reading images")
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

    def _known_hashes(self, paths: Sequence[str], keys: Sequence[tuple[int, int] | None]) -> dict[str, str]:
        rows = self._select("SELECT path, size, mtime_ns, hash FROM files WHERE path IN ({})", paths)
        stats = dict(zip(paths, keys))
        return {p: h for p, size, mtime, h in rows if stats.get(p) == (size, mtime)}

    def cached(self, hashes: Iterable[str]) -> dict[str, Probe]:
        """The stored probes of these content hashes (those probed before)."""
        rows = self._select("SELECT * FROM probes WHERE hash IN ({})", list(hashes))
        return {r[0]: Probe(*r) for r in rows}

    def _select(self, sql: str, values: Sequence[str]) -> list[tuple]:
        rows: list[tuple] = []
        for start in range(0, len(values), 500):
            chunk = list(values[start:start + 500])
            rows += self._db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    # -- pixels --------------------------------------------------------------------------------

    def array_path(self, digest: str, size: tuple[int, int], policy: str) -> Path:
        """Where the decoded array of one content hash at one size and policy lives."""
        folder = f"v{DECODER_VERSION}-{policy}-{size[0]}x{size[1]}"
        return self.root / "pixels" / folder / digest[:2] / f"{digest}.npy"

    def pixels(self, paths: Sequence[str], hashes: Sequence[str], size: tuple[int, int],
               policy: str = "stretch") -> np.ndarray:
        """uint8 (n, height, width, 3): cached arrays where present, the rest decoded once and saved."""
        size = (int(size[0]), int(size[1]))
        if policy not in RESIZE_POLICIES:
            raise HarnessError(f"unknown resize policy '{policy}'; use one of: {', '.join(RESIZE_POLICIES)}.")
        out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
        missing: dict[str, list[int]] = {}
        for i, digest in enumerate(hashes):
            target = self.array_path(digest, size, policy)
            try:
                out[i] = np.load(target, allow_pickle=False)
            except (OSError, ValueError):  # absent, or torn by a killed writer: decode again
                missing.setdefault(digest, []).append(i)
        if missing:
            firsts = [rows[0] for rows in missing.values()]
            work = [(paths[i], size, policy) for i in firsts]
            decoded = self._parallel(self._decode_and_save, work, f"decoding {len(work)} images at {size[0]}×{size[1]}")
            for digest, (array, error) in zip(missing, decoded):
                if error is not None:
                    raise HarnessError(
                        f"{paths[missing[digest][0]]}: {error}. It changed or vanished after the dataset was "
                        "loaded; run again."
                    )
                out[missing[digest]] = array
        return out

    def _decode_and_save(self, job: tuple[str, tuple[int, int], str]) -> tuple[np.ndarray | None, str | None]:
        path, size, policy = job
        try:
            data = read_bytes(path)
            array = decode(data, size, policy)
        except UnreadableImage as exc:
            return None, str(exc)
        target = self.array_path(content_hash(data), size, policy)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.stem}.{os.getpid()}-{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, target)  # atomic: a reader sees the whole array or none
        return array, None

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

