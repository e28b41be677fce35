"""A procedural image dataset: coloured shapes on noisy backgrounds, the same for the same seed.

Needs no download, so the demo and the tests run anywhere. Several views of one object share a
group key (like two photos of one shell); an optional ``location`` column correlates with the class.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from harness import DatasetContext, DatasetSpec, HarnessError, Samples, hookimpl

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in parts])


def _draw(shape: str, size: tuple[int, int], seed: int, group: str, image_id: str, noise: float) -> np.ndarray:
    obj, jitter = _rng(seed, group), _rng(seed, image_id)
    h, w = size
    scale = min(h, w)
    image = Image.new("RGB", (w, h), tuple(int(v) for v in obj.integers(0, 90, 3)))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(v) for v in obj.integers(120, 256, 3))
    r = scale * obj.uniform(0.22, 0.36)
    cx = w / 2 + scale * (obj.uniform(-0.12, 0.12) + jitter.uniform(-0.04, 0.04))
    cy = h / 2 + scale * (obj.uniform(-0.12, 0.12) + jitter.uniform(-0.04, 0.04))
    box = (cx - r, cy - r, cx + r, cy + r)
    t = max(1, int(r / 3))
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "cross":
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=t)
    else:
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
    pixels = np.asarray(image, dtype=np.float32)
    pixels += jitter.normal(0.0, 255 * noise, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def load(params: dict, context: DatasetContext) -> Samples:
    n_classes, per_class, views = params["classes"], params["images_per_class"], params["views"]
    if not 2 <= n_classes <= len(SHAPES):
        raise HarnessError(f"dataset 'synthetic': classes must be between 2 and {len(SHAPES)}, got {n_classes}.")
    rows = []
    for shape in SHAPES[:n_classes]:
        for i in range(per_class):
            group = f"{shape}-{i // views:04d}"
            row = {"id": f"{shape}/{i:04d}", "label": shape, "group": group}
            if params["locations"]:
                place = _rng(params["seed"], "place", group)
                own = SHAPES.index(shape) % params["locations"]
                row["location"] = f"region_{own if place.random() < 0.8 else place.integers(params['locations'])}"
            rows.append(row)
    table = pd.DataFrame(rows)
    seed, noise = params["seed"], params["noise"]

    def pixels(rows: pd.DataFrame, size: tuple[int, int]) -> np.ndarray:
        return np.stack([_draw(r.label, size, seed, r.group, r.id, noise) for r in rows.itertuples()])

    return Samples(table, pixels)


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="synthetic",
            load=load,
            params={"classes": 4, "images_per_class": 40, "views": 1, "locations": 0, "noise": 0.08, "seed": 0},
            description="procedural coloured shapes; views > 1 gives groups, locations > 0 a location column",
        )
    ]
