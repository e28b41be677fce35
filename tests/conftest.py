"""Shared fixtures: tiny study files that train in seconds on a CPU."""

from __future__ import annotations

import contextlib
import os
import shutil
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_STUDY = """
[study]
name = "{name}"
seed = 7

[dataset]
name = "synthetic"
classes = 3
images_per_class = 12
views = 2
image_size = [16, 16]

[cv]
folds = 2

[train]
epochs = 2
batch_size = 8

[search]
trials = {trials}
space.learning_rate = {{ low = 1e-3, high = 1e-2, log = true }}

[metrics]
top_k = [1, 2, 5]

[[candidates]]
model = "{model}"
{extra}
"""


def tiny_study_text(name: str = "tiny", trials: int = 2, model: str = "cnn5", extra: str = "") -> str:
    if model == "cnn5" and not extra:
        extra = 'filters = [4, 4, 4, 4, 4]\ndense = [8]\nbn_momentum = 0.5'
    return textwrap.dedent(TINY_STUDY).format(name=name, trials=trials, model=model, extra=extra)


def wait_for_records(proc, records_path: Path, lines: int = 1, seconds: float = 240) -> None:
    """Wait until the records file holds ``lines`` records while ``proc`` runs; fails when the run
    finished first (too fast to be cut off mid-run)."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if records_path.exists() and records_path.read_text().count("\n") >= lines:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_study_text())
    return path


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No third-party plugins from the environment leak into a test unless it asks."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_BLOCK_PLUGINS", raising=False)
    monkeypatch.delenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    # A developer's own tracking server never receives the tests' studies (tests/test_mlflow.py starts one).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def headless_chromium():
    """A headless Chromium driven by selenium, or a skip saying what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("needs selenium: pip install -e '.[test]'")
    if not chromium or not driver_path:
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (Debian's binaries, a temporary data folder, a loopback
    port): call it for the URL of a fresh database."""
    import postgres_server

    why = postgres_server.missing()
    if why:
        pytest.skip(why)
    with postgres_server.postgres_server() as new_database:
        yield new_database


#: The demo as the tests run it: the study file as shipped, a shorter search.
DEMO_ARGS = ["--trials", "2", "--epochs", "2"]


@contextlib.contextmanager
def harness_cache(folder: Path):
    """``$HARNESS_CACHE`` set to ``folder`` for a block: for module and session fixtures, which run
    before (and outside) the per-test ``_isolated_env``."""
    previous = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        if previous is None:
            os.environ.pop("HARNESS_CACHE", None)
        else:
            os.environ["HARNESS_CACHE"] = previous


@pytest.fixture(scope="session")
def demo_results(tmp_path_factory) -> Path:
    """studies/demo.toml run once for the whole test run (``DEMO_ARGS``): its results folder, which
    the tests only read (the report's browser tests, the leaderboard-unchanged test, the heat maps).
    Under pytest-xdist the workers share one run: the first makes it under a lock in the run's
    common temporary folder, the others wait and read it (the pattern xdist's docs give)."""
    from filelock import FileLock

    from harness.cli import main

    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    base = tmp_path_factory.getbasetemp().parent if shared else tmp_path_factory.getbasetemp()
    tmp = base / "demo-shared"
    done = tmp / "done"
    with FileLock(str(base / "demo-shared.lock")):
        if not done.is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            root = Path(__file__).resolve().parents[1]
            with harness_cache(tmp / "cache"):
                code = main(["run", str(root / "studies" / "demo.toml"), "--results", str(tmp / "r"), *DEMO_ARGS])
            assert code == 0
            done.write_text("ok")
    return tmp / "r" / "demo"
