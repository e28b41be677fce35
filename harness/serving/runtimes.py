"""What runs a model folder's model for `predict` and `serve`: Keras (the ``.keras`` files) or
onnxruntime (``model.onnx``).

The ONNX runtime imports neither TensorFlow nor Keras: a folder exported with ``--format onnx``
serves where only onnxruntime, numpy and Pillow are installed. Without ``--runtime`` a folder runs
on Keras when it holds Keras models and Keras is installed, else on ONNX.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

#: The runtimes `predict` and `serve` can use, and the format each runs.
RUNTIMES = ("keras", "onnx")
#: The formats `harness export` writes, and the files each writes.
FORMAT_FILES = {"keras": None, "onnx": "model.onnx", "litert": "model.tflite"}
_ONNX_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(double)": "float64"}
#: Images per model call: one call per image would cost ~10× the overhead.
BATCH = 32


def folder_formats(info: dict) -> dict[str, list[str]]:
    """Each format the folder holds and its files (a folder from before formats holds Keras models only)."""
    formats = info.get("formats")
    if not isinstance(formats, dict):
        return {"keras": list(info.get("models", []))}
    return {name: list(entry.get("files", [])) for name, entry in formats.items() if entry.get("files")}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def choose_runtime(folder: Path, info: dict, requested: str | None = None) -> str:
    """``requested`` if the folder holds its format; else Keras when the folder holds Keras models
    and Keras is installed, else ONNX when it holds an ONNX model."""
    formats = folder_formats(info)
    held = ", ".join(formats) or "nothing"
    if requested is not None:
        if requested not in RUNTIMES:
            raise HarnessError(f"--runtime {requested}: give one of {', '.join(RUNTIMES)}.")
        if requested not in formats:
            raise HarnessError(f"{folder}: --runtime {requested}: the folder holds no {requested} model (it holds "
                               f"{held}); export one with harness export RESULTS_DIR --format {requested}.")
        return requested
    if "keras" in formats and ("onnx" not in formats or _installed("keras")):
        return "keras"
    if "onnx" in formats:
        return "onnx"
    raise HarnessError(f"{folder}: predict and serve run Keras or ONNX models; this folder holds {held} (run "
                       "model.tflite with the LiteRT interpreter); export it with --format keras or --format onnx.")


def load_keras_models(folder: Path, files: list[str]) -> list:
    """The folder's Keras models, loaded in safe mode (no code from the folder runs)."""
    try:
        import keras

        import harness.toolkit.backbones  # noqa: F401  (registers the preprocessing layer the models use)
    except ImportError as exc:
        raise HarnessError(f"the Keras runtime needs Keras and its backend ({exc}); install them, or run the "
                           "folder's ONNX model: export with --format onnx, then give --runtime onnx.") from None

    models = []
    for name in files:
        file = folder / name
        try:
            models.append(keras.saving.load_model(file, compile=False, safe_mode=True))
        except Exception as exc:  # a missing, torn or foreign file: one line, not Keras's traceback
            raise HarnessError(f"{file}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}); "
                               "export the model again.") from None
    return models


def keras_probabilities(models: list, inputs, n: int) -> np.ndarray:
    """The models called directly in batches (for one image ~10× less overhead than ``predict``),
    their probabilities averaged."""
    import keras

    outputs = []
    for model in models:
        parts = [np.asarray(keras.ops.convert_to_numpy(model(_rows(inputs, start), training=False)), dtype="float64")
                 for start in range(0, n, BATCH)]
        outputs.append(np.concatenate(parts))
    return np.mean(outputs, axis=0)


def _rows(inputs, start: int):
    if isinstance(inputs, dict):
        return {k: v[start:start + BATCH] for k, v in inputs.items()}
    return inputs[start:start + BATCH]


class OnnxModel:
    """``model.onnx`` on onnxruntime: the inputs by name as float32, the probabilities out (a fold
    ensemble's averaging is inside the graph)."""

    def __init__(self, file: Path):
        try:
            import onnxruntime
        except ImportError:
            raise HarnessError("an ONNX model folder runs on onnxruntime: pip install onnxruntime "
                               "(or pip install -e \".[onnx]\"), or give --runtime keras.") from None
        try:
            self.session = onnxruntime.InferenceSession(str(file), providers=onnxruntime.get_available_providers())
        except Exception as exc:  # missing, torn or not ONNX
            raise HarnessError(f"{file}: cannot be loaded by onnxruntime ({type(exc).__name__}: {str(exc)[:200]}); "
                               "export the model again.") from None
        #: Each input's name and the dtype it takes (float32 unless the model was exported otherwise).
        self.types = {i.name: _ONNX_TYPES.get(i.type, "float32") for i in self.session.get_inputs()}

    def __call__(self, inputs, n: int) -> np.ndarray:
        """Class probabilities (n, classes) as float64 for the inputs ``ExportedModel.inputs`` gives."""
        named = inputs if isinstance(inputs, dict) else {"image": inputs}
        missing = sorted(set(self.types) - set(named))
        if missing:
            raise HarnessError(f"the ONNX model takes {', '.join(self.types)}; not given: {', '.join(missing)}. "
                               "Export the model again.")
        parts = []
        for start in range(0, n, BATCH):
            feed = {name: np.asarray(named[name][start:start + BATCH], dtype=t) for name, t in self.types.items()}
            parts.append(np.asarray(self.session.run(None, feed)[0], dtype="float64"))
        return np.concatenate(parts)
