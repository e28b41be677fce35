"""What each command imports: `harness predict` on a model folder runs where Optuna, scikit-learn and
fcntl cannot be imported (serving loads no search, training or tuning code), and `harness leaderboard`
and `harness report` run without fcntl (file locks through filelock, on every platform)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
    prelude = tmp_path / "prelude"
    prelude.mkdir(exist_ok=True)
    # sitecustomize runs before the command: a module set to None in sys.modules cannot be imported.
    (prelude / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        for name in {blocked!r}:
            sys.modules[name] = None
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(prelude), os.environ.get("PYTHONPATH")])),
           "HARNESS_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


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
