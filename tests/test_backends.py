"""The core is Keras-3 backend-agnostic: no TensorFlow in it, and studies and the model tests run on
JAX and PyTorch as on TensorFlow."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_study_text

ROOT = Path(__file__).resolve().parents[1]


def test_core_never_touches_tensorflow_directly():
    """Only the optional fast path for TensorFlow (imported when Keras runs on it) may."""
    offenders = []
    for path in sorted((ROOT / "harness").glob("*.py")):
        if path.name == "tf_loops.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"^\s*(import tensorflow|from tensorflow)|\btf\.", line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    importers = [p.name for p in (ROOT / "harness").glob("*.py") if "harness.tf_loops" in p.read_text()]
    assert importers == ["train.py"]
    assert re.search(r'backend\(\) != "tensorflow":[\s\S]*return[\s\S]*from harness.tf_loops', (ROOT / "harness" / "train.py").read_text())


#: The test modules that train or build models, run again under each other backend: the core is
#: backend-agnostic only if they pass there too (the rest is plain Python and NumPy).
MODEL_TESTS = [
    "test_augment.py", "test_conus_study.py", "test_end_to_end.py", "test_feature_cache.py", "test_freezing.py",
    "test_models_contract.py", "test_training.py", "test_tuner_engine.py", "test_workers.py",
]
OTHER_BACKENDS = {"jax": "pip install -e '.[jax]'", "torch": "pip install -e '.[torch]'"}
#: JAX compiles every new model, in every process, with XLA. On this CPU, end to end, keras-tuner
#: and workers took 8 of the 10 minutes the model tests other than the contract took under JAX
#: (the contract's ~45 application builds longer still; everything 5 minutes under PyTorch), so
#: under JAX these run only with HARNESS_SLOW_TESTS=1. The run machinery they exercise (records,
#: Optuna, workers) does not depend on the backend.
SLOW_UNDER_JAX = {"test_end_to_end.py", "test_models_contract.py", "test_tuner_engine.py", "test_workers.py"}


@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_tiny_study_runs_on(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed ({OTHER_BACKENDS[backend]})")
    study = tmp_path / "tiny.toml"
    study.write_text(tiny_study_text(name="tiny", trials=1))
    env = dict(os.environ, KERAS_BACKEND=backend)
    code = "import keras, sys; from harness.cli import main; print('backend', keras.backend.backend()); sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "run", str(study), "--results", str(tmp_path / "r")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"backend {backend}" in done.stdout
    board = pd.read_csv(tmp_path / "r" / "tiny" / "leaderboard.csv")
    assert board.loc[0, "complete"] == 1 and 0 <= board.loc[0, "accuracy_mean"] <= 1


@pytest.mark.parametrize("backend", sorted(OTHER_BACKENDS))
def test_model_tests_pass_on(backend, tmp_path):
    """The model-training test modules, in a pytest of their own under ``backend``."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed ({OTHER_BACKENDS[backend]})")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == backend:
        pytest.skip(f"this run is under {backend} already")
    modules = MODEL_TESTS
    if backend == "jax" and not os.environ.get("HARNESS_SLOW_TESTS"):
        modules = [name for name in MODEL_TESTS if name not in SLOW_UNDER_JAX]
    env = dict(os.environ, KERAS_BACKEND=backend)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
         *(str(ROOT / "tests" / name) for name in modules)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, f"under KERAS_BACKEND={backend}:\n{done.stdout[-6000:]}"
    assert re.search(r"\d+ passed", done.stdout)
