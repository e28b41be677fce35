"""The core is Keras-3 backend-agnostic: no TensorFlow in it, and a tiny study runs on JAX."""

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


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install -e '.[jax]')")
def test_tiny_study_runs_on_jax(tmp_path):
    study = tmp_path / "jax.toml"
    study.write_text(tiny_study_text(name="jax", trials=1))
    env = dict(os.environ, KERAS_BACKEND="jax")
    code = "import keras, sys; from harness.cli import main; print('backend', keras.backend.backend()); sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "run", str(study), "--results", str(tmp_path / "r")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend jax" in done.stdout
    board = pd.read_csv(tmp_path / "r" / "jax" / "leaderboard.csv")
    assert board.loc[0, "complete"] == 1 and 0 <= board.loc[0, "accuracy_mean"] <= 1
