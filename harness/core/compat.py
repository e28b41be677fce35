"""The module names of harness 0.1 (``harness.train``, ``harness.records``, ...), kept importable for a
release so that third-party plugins written against them keep working; each import warns once.

``import harness.records`` gives the very module ``harness.results.records`` (one module object,
not a copy), so monkeypatching either name patches both.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: Old module name -> where it lives now.
MOVED = {
    "harness.augment": "harness.toolkit.augment",
    "harness.backbones": "harness.toolkit.backbones",
    "harness.torch_weights": "harness.toolkit.torch_weights",
    "harness.backend": "harness.core.backend",
    "harness.memory": "harness.core.memory",
    "harness.paths": "harness.core.paths",
    "harness.space": "harness.config.space",
    "harness.images": "harness.data.images",
    "harness.leakage": "harness.data.leakage",
    "harness.folds": "harness.data.folds",
    "harness.audit": "harness.data.audit",
    "harness.train": "harness.training.train",
    "harness.boundary": "harness.training.boundary",
    "harness.features": "harness.training.features",
    "harness.tf_loops": "harness.training.loops",
    "harness.evaluate": "harness.evaluation.scores",
    "harness.stats": "harness.evaluation.stats",
    "harness.evidence": "harness.evaluation.evidence",
    "harness.records": "harness.results.records",
    "harness.storage": "harness.results.storage",
    "harness.leaderboard": "harness.reports.leaderboard",
    "harness.compare": "harness.reports.compare",
    "harness.html_report": "harness.reports.html",
    "harness.tuner_search": "harness.search.tuner",
    "harness.predict": "harness.serving.predict",
    "harness.serve": "harness.serving.http",
    "harness.runner": "harness.workflows.run",
    "harness.export": "harness.workflows.export",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self._own = (module.__spec__, module.__loader__)
        return module

    def exec_module(self, module) -> None:
        # The import system stamped the old name's spec on the module: give it back its own.
        module.__spec__, module.__loader__ = self._own


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds an old module name and hands back the module that replaced it, with a DeprecationWarning."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} moved to {new}; import it from there (the old name goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (idempotent)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())


def forwarding(module: str, moved: dict[str, str] | str):
    """A module ``__getattr__`` (PEP 562) that keeps names which left ``module`` importable from it
    for a release, with a DeprecationWarning. ``moved`` maps each name to the module that holds it
    now, or is one module that holds every name (a package that replaced a 0.1 module of its name).
    The new module is imported only when an old name is asked for, so ``module`` stays light."""

    def __getattr__(name: str):
        target = moved if isinstance(moved, str) else moved.get(name)
        if target is None or name.startswith("__"):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(target), name)
        except AttributeError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
        warnings.warn(f"{module}.{name} moved to {target}.{name}; import it from there "
                      "(the old name goes in the next release)", DeprecationWarning, stacklevel=2)
        return value

    return __getattr__
