"""The benchmark scripts start, and say what is wrong with their input instead of a traceback.

Their figures are printed, not tested (see docs/performance.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("study_benchmark.py", ["--data", "/no/such/sports15"], "no sports15 folder /no/such/sports15/train/"),
        ("study_benchmark.py", ["--model", "resnet50", "--weights", "imagenet"], "use --model efficientnet_lite0"),
        ("pretrained_benchmark.py", ["--data", "/no/such/datasets"], "no folder /no/such/datasets/sports15"),
        ("decode_benchmark.py", ["--data", "/no/such/minerals"], "no folder /no/such/minerals"),
        ("throughput_benchmark.py", ["--models", "resnet5"], "unknown model 'resnet5'"),
        ("scale_benchmark.py", ["--work", str(BENCHMARKS / "scratch")], "inside the repository"),
        ("scale_benchmark.py", ["--sizes", "30", "--classes", "10"], "at least 5 images per class"),
    ],
)
def test_a_benchmark_given_bad_input_says_what_and_stops(script, args, message):
    result = run(script, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_decode_benchmark_with_a_folder_without_images_says_so(tmp_path):
    (tmp_path / "class_a").mkdir()
    (tmp_path / "class_a" / "notes.txt").write_text("not an image")
    result = run("decode_benchmark.py", "--data", str(tmp_path), "--repeat", "1")
    assert result.returncode == 2
    assert "no image files" in result.stderr and "Traceback" not in result.stderr


def test_head_step_benchmark_prints_each_variant():
    import keras

    result = run("head_step_benchmark.py", "--rows", "64", "--epochs", "2", "--fits", "6")
    if keras.backend.backend() != "tensorflow":
        assert result.returncode == 2 and "TensorFlow only" in result.stderr
        return
    assert result.returncode == 0, result.stderr[-2000:]
    for variant in ("arithmetic", "harness: EpochLoops", "raw TensorFlow step, hand-written Adam",
                    "raw TensorFlow step, XLA", "Keras fit"):
        assert variant in result.stdout
    assert "64 rows × 1280 features → Dense 256 → 4, batch 32 (2 steps per epoch)" in result.stdout
    assert "per-step cost beyond the arithmetic" in result.stdout


def test_scale_benchmark_measures_each_size_in_a_child_and_fits_the_growth(tmp_path):
    work, plot = tmp_path / "work", tmp_path / "scale.png"
    result = run("scale_benchmark.py", "--sizes", "20", "40", "--classes", "2", "--side", "16", "--steps", "load",
                 "--work", str(work), "--plot", str(plot))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 20 |" in result.stdout and "| 40 |" in result.stdout and "load + audit peak MB" in result.stdout
    assert "growth exponent, load + audit time:" in result.stdout and "appends" not in result.stdout
    assert plot.stat().st_size > 0 and not work.exists()  # the generated images are removed
