"""`harness export --format`: which runtime a model folder runs on, which formats a backend can
write, and the conversion of a model with preprocessing and a one-hot extra input to ONNX and
LiteRT (tiny in-process models: no study, no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from harness.cli.parser import build_parser
from harness.errors import HarnessError
from harness.serving.runtimes import OnnxModel, choose_runtime
from harness.workflows.formats import check_formats, litert_probabilities, write_formats


def folder_info(**formats) -> dict:
    return {"models": formats.get("keras", []), "formats": {k: {"files": v} for k, v in formats.items()}}


def test_the_runtime_follows_the_flag_then_what_the_folder_holds(tmp_path):
    both = folder_info(keras=["model.keras"], onnx=["model.onnx"], litert=["model.tflite"])
    assert choose_runtime(tmp_path, both) == "keras"  # Keras is installed here
    assert choose_runtime(tmp_path, both, "onnx") == "onnx"
    assert choose_runtime(tmp_path, folder_info(onnx=["model.onnx"])) == "onnx"
    assert choose_runtime(tmp_path, {"models": ["fold-0.keras", "fold-1.keras"]}) == "keras"  # before formats
    with pytest.raises(HarnessError, match="holds no onnx model .*--format onnx"):
        choose_runtime(tmp_path, {"models": ["model.keras"]}, "onnx")
    with pytest.raises(HarnessError, match="holds litert .*LiteRT interpreter"):
        choose_runtime(tmp_path, folder_info(litert=["model.tflite"]))


def test_formats_a_backend_or_precision_cannot_write_are_refused_before_training():
    check_formats(["keras", "onnx", "litert"], "tensorflow", "float32")
    check_formats(["keras"], "jax", "mixed_float16")
    with pytest.raises(HarnessError, match="cannot write litert"):
        check_formats(["litert"], "jax", "float32")
    with pytest.raises(HarnessError, match="float32 models only"):
        check_formats(["onnx"], "tensorflow", "mixed_bfloat16")


def test_format_flags_accept_lists_and_repeats_and_refuse_unknown_names(capsys):
    parser = build_parser()
    args = parser.parse_args(["export", "r", "--format", "keras,onnx", "--format", "litert"])
    assert args.formats == [["keras", "onnx"], ["litert"]]
    assert parser.parse_args(["export", "r"]).formats is None
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["export", "r", "--format", "keras,pdf"])
    assert exit_.value.code == 2 and "unknown format 'pdf'" in capsys.readouterr().err


def needs_onnx_export() -> None:
    """Skip, saying what to install or set, where ONNX and LiteRT cannot be written and run."""
    import keras

    if keras.backend.backend() != "tensorflow":  # JAX writes neither format here (README: formats by backend)
        pytest.skip("ONNX and LiteRT are written on the TensorFlow backend (KERAS_BACKEND=tensorflow)")
    for module in ("tf2onnx", "onnxruntime", "ai_edge_litert"):
        pytest.importorskip(module, reason="needs the onnx extra: pip install -e '.[onnx]' (.ci/run installs it)")


def located_model(path):
    """A small model as the plugins build them: the Preprocess layer inside, an image and a one-hot
    location joined before the softmax, saved as a .keras file."""
    import keras

    from harness.toolkit.backbones import Preprocess

    image = keras.Input(shape=(12, 12, 3), name="image")
    location = keras.Input(shape=(3,), name="location")
    x = Preprocess("caffe", name="preprocess")(image)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, location])
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model({"image": image, "location": location}, out, name="located")
    model.save(path)
    return model


def test_a_model_with_an_extra_input_converts_to_onnx_and_litert_without_its_keras_file(tmp_path):
    needs_onnx_export()
    model = located_model(tmp_path / "model.keras")
    pixels = np.random.default_rng(0).integers(0, 256, (5, 12, 12, 3)).astype("uint8")
    entries = write_formats(tmp_path, ["model.keras"], ["onnx", "litert"], pixels, Console(quiet=True))
    assert not (tmp_path / "model.keras").exists()  # not asked for: only the converted files stay
    assert sorted(entries) == ["litert", "onnx"] and all(e["ensemble"] is None for e in entries.values())
    assert entries["onnx"]["inputs"] == {"image": {"shape": [None, 12, 12, 3], "dtype": "float32"},
                                         "location": {"shape": [None, 3], "dtype": "float32"}}
    json.dumps(entries)  # model.json takes it as it is
    inputs = {"image": pixels, "location": np.eye(3, dtype="float32")[[0, 1, 2, 0, 1]]}
    expected = np.asarray(model({"image": pixels.astype("float32"), "location": inputs["location"]}))
    for found in (OnnxModel(tmp_path / "model.onnx")(inputs, 5), litert_probabilities(tmp_path / "model.tflite", inputs)):
        assert np.abs(found - expected).max() < 1e-4
    assert all(e["parity"]["checked"] and e["parity"]["max_abs_difference"] < 1e-4 for e in entries.values())


def test_every_preprocessing_mode_is_inside_the_exported_files(tmp_path):
    """The model's output is what each ``Preprocess`` mode makes of the pixels, side by side: the
    converted files must compute every mode as Keras does (a mode lost or changed in conversion
    shows here, not hidden behind a softmax)."""
    needs_onnx_export()
    import keras

    from harness.toolkit.backbones import PREPROCESSING, Preprocess

    image = keras.Input(shape=(6, 6, 3), name="image")
    layers = [Preprocess(mode, name=f"preprocess_{mode}") for mode in PREPROCESSING]
    out = keras.layers.Concatenate()([keras.layers.Flatten()(layer(image)) for layer in layers])
    model = keras.Model(image, keras.layers.Rescaling(1 / 255)(out))
    for layer in layers:
        if layer.mode == "dataset":  # the training fold's statistics, saved with the model
            layer.mean.assign([120.0, 110.0, 100.0])
            layer.std.assign([60.0, 50.0, 40.0])
    model.save(tmp_path / "model.keras")
    pixels = np.random.default_rng(1).integers(0, 256, (4, 6, 6, 3)).astype("uint8")
    entries = write_formats(tmp_path, ["model.keras"], ["keras", "onnx", "litert"], pixels, Console(quiet=True))
    expected = np.asarray(model(pixels.astype("float32")))
    assert expected.shape == (4, 6 * 6 * 3 * len(PREPROCESSING)) and np.ptp(expected) > 0.5
    for found in (OnnxModel(tmp_path / "model.onnx")(pixels, 4), litert_probabilities(tmp_path / "model.tflite", pixels)):
        assert np.abs(found - expected).max() < 1e-4
    assert entries["onnx"]["parity"]["max_abs_difference"] < 1e-4 and (tmp_path / "model.keras").is_file()
