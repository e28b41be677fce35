"""The built-in plugins use only the public API, as a third-party plugin must: no harness internals."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PLUGINS_DIR = Path(__file__).resolve().parents[1] / "plugins"
#: What every plugin may import from harness (harness.toolkit's modules included).
PUBLIC = ("harness", "harness.specs", "harness.hookspecs", "harness.errors", "harness.toolkit")
#: What reporter plugins may import besides.
REPORTING = ("harness.reports.api",)


def harness_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import of a harness module, at any depth (inside functions too)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "harness":  # `from harness import data` imports a module too
                found += [(node.lineno, f"harness.{a.name}") for a in node.names if a.name in harness_modules()]
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "harness" or name.startswith("harness.")]


def harness_modules() -> set[str]:
    """The names of harness's modules and packages (``from harness import <one of them>``)."""
    root = Path(__file__).resolve().parents[1] / "harness"
    return {p.stem for p in root.glob("*.py")} | {p.parent.name for p in root.glob("*/__init__.py")}


def allowed(module: str, plugin: Path) -> bool:
    public = PUBLIC + (REPORTING if plugin.parent.name == "reports" else ())
    return module in public or module.startswith("harness.toolkit.")


def plugin_modules() -> list[Path]:
    return sorted(PLUGINS_DIR.rglob("*.py"))


@pytest.mark.parametrize("plugin", plugin_modules(), ids=lambda p: str(p.relative_to(PLUGINS_DIR)))
def test_plugin_imports_only_the_public_api(plugin):
    tree = ast.parse(plugin.read_text(), filename=str(plugin))
    private = [f"line {line}: {name}" for line, name in harness_imports(tree) if not allowed(name, plugin)]
    assert not private, f"{plugin.name} imports harness internals: {private}"


def test_the_check_sees_an_internal_import(tmp_path):
    source = "from harness import hookimpl\ndef f():\n    from harness.data.images import is_ignored\n"
    names = [name for _, name in harness_imports(ast.parse(source))]
    assert names == ["harness", "harness.data.images"]
    assert [n for _, n in harness_imports(ast.parse("from harness import hookimpl, data"))] == ["harness.data", "harness"]
    assert not allowed("harness.data", PLUGINS_DIR / "datasets" / "x.py")
    assert not allowed("harness.data.images", PLUGINS_DIR / "datasets" / "x.py")
    assert not allowed("harness.reports.api", PLUGINS_DIR / "datasets" / "x.py")
    assert allowed("harness.reports.api", PLUGINS_DIR / "reports" / "x.py")
    assert allowed("harness.toolkit.backbones", PLUGINS_DIR / "models" / "x.py")
    assert not allowed("harness.training", PLUGINS_DIR / "models" / "x.py")


def test_toolkit_import_does_not_load_keras():
    import subprocess

    code = "import sys, harness.toolkit; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_toolkit_exports_every_documented_name():
    import harness.toolkit as toolkit

    for name in toolkit.__all__:
        assert getattr(toolkit, name) is not None
        assert f"``{name}" in toolkit.__doc__, f"{name} is exported but not in the toolkit's reference"
