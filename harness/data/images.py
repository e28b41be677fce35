"""Images read by content, not by name, and decoded once into a uint8 cache.

``probe_bytes`` decodes a file once: its content hash, whether it decodes, its size, hashes of its
pixels and perceptual hashes that see through rotations and mirror images, and (given a size) its
pixels. ``decode`` turns bytes into a (height, width, 3) uint8 array under a resize policy.
``ImageStore`` remembers both on disk (a SQLite index and one stacked ``.npy`` per exact image list,
size and policy, whose rows the index also finds for any other list of the same images), so every
fold, trial, candidate and later run reads the cache instead of the JPEG.
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
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from harness.core.choices import NEAR_DUPLICATES, RESIZE_POLICIES
from harness.errors import HarnessError
from harness.toolkit.files import SYSTEM_FILES, SYSTEM_FOLDERS, is_ignored  # noqa: F401 (public in the toolkit)

#: Images with more pixels than this are refused unless JPEG draft mode can decode them smaller.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Bump when decoding changes what a cached array holds, so old arrays are not reused.
DECODER_VERSION = 1
#: Bump when a Probe gains or changes fields: probes live in a table named after it, so a cache
#: written by another version is probed again rather than misread (its pixel arrays stay valid).
PROBE_VERSION = 2
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
            "(harness.data.images.MAX_PIXELS); downscale it"
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


#: The eight ways a copy of a picture may be turned (the dihedral group D4): a name for reports
#: and the turn as a numpy view of an (height, width, ...) array. Index 0 is the picture as is.
ORIENTATIONS: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("as is", lambda a: a),
    ("rotated 90° clockwise", lambda a: np.rot90(a, -1)),
    ("rotated 180°", lambda a: a[::-1, ::-1]),
    ("rotated 90° counter-clockwise", lambda a: np.rot90(a, 1)),
    ("mirrored left-right", lambda a: a[:, ::-1]),
    ("mirrored top-bottom", lambda a: a[::-1]),
    ("mirrored across the diagonal", lambda a: a.swapaxes(0, 1)),
    ("mirrored across the other diagonal", lambda a: a[::-1, ::-1].swapaxes(0, 1)),
)


def _orientation_tables() -> tuple[np.ndarray, np.ndarray]:
    """``then[a, b]``, the one orientation that turning by a and then by b amounts to, and ``inverse[a]``."""
    sample = np.arange(6).reshape(2, 3)  # no symmetry: each orientation gives another array
    turned = [turn(sample) for _, turn in ORIENTATIONS]

    def which(array: np.ndarray) -> int:
        return next(k for k, other in enumerate(turned) if np.array_equal(other, array))

    then = np.array([[which(turn(first)) for _, turn in ORIENTATIONS] for first in turned])
    return then, np.argmin(then, axis=1)  # then[a, inverse[a]] == 0, "as is"


_THEN, _INVERSE = _orientation_tables()


def relative_orientation(canonical_a: int, canonical_b: int) -> int:
    """How image b is image a turned (an index into ORIENTATIONS), for two images of one pixel hash
    whose pixels the orientations ``canonical_a`` and ``canonical_b`` turn into the same array."""
    return int(_THEN[canonical_a, _INVERSE[canonical_b]])


def pixel_hash(pixels: np.ndarray) -> tuple[str, int]:
    """A hex digest of the pixels that all eight orientations of them share, and the orientation
    (index into ORIENTATIONS) that turns these pixels into the canonical array it digests.

    The canonical array is the least of the eight: shape first, then bytes row by row. Rows are
    compared, in doubling slices, only while orientations tie, so it costs about one digest.
    """
    views = [turn(pixels) for _, turn in ORIENTATIONS]
    smallest = min(view.shape for view in views)
    left = [k for k, view in enumerate(views) if view.shape == smallest]
    start, step = 0, 1
    while len(left) > 1 and start < smallest[0]:
        rows = {k: views[k][start:start + step].tobytes() for k in left}
        least = min(rows.values())
        left = [k for k in left if rows[k] == least]
        start, step = start + step, step * 2
    canonical = views[left[0]]  # a tie to the end means equal arrays: any will do
    digest = hashlib.blake2b(repr(canonical.shape).encode(), digest_size=16)
    rows = max(1, (1 << 22) // max(1, canonical[0].nbytes))  # a turned view is copied a few MB at a time
    for start in range(0, len(canonical), rows):
        digest.update(np.ascontiguousarray(canonical[start:start + rows]).data)
    return digest.hexdigest(), left[0]


def _dct_matrix(n: int, keep: int) -> np.ndarray:
    """The first ``keep`` rows (lowest frequencies) of the n-point DCT-II matrix."""
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:keep, None] / (2 * n))


_DCT64, _DCT32 = _dct_matrix(64, 16), _dct_matrix(32, 8)


def _low_frequency_bits(channels: np.ndarray, dct: np.ndarray) -> np.ndarray:
    """Per channel of a stack (n, side, side): whether each low-frequency coefficient is above their median."""
    coefficients = (dct @ channels @ dct.T).reshape(len(channels), -1)[:, 1:]  # without the mean (DC) term
    return coefficients > np.median(coefficients, axis=1, keepdims=True)


def _thumbnail(image: Image.Image) -> np.ndarray:
    small = image.resize((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small.convert("YCbCr"), dtype=np.float64)


def _dct_hashes(thumbnails: Sequence[np.ndarray]) -> list[str]:
    """The hex hash of each 64×64 YCbCr thumbnail, all in one pass: luma whole, chroma at half size."""
    luma = np.stack([t[..., 0] for t in thumbnails])
    bits = [_low_frequency_bits(luma, _DCT64)]
    bits += [_low_frequency_bits(np.stack([t[::2, ::2, c] for t in thumbnails]), _DCT32) for c in (1, 2)]
    return [row.tobytes().hex() for row in np.packbits(np.concatenate(bits, axis=1), axis=1)]


def perceptual_hash(image: Image.Image) -> str:
    """A DCT hash (pHash) of an RGB image as hex: 255 bits of luma, 63 of each chroma channel.

    Each bit says whether one low-frequency coefficient is above the median, so resizing,
    recompression and small edits keep most bits. Colour bits tell apart shells of one shape on
    the same background, which grey-only hashes (dHash, aHash) call duplicates.
    """
    return _dct_hashes([_thumbnail(image)])[0]


def oriented_perceptual_hashes(image: Image.Image) -> tuple[str, ...]:
    """``perceptual_hash`` of the image turned each way of ORIENTATIONS (the first upright), from one thumbnail."""
    thumbnail = _thumbnail(image)
    return tuple(_dct_hashes([turn(thumbnail) for _, turn in ORIENTATIONS]))


#: Bits in a perceptual hash (255 + 63 + 63); near-duplicate thresholds are shares of this.
HASH_BITS = 381
#: Words (of 64 bits) of two hashes compared for every pair, at least: only the pairs still within
#: the threshold are compared further (random pairs differ by ~64 of the first 128 bits) ...
_PREFILTER_WORDS = 2
#: ... one by one (the next word for every pair) while more than 1 pair in this many is left.
_SPARSE = 16
#: Pairs compared per block (bounds the scratch arrays to a few megabytes, which stay in cache).
_BLOCK = 1 << 18


def _hash_words(hashes: Sequence[str]) -> np.ndarray:
    """Perceptual hashes as rows of uint64 words (zero-padded), for fast XOR and bit counts."""
    raw = [bytes.fromhex(h) for h in hashes]
    width = -(-max((len(r) for r in raw), default=8) // 8) * 8
    return np.frombuffer(b"".join(r.ljust(width, b"\0") for r in raw), dtype=np.uint64).reshape(len(raw), -1)


def hash_distances(hashes: Sequence[str]) -> np.ndarray:
    """Hamming distances (in bits) between every two perceptual hashes: a small (n, n) matrix."""
    words = _hash_words(hashes)
    return np.bitwise_count(words[:, None, :] ^ words[None, :, :]).sum(-1, dtype=np.int32)


class NearPairs(NamedTuple):
    """Pairs of images (first < second, by position), their distance in bits, and how the second
    is the first turned (an index into ORIENTATIONS)."""

    first: np.ndarray
    second: np.ndarray
    bits: np.ndarray
    orientation: np.ndarray


def near_pairs(oriented: Sequence[Sequence[str]], max_bits: int) -> NearPairs:
    """Pairs of images whose perceptual hashes are at most ``max_bits`` apart in some orientation.

    ``oriented[i]`` lists image i's hashes in the ORIENTATIONS order (``oriented_perceptual_hashes``;
    only the first, upright, compares as is). The distance of two images is the least Hamming
    distance between the upright hash of either and any hash of the other. Computed in blocks of
    rows, the leading words first, so memory stays small for tens of thousands of images.
    """
    n = len(oriented)
    turns = min((len(row) for row in oriented), default=1)
    if n < 2:
        return NearPairs(*(np.empty(0, int),) * 3, np.empty(0, int))
    every = _hash_words([h for row in oriented for h in row[:turns]])  # image i turned k: row i * turns + k
    upright, words = every[::turns], every.shape[1]
    columns = [np.ascontiguousarray(every[:, w]) for w in range(words)]
    step = max(1, _BLOCK // len(every))
    scratch = np.empty((step, len(every)), np.uint64)
    counts, totals = np.empty((step, len(every)), np.uint8), np.empty((step, len(every)), np.uint16)
    found = []
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        size = rows.stop - start
        total = totals[:size]
        total.fill(0)
        for w in range(words):
            np.bitwise_xor(upright[rows, w, None], columns[w][None, :], out=scratch[:size])
            np.bitwise_count(scratch[:size], out=counts[:size])
            total += counts[:size]
            close = total <= max_bits
            if w + 1 >= _PREFILTER_WORDS and np.count_nonzero(close) * _SPARSE < close.size:
                break
        i, turned = np.nonzero(close)
        bits = total[i, turned].astype(np.int32)
        i += start
        other = turned // turns
        keep = other != i
        i, turned, other, bits = i[keep], turned[keep], other[keep], bits[keep]
        if w + 1 < words:  # the words left, for the pairs left
            bits += np.bitwise_count(upright[i, w + 1:] ^ every[turned, w + 1:]).sum(-1, dtype=np.int32)
            keep = bits <= max_bits
            i, turned, other, bits = i[keep], turned[keep], other[keep], bits[keep]
        found.append((i, other, bits, turned % turns))
    i, other, bits, turn = (np.concatenate(column) for column in zip(*found))
    # i upright matched ``other`` turned: ``other`` is i turned back, i is ``other`` turned
    turn = np.where(i < other, _INVERSE[turn], turn)
    first, second = np.minimum(i, other), np.maximum(i, other)
    order = np.lexsort((turn, bits, second, first))  # per pair, the least distance (then "as is") first
    first, second, bits, turn = first[order], second[order], bits[order], turn[order]
    new = np.ones(len(first), bool)
    new[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return NearPairs(first[new], second[new], bits[new], turn[new])


@dataclass(frozen=True)
class Probe:
    """What one read of a file tells: its content hash and either its image facts or why it failed.

    ``pixel_hash`` is equal for files of the same pixels in any orientation (``pixel_hash()``, with
    ``pixel_orientation``, the turn it took); ``oriented_phashes`` are the perceptual hashes of the
    image in each of the ORIENTATIONS, the first (upright) being ``phash``.
    """

    hash: str | None
    reason: str | None = None
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    phash: str = ""
    pixel_hash: str = ""
    pixel_orientation: int = 0
    oriented_phashes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason is None


def probe_bytes(data: bytes, size: tuple[int, int] | None = None, policy: str = "stretch") -> tuple[Probe, np.ndarray | None]:
    """Decode bytes once: the Probe (proof that the whole file decodes, and its hashes) and, when
    ``size`` is given, the pixels at that size as ``decode`` would give them.

    The hashes are taken of the image decoded at DRAFT_SIDE, whatever the size, so that they are
    the same for every study; for large JPEGs that is a reduced scale (draft mode).
    """
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
        oriented = oriented_perceptual_hashes(hash_source)
        pixel_digest, pixel_orientation = pixel_hash(np.asarray(hash_source))
        probe = Probe(digest, None, width, height, fmt, mode, oriented[0], pixel_digest, pixel_orientation, oriented)
        return probe, pixels
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

