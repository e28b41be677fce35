"""Grad-CAM heat maps for a model folder: `harness predict --explain` and `serve`'s ``explain=true``.

The heat map explains each image's top-1 class (of the folder's averaged probabilities) at the
layer the folder records in ``model.json`` (``explain_layer``), else ``harness.toolkit.gradcam``'s
default. For an ensemble folder every fold model explains that same class and the maps are
averaged, then divided by their maximum. The overlay is drawn on the image as the model sees it
(decoded to its input size).
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import numpy as np

from harness.serving.model_folder import ExportedModel


class Explainer:
    """Grad-CAM for an exported model, prepared once (one ``GradCam`` per fold model)."""

    def __init__(self, model: ExportedModel):
        model.require_keras("Grad-CAM (explain)")  # before importing Keras: an ONNX folder may run without it
        from harness.toolkit.gradcam import GradCam

        self.model = model
        self.cams = [GradCam(m, model.info.get("explain_layer")) for m in model.models]

    @property
    def method(self) -> str:
        """How the maps are made, in words (an ensemble's averaging said)."""
        layers = sorted({cam.layer for cam in self.cams})
        how = f"Grad-CAM of the top-1 class at layer {', '.join(repr(n) for n in layers)}"
        if len(self.cams) > 1:
            how += f"; the mean of the {len(self.cams)} fold models' maps, divided by its maximum"
        return how

    def heatmaps(self, pixels: np.ndarray, extra: dict | None, classes) -> np.ndarray:
        """(n, height, width) float32 in [0, 1]: the maps of ``classes`` (one per image)."""
        inputs = self.model.inputs(pixels, extra)
        maps = np.mean([cam(inputs, class_index=classes) for cam in self.cams], axis=0)
        top = maps.max(axis=(1, 2), keepdims=True)
        return np.divide(maps, top, out=np.zeros_like(maps), where=top > 0).astype("float32")

    def overlays(self, pixels: np.ndarray, extra: dict | None, classes) -> list[np.ndarray]:
        """Each image (uint8 RGB) with its class's heat map blended on."""
        from harness.toolkit.gradcam import overlay

        return [overlay(p, h) for p, h in zip(np.asarray(pixels, np.uint8), self.heatmaps(pixels, extra, classes))]


def png(image: np.ndarray) -> bytes:
    """A uint8 RGB image as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_names(files: list[Path]) -> dict[Path, str]:
    """A file name per image for its overlay: ``<stem>.gradcam.png``; where several images share a
    stem (``a/000.jpg``, ``b/000.jpg``), ``<folder>-<stem>.gradcam.png``, numbered if still shared."""
    unique = list(dict.fromkeys(files))
    counts = Counter(_safe(p.stem).lower() for p in unique)
    names, taken = {}, set()
    for path in unique:
        stem = _safe(path.stem)
        base = f"{_safe(path.parent.name)}-{stem}" if counts[stem.lower()] > 1 else stem
        name, k = base, 1
        while name.lower() in taken:  # also names that differ only in case (macOS, Windows)
            k += 1
            name = f"{base}-{k}"
        taken.add(name.lower())
        names[path] = f"{name}.gradcam.png"
    return names


def _safe(text: str) -> str:
    # A name from any file system, kept readable but portable (no separators or control characters).
    return re.sub(r"[^\w.+-]+", "_", text).strip("._") or "image"
