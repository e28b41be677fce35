"""Build a Conus tree at the real layout's scale with generated pixels (docs/findings.md, finding 6).

The museum's photos are not public; the thesis's file list is (``conus_layout/manifest.csv``: 1,958
paths, 83 species, each in one region). This writes one generated image per listed path, so the
harness's ``conus`` dataset reads the real folder layout, names, counts and regions. Each species is
a shape in a colour of its own; every image draws the colour with jitter, moves the shape and adds
noise, so species that are close in colour are confused by an image-only model.

``--look-alikes anywhere``: species colours are spread over the whole colour wheel, so a species'
look-alikes are as likely to live in another region as in its own. ``--look-alikes region``: each
region's species share a band of hues, so look-alikes live in the same region. Real shells sit
somewhere between; which end decides how much the region can add.

    python findings/conus_synthetic.py /tmp/conus-anywhere --look-alikes anywhere
"""

from __future__ import annotations

import argparse
import colorsys
import csv
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("ellipse", "cone", "spindle")  # cone snails: a few outlines, colour does most of the telling


def default_manifest() -> Path:
    root = Path(os.environ.get("HARNESS_TEST_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
    return root / "conus_layout" / "manifest.csv"


def species_colours(rows: list[dict], look_alikes: str, seed: int) -> dict[str, tuple[str, float]]:
    """species → (shape, hue in [0, 1))."""
    rng = np.random.default_rng(seed)
    species = sorted({r["species"] for r in rows})
    region_of = {r["species"]: r["region"] for r in rows}
    regions = sorted(set(region_of.values()))
    centre = {region: i / len(regions) for i, region in enumerate(regions)}
    out = {}
    for name in species:
        if look_alikes == "region":
            hue = (centre[region_of[name]] + rng.uniform(-0.5, 0.5) / len(regions)) % 1.0
        else:
            hue = rng.uniform(0.0, 1.0)
        out[name] = (SHAPES[int(rng.integers(len(SHAPES)))], hue)
    return out


def draw(shape: str, hue: float, size: int, rng: np.random.Generator, jitter: float, noise: float) -> Image.Image:
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
    h = (hue + rng.normal(0.0, jitter)) % 1.0
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)))
    cx, cy = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    r = size * rng.uniform(0.25, 0.35)
    pen = ImageDraw.Draw(image)
    if shape == "ellipse":
        pen.ellipse((cx - r * 0.6, cy - r, cx + r * 0.6, cy + r), fill=colour)
    elif shape == "cone":
        pen.polygon([(cx, cy + r), (cx - r * 0.6, cy - r * 0.6), (cx + r * 0.6, cy - r * 0.6)], fill=colour)
    else:
        pen.polygon([(cx, cy - r), (cx - r * 0.4, cy), (cx, cy + r), (cx + r * 0.4, cy)], fill=colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 255 * noise, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def build(out: Path, manifest: Path, look_alikes: str, size: int, jitter: float, noise: float, seed: int) -> int:
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    colours = species_colours(rows, look_alikes, seed)
    for row in rows:
        path = out / "Conus" / row["relpath"]
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, zlib.crc32(row["relpath"].encode())])
        draw(*colours[row["species"]], size, rng, jitter, noise).save(path, format="JPEG", quality=90)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="data root to write; the tree goes to OUT/Conus")
    parser.add_argument("--look-alikes", choices=("anywhere", "region"), default="anywhere")
    parser.add_argument("--manifest", type=Path, default=default_manifest())
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--jitter", type=float, default=0.02, help="hue jitter per image (std, share of the wheel)")
    parser.add_argument("--noise", type=float, default=0.15, help="pixel noise (std, share of 255)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.manifest.is_file():
        parser.exit(2, f"error: {args.manifest} not found: point --manifest or HARNESS_TEST_DATA at the conus_layout list.\n")
    n = build(args.out, args.manifest, args.look_alikes, args.size, args.jitter, args.noise, args.seed)
    print(f"wrote {n} images under {args.out / 'Conus'} (look-alikes: {args.look_alikes})")


if __name__ == "__main__":
    main()
