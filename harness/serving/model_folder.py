"""A model folder, read back to predict: its Keras model(s) loaded in safe mode or its ONNX model on
onnxruntime (``harness.serving.runtimes``), and decoding exactly as training did. `harness predict`
and `harness serve` use it; `harness export` writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import __version__
from harness.data.images import UnreadableImage, decode
from harness.errors import HarnessError
from harness.serving.runtimes import OnnxModel, choose_runtime, folder_formats, keras_probabilities, load_keras_models

#: The newest model folder format this harness reads (2: a folder may hold no Keras model).
FORMAT_VERSION = 2
INFO_FILE = "model.json"
CARD_FILE = "MODEL_CARD.md"
EXAMPLES_DIR = "examples"


@dataclass
class Prediction:
    """The top k classes of one image, most probable first."""

    labels: list[str]
    label_ids: list[int]
    probabilities: list[float]

    def as_json(self) -> list[dict]:
        return [{"label": a, "label_id": b, "probability": round(c, 6)}
                for a, b, c in zip(self.labels, self.label_ids, self.probabilities)]


class ExportedModel:
    """A model folder loaded for prediction on ``runtime`` ("keras" or "onnx"; None: see
    ``choose_runtime``). Keras models load in safe mode: no code from the folder runs."""

    def __init__(self, folder: str | Path, runtime: str | None = None):
        self.folder = Path(folder)
        path = self.folder / INFO_FILE
        try:
            self.info = json.loads(path.read_text())
        except FileNotFoundError:
            raise HarnessError(f"{self.folder}: not a model folder (no {INFO_FILE}); make one with "
                               "harness export RESULTS/STUDY.") from None
        except (OSError, ValueError) as exc:
            raise HarnessError(f"{path}: unreadable ({exc}); export the model again.") from None
        made = self.info.get("format")
        if not isinstance(made, int) or made > FORMAT_VERSION:
            raise HarnessError(
                f"{self.folder} was written by harness {self.info.get('versions', {}).get('harness', '?')} in model "
                f"format {made}; this harness ({__version__}) reads format {FORMAT_VERSION} or older: upgrade harness."
            )
        self.runtime = choose_runtime(self.folder, self.info, runtime)
        files = folder_formats(self.info)[self.runtime]
        #: The Keras models (the Keras runtime; Grad-CAM explains them), or none.
        self.models = load_keras_models(self.folder, files) if self.runtime == "keras" else []
        self._onnx = OnnxModel(self.folder / files[0]) if self.runtime == "onnx" else None
        self.classes: list[str] = self.info["classes"]
        image = self.info["inputs"]["image"]
        self.image_size = tuple(image["size"])
        self.resize = image["resize"]
        self.extra_inputs: dict[str, list[str]] = {
            n: v["one_hot"] for n, v in self.info["inputs"].items() if n != "image"
        }

    def decode(self, data: bytes, where: str = "upload") -> np.ndarray:
        """Decode image bytes exactly as training did; HarnessError naming ``where`` if unreadable."""
        try:
            return decode(data, self.image_size, self.resize)
        except UnreadableImage as exc:
            raise HarnessError(f"{where}: not a readable image ({exc}).") from None

    def encode_extra(self, values: dict[str, str | None], n: int) -> dict[str, np.ndarray]:
        arrays = {}
        for name, vocabulary in self.extra_inputs.items():
            value = values.get(name)
            if value is None or value == "":
                raise HarnessError(f"this model needs a {name}: give one of {', '.join(vocabulary)}.")
            if value not in vocabulary:
                raise HarnessError(f"unknown {name} '{value}': give one of {', '.join(vocabulary)}.")
            arrays[name] = np.repeat(np.eye(len(vocabulary), dtype="float32")[[vocabulary.index(value)]], n, axis=0)
        return arrays

    def inputs(self, pixels: np.ndarray, extra: dict[str, str | None] | None = None):
        """What the models take for decoded images: the uint8 batch, or a dict with the extra inputs."""
        pixels = np.asarray(pixels, dtype=np.uint8)
        if self.extra_inputs:
            return {"image": pixels, **self.encode_extra(extra or {}, len(pixels))}
        return pixels

    def probabilities(self, pixels: np.ndarray, extra: dict[str, str | None] | None = None) -> np.ndarray:
        """Class probabilities for decoded images (n, height, width, 3); averaged over fold models."""
        inputs = self.inputs(pixels, extra)
        if self._onnx is not None:
            return self._onnx(inputs, len(pixels))
        return keras_probabilities(self.models, inputs, len(pixels))

    def require_keras(self, what: str) -> None:
        """A one-line refusal when ``what`` needs the Keras models and the folder runs on another runtime."""
        if self.runtime != "keras":
            raise HarnessError(f"{what} needs the Keras model; {self.folder} runs on {self.runtime} here (run it "
                               "with --runtime keras, on a folder exported with --format keras).")

    def top(self, probabilities: np.ndarray, k: int) -> list[Prediction]:
        k = max(1, min(int(k), len(self.classes)))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [Prediction([self.classes[j] for j in row], [int(j) for j in row], [float(p[j]) for j in row])
                for p, row in zip(probabilities, order)]
