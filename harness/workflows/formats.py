"""`harness export --format`: the model folder's model as Keras (``.keras``), ONNX (``model.onnx``)
and LiteRT (``model.tflite``).

ONNX and LiteRT are written by Keras 3's own ``model.export`` from the trained ``.keras`` file(s),
loaded back in safe mode. The file holds the whole model, preprocessing layers included: it takes
decoded RGB pixels 0–255 (float32, at the folder's image size) and any one-hot extra input by name,
and gives the class probabilities. A fold ensemble becomes one graph whose output is
``keras.layers.Average`` of the K fold models; the Keras format keeps the K files and harness
averages their probabilities at prediction time. Each converted file is checked against Keras on
the folder's example images (one per class) and the largest difference is recorded in model.json.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
from rich.console import Console

from harness.errors import HarnessError
from harness.serving.runtimes import FORMAT_FILES, OnnxModel, keras_probabilities, load_keras_models

#: The largest difference of a probability, converted file against Keras, that passes the check.
PARITY = 1e-4
#: What each backend needs to write each format (Keras 3.15; LiteRT has no JAX path).
CONVERTERS = {("onnx", "tensorflow"): "tf2onnx", ("onnx", "jax"): "jax2onnx", ("onnx", "torch"): "onnx",
              ("litert", "tensorflow"): "tensorflow", ("litert", "torch"): "litert_torch"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_formats(formats: list[str], backend: str, precision: str) -> None:
    """Refuse, before any training, a format this backend, installation or precision cannot write."""
    for name in formats:
        if name == "keras":
            continue
        if precision != "float32":
            raise HarnessError(f"--format {name}: Keras converts float32 models only and this candidate trains in "
                               f"{precision} ([train] precision); export --format keras, or set precision = "
                               "\"float32\".")
        module = CONVERTERS.get((name, backend))
        if module is None:
            raise HarnessError(f"--format {name}: Keras {backend} backend cannot write {name}; export with "
                               "KERAS_BACKEND=tensorflow (or torch), or give --format keras.")
        if not _installed(module):
            raise HarnessError(f"--format {name}: on the {backend} backend Keras writes {name} with {module}, which "
                               f"is not installed: pip install {module.replace('_', '-')}.")


def single_graph(models: list):
    """One Keras model for the folder: the model itself, or the fold models' average inside the graph."""
    import keras

    first = models[0]
    if isinstance(first.input, dict):
        inputs = {k: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=k) for k, t in first.input.items()}
    else:
        inputs = keras.Input(shape=first.inputs[0].shape[1:], dtype=first.inputs[0].dtype, name="image")
    for model in models:
        model.trainable = False  # inference only (on PyTorch, weights that need no gradient trace as constants)
    if len(models) == 1:
        return keras.Model(inputs, first(inputs), name="harness_export")
    for i, model in enumerate(models):
        model.name = f"fold_{i}"  # the members' names must differ within one graph
    average = keras.layers.Average(name="fold_average")([m(inputs) for m in models])
    return keras.Model(inputs, average, name="harness_export")


def _signature(graph) -> list:
    import keras

    specs = {t.name: keras.InputSpec(shape=(None, *t.shape[1:]), dtype=t.dtype, name=t.name) for t in graph.inputs}
    return [specs] if isinstance(graph.input, dict) else [specs[graph.inputs[0].name]]


def sample_inputs(model, pixels: np.ndarray):
    """The examples as the models take them: uint8 pixels, and each extra input's one-hot rows in turn."""
    pixels = np.asarray(pixels, np.uint8)
    if not isinstance(model.input, dict):
        return pixels
    arrays = {}
    for name, tensor in model.input.items():
        width = tensor.shape[-1]
        arrays[name] = pixels if name == "image" else np.eye(width, dtype="float32")[np.arange(len(pixels)) % width]
    return arrays


