"""Hashes of images: of their bytes, of their pixels in any orientation, and perceptual (DCT) hashes.

``content_hash`` is equal for exact copies of a file; ``pixel_hash`` for files of the same pixels,
however rotated or mirrored (the eight ORIENTATIONS); ``perceptual_hash`` and
``oriented_perceptual_hashes`` for images that look alike (resized, recompressed, slightly edited).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

#: Bits in a perceptual hash (255 + 63 + 63); near-duplicate thresholds are shares of this.
HASH_BITS = 381


def content_hash(data: bytes) -> str:
    """A hex digest of the bytes: equal for exact duplicates whatever their names."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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


def inverse_orientation(turns: np.ndarray) -> np.ndarray:
    """For each orientation index in ``turns``, the one that turns it back to "as is"."""
    return _INVERSE[turns]


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
