"""Images read by content, not by name: bytes of any supported format decoded to uint8 RGB.

``decode`` turns bytes into a (height, width, 3) uint8 array under a resize policy; a file that is
not a decodable image raises ``UnreadableImage`` with the reason reports show. The exported model's
``predict`` decodes through this module, so it imports nothing of training (no scikit-learn, no
Optuna). Hashes of images are in ``harness.data.hashing``, the search for near duplicates in
``harness.data.near_pairs``, what one read of a file tells in ``harness.data.probes`` and the
decode-once cache in ``harness.data.image_store``.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from harness.core.choices import RESIZE_POLICIES
from harness.core.compat import forwarding
from harness.errors import HarnessError
from harness.toolkit.files import SYSTEM_FILES, SYSTEM_FOLDERS, is_ignored  # noqa: F401 (public in the toolkit)

#: Images with more pixels than this are refused unless JPEG draft mode can decode them smaller.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Bump when decoding changes what a cached array holds, so old arrays are not reused.
DECODER_VERSION = 1
#: JPEGs are decoded at a reduced scale (draft mode) down to this side at least. The perceptual
#: hash is always taken at this scale, so it does not depend on the size a study asks for, and
#: a study at this size or below decodes each file once for both the hash and its pixels.
DRAFT_SIDE = 256
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


def draft_scale(image: Image.Image, target: int) -> int:
    """The reduction (1, 2, 4 or 8) JPEG draft mode picks for a target side (Pillow's rule)."""
    if not _draftable(image):
        return 1
    fits = min(image.width // target, image.height // target)
    return next((s for s in (8, 4, 2) if fits >= s), 1)


def load_rgb(image: Image.Image, target: int) -> Image.Image:
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
    return np.asarray(resize(load_rgb(open_image(data), max(size)), size, policy), dtype=np.uint8)


def decode_file(path: str | Path, size: tuple[int, int], policy: str = "stretch") -> np.ndarray:
    """Decode one file (see ``decode``); raises UnreadableImage with the reason."""
    return decode(read_bytes(path), size, policy)


#: Names this module held until it was split by job, and where they live now.
_MOVED = {
    **dict.fromkeys(("content_hash", "ORIENTATIONS", "relative_orientation", "pixel_hash", "perceptual_hash",
                     "oriented_perceptual_hashes", "HASH_BITS"), "harness.data.hashing"),
    **dict.fromkeys(("hash_distances", "NearPairs", "near_pairs"), "harness.data.near_pairs"),
    **dict.fromkeys(("Probe", "probe_bytes", "probe_file", "PROBE_VERSION"), "harness.data.probes"),
    **dict.fromkeys(("ImageStore",), "harness.data.image_store"),
}

__getattr__ = forwarding(__name__, _MOVED)
