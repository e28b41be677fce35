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
    """Only the optional fast path for TensorFlow and Grad-CAM's TensorFlow gradient (each used when
    Keras runs on it) may."""
    core = ROOT / "harness"
    fast_path = core / "training" / "loops.py"
    offenders = []
    for path in sorted(core.rglob("*.py")):
        if path in (fast_path, core / "toolkit" / "gradcam.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"^\s*(import tensorflow|from tensorflow)|\btf\.", line):
                offenders.append(f"{path.relative_to(core)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    imports_it = re.compile(r"^\s*(from harness\.training\.loops import|import harness\.training\.loops|from harness\.training import loops)", re.M)
    importers = [p for p in core.rglob("*.py") if imports_it.search(p.read_text())]
    assert importers and all(p.parent == fast_path.parent for p in importers), importers
    for path in importers:  # each imports the fast path only after checking the backend is TensorFlow
        assert re.search(r'backend\(\) != "tensorflow":[\s\S]*return[\s\S]*from harness.training.loops', path.read_text()), path


#: The test modules that exercise backend-specific code (building, freezing, augmenting, training and
#: predicting with models; porting weights; the feature and boundary caches), run again under each
#: other backend: the core is backend-agnostic only if they pass there too. The run machinery
#: (records, resume, Optuna, workers: test_end_to_end.py, test_workers.py) is plain Python and NumPy:
#: it runs once, under TensorFlow, and test_tiny_study_runs_on runs a whole study on each backend.
MODEL_TESTS = [
    "test_augment.py", "test_conus_study.py", "test_feature_cache.py", "test_freezing.py",
    "test_models_contract.py", "test_pretrained.py", "test_training.py", "test_tuner_engine.py",
    "test_boundary_cache.py",
]
OTHER_BACKENDS = {"jax": "pip install -e '.[jax]'", "torch": "pip install -e '.[torch]'"}
#: JAX compiles every new model, in every process, with XLA. On this CPU the keras-tuner tests and
#: the contract's ~45 application builds took most of the model tests' time under JAX, so under JAX
#: these run only with HARNESS_SLOW_TESTS=1 (HARNESS_SLOW_TESTS=1 also adds the run machinery's modules).
#: The boundary cache's tests (2 min under JAX) run under PyTorch, whose non-TensorFlow code paths
#: JAX shares (the cut, the kept top part and its fit are plain Keras).
SLOW_UNDER_JAX = {"test_models_contract.py", "test_tuner_engine.py", "test_boundary_cache.py"}
RUN_MACHINERY_MODULES = ["test_end_to_end.py", "test_workers.py"]


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


def test_model_tests_pass_on_jax(tmp_path):
    """The model-training test modules, in a pytest of their own under JAX (PyTorch's run is in
    test_backends_torch.py: a module of its own, so the two long runs go to different xdist workers)."""
    model_tests_pass_on("jax", tmp_path)


def model_tests_pass_on(backend: str, tmp_path: Path) -> None:
    """The model-training test modules, in a pytest of their own under ``backend``."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed ({OTHER_BACKENDS[backend]})")
    if os.environ.get("KERAS_BACKEND", "tensorflow") == backend:
        pytest.skip(f"this run is under {backend} already")
    modules = MODEL_TESTS + (RUN_MACHINERY_MODULES if os.environ.get("HARNESS_SLOW_TESTS") else [])
    if backend == "jax" and not os.environ.get("HARNESS_SLOW_TESTS"):
        modules = [name for name in MODEL_TESTS if name not in SLOW_UNDER_JAX]
    # Tests marked run_machinery (resume, signals, workers) exercise code that does not depend on
    # the backend; they run once, in the main run. HARNESS_SLOW_TESTS=1 runs them here too.
    select = [] if os.environ.get("HARNESS_SLOW_TESTS") else ["-m", "not run_machinery"]
    env = dict(os.environ, KERAS_BACKEND=backend)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"), *select,
         *(str(ROOT / "tests" / name) for name in modules)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, f"under KERAS_BACKEND={backend}:\n{done.stdout[-6000:]}"
    assert re.search(r"\d+ passed", done.stdout)


# --- starting the backend (harness.core.backend) ---

NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795502244.254184   18529 port.cc:153] oneDNN custom operations are on.\n"
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda drivers\n"
    "W0000 00:00:1795502244.3   18529 some_kernel.cc:9] a warning\n"
    "E0000 00:00:1795502246.375250   18529 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
)
KEPT = (
    "E0000 00:00:1795502246.4   18529 op_kernel.cc:1] a real error\n"
    "/x/site-packages/keras/__init__.py:3: UserWarning: a Python warning\n"
)


def test_backend_start_up_lines_pass_as_tf_cpp_min_log_level_asks():
    from harness.core.backend import passed_on

    lines = (NOISE + KEPT).splitlines(keepends=True)
    assert [line for line in lines if passed_on(line, 2)] == KEPT.splitlines(keepends=True)
    assert all(passed_on(line, 0) for line in lines)
    assert not any(passed_on(line, 3) for line in NOISE.splitlines(keepends=True))
    assert passed_on("W0000 00:00:1.0   1 some_kernel.cc:9] a warning\n", 1)


def test_start_backend_holds_back_what_native_code_writes_to_stderr(monkeypatch, capfd):
    import harness.core.backend as backend

    def describe():
        os.write(2, (NOISE + KEPT).encode())
        return "described"

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setattr(backend, "_describe_devices", describe)
    assert backend.start_backend() == "described"
    err = capfd.readouterr().err
    assert err == KEPT


def test_start_backend_passes_everything_on_when_the_backend_fails(monkeypatch, capfd):
    import harness.core.backend as backend

    def describe():
        os.write(2, NOISE.encode() + b"ImportError detail from native code\n")
        raise ImportError("libcudart.so: cannot open shared object file")

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setattr(backend, "_describe_devices", describe)
    with pytest.raises(ImportError, match="libcudart"):
        backend.start_backend()
    assert capfd.readouterr().err == NOISE + "ImportError detail from native code\n"


def test_a_run_names_its_backend_and_devices_and_shows_no_start_up_noise(tmp_path):
    """In a fresh process, as a user runs it: the real backend's start-up lines stay hidden."""
    import keras

    study = tmp_path / "tiny.toml"
    study.write_text(tiny_study_text(name="tiny", trials=1))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(study), "--results", str(tmp_path / "r")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Keras {keras.__version__} on {keras.backend.backend()}: " in done.stderr  # then the GPUs, or "CPU only"
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "cuInit", "cudart_stub"):
        assert noise not in done.stderr
