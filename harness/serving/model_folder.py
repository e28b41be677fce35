"""A model folder, read back to predict: the Keras model(s) loaded in safe mode and decoding exactly
as training did. `harness predict` and `harness serve` use it; `harness export` writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import __version__
from harness.data.images import UnreadableImage, decode
from harness.errors import HarnessError

FORMAT_VERSION = 1
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
    """A model folder loaded for prediction (safe mode: no code from the folder runs)."""

    def __init__(self, folder: str | Path):
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
        import keras

        import harness.toolkit.backbones  # noqa: F401  (registers the preprocessing layer the models use)

        self.models = []
        for name in self.info["models"]:
            file = self.folder / name
            try:
                self.models.append(keras.saving.load_model(file, compile=False, safe_mode=True))
            except Exception as exc:  # a missing, torn or foreign file: one line, not Keras's traceback
                raise HarnessError(f"{file}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}); "
                                   "export the model again.") from None
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
        outputs = [self._call(m, inputs, len(pixels)) for m in self.models]
        return np.mean(outputs, axis=0)

    @staticmethod
    def _call(model, inputs, n: int, batch: int = 32) -> np.ndarray:
        """The model called directly, in batches: for one image, ~10× less overhead than ``predict``."""
        import keras

        parts = []
        for start in range(0, n, batch):
            part = ({k: v[start:start + batch] for k, v in inputs.items()} if isinstance(inputs, dict)
                    else inputs[start:start + batch])
            parts.append(np.asarray(keras.ops.convert_to_numpy(model(part, training=False)), dtype="float64"))
        return np.concatenate(parts)

    def top(self, probabilities: np.ndarray, k: int) -> list[Prediction]:
        k = max(1, min(int(k), len(self.classes)))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [Prediction([self.classes[j] for j in row], [int(j) for j in row], [float(p[j]) for j in row])
                for p, row in zip(probabilities, order)]
