"""The plugin manager: hook specs, built-in plugins, entry points, and the registries they fill."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from harness import hookspecs
from harness.core import settings
from harness.core.settings import BLOCK_ENV, DISABLE_AUTOLOAD_ENV
from harness.errors import HarnessError
from harness.registry import Registry
from harness.specs import DatasetSpec, MetricSpec, ModelSpec

ENTRY_POINT_GROUP = "harness"
# $HARNESS_DISABLE_PLUGIN_AUTOLOAD (1/true/yes) loads no third-party plugins from entry points;
# $HARNESS_BLOCK_PLUGINS (comma-separated plugin names, built-in or entry-point) are not registered.
# Both are read in harness.core.settings.

#: Built-in plugins, registered through the same hooks as third-party ones.
BUILTIN_PLUGINS = {
    "builtin-metrics": "harness_plugins.metrics",
    "synthetic": "harness_plugins.datasets.synthetic",
    "folder": "harness_plugins.datasets.folder",
    "rocks": "harness_plugins.datasets.rocks",
    "minerals": "harness_plugins.datasets.minerals",
    "gems": "harness_plugins.datasets.gems",
    "sports": "harness_plugins.datasets.sports",
    "conus": "harness_plugins.datasets.conus",
    "cnn5": "harness_plugins.models.cnn5",
    "cnn4": "harness_plugins.models.cnn4",
    "vgg16": "harness_plugins.models.vgg16",
    "resnet50": "harness_plugins.models.resnet50",
    "xception": "harness_plugins.models.xception",
    "xception_location": "harness_plugins.models.xception_location",
    "mobilenetv2": "harness_plugins.models.mobilenetv2",
    "applications": "harness_plugins.models.applications",
    "efficientnet-lite": "harness_plugins.models.efficientnet_lite",
    "summary-report": "harness_plugins.reports.summary",
    "html-report": "harness_plugins.reports.html",
    "mlflow": "harness_plugins.reports.mlflow",
}


@dataclass
class Plugins:
    """A plugin manager and the registries built from it."""

    manager: pluggy.PluginManager
    datasets: Registry[DatasetSpec] = field(default_factory=lambda: Registry("dataset"))
    models: Registry[ModelSpec] = field(default_factory=lambda: Registry("model"))
    metrics: Registry[MetricSpec] = field(default_factory=lambda: Registry("metric"))

    @property
    def hook(self):
        return self.manager.hook

    def source(self, plugin_name: str) -> str:
        """'built-in', or the distribution and version an entry-point plugin came from."""
        if plugin_name in BUILTIN_PLUGINS:
            return "built-in"
        plugin = self.manager.get_plugin(plugin_name)
        for loaded, dist in self.manager.list_plugin_distinfo():
            if loaded is plugin:
                return f"{dist.project_name} {dist.version}"
        return "registered at run time"

    def registrations(self, plugin_name: str) -> dict[str, list[str]]:
        """What one plugin registered, by kind."""
        found: dict[str, list[str]] = {}
        for kind, registry in (("datasets", self.datasets), ("models", self.models), ("metrics", self.metrics)):
            names = [n for n in registry.names() if registry.owner(n) == plugin_name]
            if names:
                found[kind] = names
        return found


def blocked_plugins() -> set[str]:
    """Plugin names not to register ($HARNESS_BLOCK_PLUGINS)."""
    return set(settings.current().blocked_plugins)


def get_plugins(extra: list[object] | None = None) -> Plugins:
    """Build a plugin manager: specs, built-ins, entry points (unless disabled), then ``extra``."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    blocked = blocked_plugins()
    for name in blocked:
        manager.set_blocked(name)
    for name, module_name in BUILTIN_PLUGINS.items():
        if name not in blocked:
            manager.register(importlib.import_module(module_name), name=name)
    if settings.current().plugin_autoload:
        _load_entry_points(manager)
    for plugin in extra or []:
        manager.register(plugin)
    manager.check_pending()
    plugins = Plugins(manager)
    _fill(plugins)
    return plugins


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    try:
        manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken third-party package must not look like our crash
        broken = _first_broken_entry_point()
        raise HarnessError(
            f"could not load plugin {broken}: {type(exc).__name__}: {exc}. Fix or uninstall it, or "
            f"block it with {BLOCK_ENV}=<name> ({DISABLE_AUTOLOAD_ENV}=1 loads no third-party plugin)."
        ) from exc


def _first_broken_entry_point() -> str:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception:
            return f"'{ep.name}' ({ep.value})"
    return "from an entry point"


def _fill(plugins: Plugins) -> None:
    hooks = (
        (plugins.hook.register_datasets, plugins.datasets, DatasetSpec),
        (plugins.hook.register_models, plugins.models, ModelSpec),
        (plugins.hook.register_metrics, plugins.metrics, MetricSpec),
    )
    for hook, registry, spec_type in hooks:
        for impl in reversed(hook.get_hookimpls()):  # registration order
            specs = impl.function() or []
            for spec in specs:
                if not isinstance(spec, spec_type):
                    raise HarnessError(
                        f"plugin '{impl.plugin_name}' returned {type(spec).__name__} from "
                        f"{hook.name}; expected harness.{spec_type.__name__}."
                    )
                registry.add(spec, impl.plugin_name)