def write_formats(folder: Path, files: list[str], formats: list[str], pixels: np.ndarray, console: Console) -> dict:
    """Write each of ``formats`` from the Keras file(s) in ``folder`` and check it on ``pixels``
    (decoded examples); model.json's ``formats`` entry. Without "keras" the ``.keras`` files go."""
    models = load_keras_models(folder, files)
    entries: dict[str, dict] = {}
    if "keras" in formats:
        entries["keras"] = {"files": list(files), "ensemble": (f"the {len(files)} fold models' probabilities averaged "
                                                               "by harness at prediction time") if len(files) > 1 else None}
    others = [f for f in formats if f != "keras"]
    if others:
        graph = single_graph(models)
        inputs = sample_inputs(models[0], pixels)
        reference = keras_probabilities(models, inputs, len(pixels))
        for name in others:
            entries[name] = _write_one(graph, len(models), folder, name, inputs, reference, console)
    if "keras" not in formats:
        for name in files:
            (folder / name).unlink()
    return entries


def _write_one(graph, members: int, folder: Path, name: str, inputs, reference: np.ndarray,
               console: Console) -> dict:
    """Convert the graph to ``name``'s file and check it against Keras: its model.json entry."""
    file = FORMAT_FILES[name]
    console.print(f"writing {file} ({name})…")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converters' deprecation and tracing notes
            graph.export(str(folder / file), format=name, verbose=False, input_signature=_signature(graph))
    except Exception as exc:
        raise HarnessError(f"--format {name}: Keras could not convert the model ({type(exc).__name__}: "
                           f"{str(exc)[:300]}); export --format keras, or report it with the model's name.") from None
    entry = {"files": [file],
             "inputs": {t.name: {"shape": [None, *t.shape[1:]], "dtype": str(t.dtype)} for t in graph.inputs},
             "output": "class probabilities (batch, classes), in the order of classes",
             "ensemble": (f"the {members} fold models averaged inside the graph (keras.layers.Average)"
                          if members > 1 else None)}
    found = _converted_probabilities(folder / file, name, inputs, len(reference))
    if found is None:
        entry["parity"] = {"checked": False, "why": "onnxruntime not installed" if name == "onnx"
                           else "ai-edge-litert not installed"}
        return entry
    difference = float(np.abs(found - reference).max())
    entry["parity"] = {"checked": True, "images": len(reference), "max_abs_difference": difference}
    if difference > PARITY:
        console.print(f"[yellow]warning:[/] {file} differs from the Keras model by up to {difference:.2g} in a "
                      f"probability on the example images (more than {PARITY:g}).")
    return entry


def _converted_probabilities(file: Path, name: str, inputs, n: int) -> np.ndarray | None:
    """The converted file's probabilities for ``inputs`` on its own runtime (None: runtime not installed)."""
    if name == "onnx":
        return OnnxModel(file)(inputs, n) if _installed("onnxruntime") else None
    if not _installed("ai_edge_litert"):
        return None
    return litert_probabilities(file, inputs)


def litert_probabilities(file: Path, inputs) -> np.ndarray:
    """``model.tflite``'s probabilities on the LiteRT interpreter (its serving signature, by input name)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(file)).get_signature_runner()
    named = inputs if isinstance(inputs, dict) else {"image": inputs}
    wanted = runner.get_input_details()
    feed = {k: np.asarray(named[k], dtype=wanted[k]["dtype"]) for k in wanted}
    return np.asarray(next(iter(runner(**feed).values())), dtype="float64")


def format_words(info: dict) -> str:
    """The formats of a folder in words, for the model card."""
    words = []
    for name, entry in (info.get("formats") or {"keras": {"files": info.get("models", [])}}).items():
        parity = entry.get("parity") or {}
        check = (f"; on the {parity['images']} example images within {parity['max_abs_difference']:.1g} of Keras"
                 if parity.get("checked") else "")
        inside = "; the fold models averaged inside the graph" if entry.get("ensemble") and name != "keras" else ""
        words.append(f"{name} ({', '.join(entry['files'])}{inside}{check})")
    return ", ".join(words)
