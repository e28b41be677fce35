"""Gems: the Kaggle gemstones layout, ``train/<class>`` and ``test/<class>`` (87 classes).

The study compared models on a random subset of classes (``random_classes`` from ``sample_seed``);
small classes are common there, so pair it with the study file's ``cv.small_classes`` policy.
"""

from __future__ import annotations

from harness import DatasetContext, DatasetSpec, Samples, hookimpl
from harness_plugins.datasets.folder import PARAMS, load_folder


def load(params: dict, context: DatasetContext) -> Samples:
    return load_folder(params, context, "gems")


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="gems",
            load=load,
            params={**PARAMS, "root": "gems"},
            description="Kaggle gemstones train/test/<class> (87 classes); pick classes or random_classes",
        )
    ]
