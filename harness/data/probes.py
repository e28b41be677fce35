"""What one read of a file tells: its content hash and either its image facts and hashes or why it
is not an image (``Probe``), and its pixels at a size in the same pass (``probe_bytes``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.hashing import content_hash, oriented_perceptual_hashes, pixel_hash
from harness.data.images import DRAFT_SIDE, UnreadableImage, draft_scale, load_rgb, open_image, read_bytes, resize

#: Bump when a Probe gains or changes fields: probes live in a table named after it, so a cache
#: written by another version is probed again rather than misread (its pixel arrays stay valid).
PROBE_VERSION = 2


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
        same_scale = draft_scale(image, max(target, DRAFT_SIDE)) == draft_scale(image, DRAFT_SIDE)
        rgb = load_rgb(image, target)
        hash_source = rgb if same_scale else load_rgb(open_image(data), DRAFT_SIDE)
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
