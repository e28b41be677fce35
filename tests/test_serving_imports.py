"""What each command imports: `harness predict` on a model folder runs where Optuna, scikit-learn and
fcntl cannot be imported (serving loads no search, training or tuning code), and `harness leaderboard`
and `harness report` run without fcntl (file locks through filelock, on every platform). An ONNX
model folder predicts and serves where TensorFlow and Keras cannot be imported either, with the
answers of its Keras models; its ONNX and LiteRT files agree with Keras within 1e-4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main

from conftest import harness_cache, tiny_study_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny finished study and its exported model: (results folder, model folder, an image, cache)."""
    tmp = tmp_path_factory.mktemp("imports")
    cache = tmp / "cache"
    study = tmp / "tiny.toml"
    study.write_text(tiny_study_text(name="imports", trials=1).replace("epochs = 2", "epochs = 1"))
    with harness_cache(cache):
        assert main(["run", str(study), "--results", str(tmp / "r")]) == 0
        results = tmp / "r" / "imports"
        assert main(["export", str(results), "--out", str(tmp / "model")]) == 0
    image = sorted((tmp / "model" / "examples").iterdir())[0]
    return results, tmp / "model", image, cache


def harness_without(blocked: list[str], args: list[str], tmp_path: Path, cache: Path) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` in a process where importing any of ``blocked`` fails."""
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=blocking_env(blocked, tmp_path, cache),
                          capture_output=True, text=True, timeout=600)


def blocking_env(blocked: list[str], tmp_path: Path, cache: Path) -> dict[str, str]:
    """The environment of a process where importing any of ``blocked`` fails."""
    prelude = tmp_path / "prelude"
    prelude.mkdir(exist_ok=True)
    # sitecustomize runs before the command: a module set to None in sys.modules cannot be imported.
    (prelude / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None
    """))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(prelude), os.environ.get("PYTHONPATH")])),
            "HARNESS_CACHE": str(cache)}


def test_the_prelude_really_blocks_the_modules(tmp_path):
    """Without this, the tests below would pass whatever the commands import."""
    done = harness_without(["optuna"], ["run", str(tmp_path / "missing.toml")], tmp_path, tmp_path / "cache")
    assert done.returncode != 0 and "optuna" in done.stderr


def test_predict_imports_no_optuna_sklearn_or_fcntl(finished, tmp_path):
    _, model, image, cache = finished
    done = harness_without(["optuna", "sklearn", "fcntl"], ["predict", str(model), str(image), "--json"], tmp_path, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    classes = json.loads((model / "model.json").read_text())["classes"]
    assert answer["image"] == str(image) and sorted(t["label"] for t in answer["top"]) == sorted(classes)


@pytest.mark.parametrize("command", ["leaderboard", "report"])
def test_leaderboard_and_report_run_without_fcntl(finished, tmp_path, command):
    results, _, _, cache = finished
    done = harness_without(["fcntl"], [command, str(results)], tmp_path, cache)
    assert done.returncode == 0, done.stderr[-3000:]
    if command == "leaderboard":
        assert "cnn5" in done.stdout
    else:
        assert "wrote" in done.stdout and (results / "report.html").is_file()


def test_every_template_is_package_data_and_loads_from_the_package():
    """A non-editable install copies only what pyproject.toml declares: each page's template must be in it."""
    import tomllib

    import jinja2

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["harness"]
    templates = sorted((ROOT / "harness").glob("*/templates/*"))
    assert {p.parent.parent.name for p in templates} == {"reports", "serving"}
    for path in templates:
        relative = path.relative_to(ROOT / "harness")
        assert any(relative.match(pattern) for pattern in patterns), f"{relative} is not package data"
        loader = jinja2.PackageLoader(f"harness.{relative.parts[0]}", "templates")
        assert jinja2.Environment(loader=loader).get_template(path.name).render  # parses


# --- ONNX and LiteRT: the same model without TensorFlow -----------------------------------------------

#: What an ONNX folder must run without: the training stack and Keras itself.
HEAVY = ["tensorflow", "keras", "optuna", "sklearn"]


@pytest.fixture(scope="module")
def converted(finished, tmp_path_factory):
    """The tiny study's fold ensemble exported as Keras, ONNX and LiteRT in one folder, and its
    example images decoded as training decodes them: (folder, image files, pixels)."""
    from harness.data.images import decode_file

    from test_export_formats import needs_onnx_export

    needs_onnx_export()
    results, _, _, cache = finished
    out = tmp_path_factory.mktemp("formats") / "model"
    with harness_cache(cache):
        assert main(["export", str(results), "--ensemble", "--format", "keras,onnx", "--format", "litert",
                     "--out", str(out)]) == 0
    files = sorted((out / "examples").iterdir())
    info = json.loads((out / "model.json").read_text())
    size = tuple(info["inputs"]["image"]["size"])
    pixels = np.stack([decode_file(f, size, info["inputs"]["image"]["resize"]) for f in files])
    return out, files, np.concatenate([pixels, pixels[:, ::-1], 255 - pixels])  # 3 more views of each


def test_onnx_and_litert_files_hold_the_averaged_ensemble_and_agree_with_keras(converted):
    import onnxruntime
    from ai_edge_litert.interpreter import Interpreter

    from harness.serving.model_folder import ExportedModel

    folder, _, pixels = converted
    info = json.loads((folder / "model.json").read_text())
    assert info["models"] == ["fold-0.keras", "fold-1.keras"] and info["format"] == 1
    assert {f: e["files"] for f, e in info["formats"].items()} == {
        "keras": ["fold-0.keras", "fold-1.keras"], "onnx": ["model.onnx"], "litert": ["model.tflite"]}
    for name in ("onnx", "litert"):
        assert "averaged inside the graph" in info["formats"][name]["ensemble"]
        assert info["formats"][name]["parity"]["max_abs_difference"] < 1e-4
    assert "averaged inside the graph" in (folder / "MODEL_CARD.md").read_text()
    keras_model = ExportedModel(folder, runtime="keras")
    expected = keras_model.probabilities(pixels)
    assert np.abs(expected - np.mean([m.predict(pixels.astype("float32"), verbose=0) for m in keras_model.models],
                                     axis=0)).max() < 1e-5  # the Keras runtime averages the folds
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"] and len(session.get_outputs()) == 1
    onnx = session.run(None, {"image": pixels.astype("float32")})[0]
    litert = Interpreter(model_path=str(folder / "model.tflite")).get_signature_runner()
    lite = next(iter(litert(image=pixels.astype("float32")).values()))
    for found in (onnx, lite):
        assert found.shape == expected.shape and np.abs(found - expected).max() < 1e-4
    assert np.abs(expected.sum(axis=1) - 1).max() < 1e-5 and expected.std(axis=0).max() > 1e-3  # not constant


def test_predict_and_serve_run_an_onnx_folder_where_tensorflow_keras_optuna_sklearn_cannot_import(converted, tmp_path):
    pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]' (.ci/run installs it)")
    from test_serve import free_port, get, post, wait_until_up

    from harness.serving.model_folder import ExportedModel

    folder, files, _ = converted
    keras_model = ExportedModel(folder, runtime="keras")
    want = {str(f): keras_model.top(keras_model.probabilities(keras_model.decode(f.read_bytes())[None]), 3)[0]
            for f in files}
    done = harness_without(HEAVY, ["predict", str(folder), *map(str, files), "--json"], tmp_path, tmp_path / "c")
    assert done.returncode == 0, done.stderr[-3000:]  # the default falls back to ONNX: Keras cannot import
    for line in done.stdout.strip().splitlines():
        answer = json.loads(line)
        assert same_top(answer["top"], want[answer["image"]].as_json())
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    done = harness_without(HEAVY, ["predict", str(folder), str(bad), "--runtime", "onnx"], tmp_path, tmp_path / "c")
    assert done.returncode == 2 and "broken.jpg: not a readable image" in done.stderr and "Traceback" not in done.stderr
    for args, words in (([str(tmp_path), str(files[0])], "not a model folder"),
                        ([str(folder), str(files[0]), "--runtime", "keras"], "needs Keras"),
                        ([str(folder), str(files[0]), "--explain", str(tmp_path / "maps")], "needs the Keras model")):
        done = harness_without(HEAVY, ["predict", *args], tmp_path, tmp_path / "c")
        assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "harness", "serve", str(folder), "--runtime", "onnx", "--port",
                                   str(port)], cwd=ROOT, env=blocking_env(HEAVY, tmp_path, tmp_path / "c"), stdout=out,
                                  stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, server, log)
        assert json.loads(get(f"{url}/model")[1])["runtime"] == "onnx"
        for f in files:
            status, body = post(url, f.read_bytes(), {"top_k": "3"})
            assert status == 200 and same_top(body["predictions"], want[str(f)].as_json())
        assert post(url, b"just some text", {})[0] == 415
        status, body = post(url, files[0].read_bytes(), {"explain": "true"})
        assert status == 422 and "needs the Keras model" in body["error"]
        assert b'id="explain"' not in get(f"{url}/")[1]  # the page offers no heat map
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def same_top(answer: list[dict], expected: list[dict]) -> bool:
    return [a["label_id"] for a in answer] == [e["label_id"] for e in expected] and all(
        abs(a["probability"] - e["probability"]) < 1e-5 for a, e in zip(answer, expected))
