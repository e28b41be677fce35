"""The layers of the core, as pyproject.toml's import-linter contracts write them down."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint).exists():
        pytest.skip("needs import-linter: pip install -e '.[test]'")
    return lint


def test_no_package_imports_a_higher_layer_serving_imports_no_training_and_there_are_no_cycles():
    done = subprocess.run([_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _contracts() -> list[dict]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_every_package_and_module_of_the_core_is_in_a_layer_of_at_most_eight():
    """A new package or module must be placed in the contract, or the contract would not check it."""
    layers = _contracts()[0]["layers"]
    assert len(layers) <= 8
    placed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    children = {p.stem for p in (ROOT / "harness").glob("*.py") if p.stem != "__init__"}
    children |= {p.parent.name for p in (ROOT / "harness").glob("*/__init__.py")}
    assert children - placed == set(), "packages or modules outside every layer"


def test_the_contract_would_catch_serving_importing_training(tmp_path):
    """The forbidden contract is live: a copy of the package where predict imports training breaks it."""
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "harness", copy / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    predict = copy / "harness" / "serving" / "predict.py"
    predict.write_text(predict.read_text() + "\nfrom harness.training import train  # noqa\n")
    done = subprocess.run([_lint_imports(), "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert done.returncode != 0 and "harness.serving is not allowed to import harness.training" in done.stdout, done.stdout[-3000:]
