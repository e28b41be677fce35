"""Named registries of datasets, models and metrics, filled from the plugin hooks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from harness.errors import HarnessError, did_you_mean
from harness.specs import DatasetSpec, MetricSpec, ModelSpec

T = TypeVar("T")


class Registry(Generic[T]):
    """Specs by name, remembering which plugin gave each one."""

    def __init__(self, kind: str):
        self.kind = kind
        self._specs: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def add(self, spec: T, plugin: str) -> None:
        name = getattr(spec, "name", None)
        if not isinstance(name, str) or not name:
            raise HarnessError(f"plugin '{plugin}' registered a {self.kind} without a name: {spec!r}")
        if name in self._specs:
            raise HarnessError(
                f"{self.kind} '{name}' is registered twice: by plugin '{self._owners[name]}' and by "
                f"plugin '{plugin}'. Uninstall or block one of them (HARNESS_BLOCK_PLUGINS={plugin})."
            )
        self._specs[name] = spec
        self._owners[name] = plugin

    def get(self, name: str) -> T:
        try:
            return self._specs[name]
        except KeyError:
            raise HarnessError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        available = ", ".join(sorted(self._specs)) or "none"
        return (
            f"unknown {self.kind} '{name}'.{did_you_mean(name, self._specs)} "
            f"Available: {available}. (`harness plugins` lists them.)"
        )

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[T]:
        return iter(self._specs[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._specs)


class Registries(Protocol):
    """The named registries a study file is checked against (``harness.plugins.Plugins`` is one)."""

    datasets: Registry[DatasetSpec]
    models: Registry[ModelSpec]
    metrics: Registry[MetricSpec]
