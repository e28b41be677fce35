"""Minerals: the Kaggle minerals-identification layout, ``minerals/<mineral>/<file>``.

Seven classes (biotite, bornite, chrysocolla, malachite, muscovite, pyrite, quartz), web-scraped:
mixed formats and files without an image extension. The study used three; ``classes = []``
takes all seven.
"""

from __future__ import annotations

from harness import DatasetContext, DatasetSpec, Samples, hookimpl
from harness_plugins.datasets.folder import PARAMS, load_folder

ALL_CLASSES = ["biotite", "bornite", "chrysocolla", "malachite", "muscovite", "pyrite", "quartz"]
STUDY_CLASSES = ["biotite", "bornite", "chrysocolla"]


def load(params: dict, context: DatasetContext) -> Samples:
    return load_folder(params, context, "minerals")


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="minerals",
            load=load,
            params={**PARAMS, "root": "minerals", "classes": STUDY_CLASSES},
            description="Kaggle minerals <mineral>/<file>; the study's 3 classes by default (classes = [] for all 7)",
        )
    ]
