"""Sports: the Kaggle sports-classification layout, ``train|valid|test/<sport>/NNN.jpg``.

100 sports in the full set; the study used the 15 with most training images (the default here).
Class names keep their spaces ("formula 1 racing") and the set's own spelling ("canoe slamon").
"""

from __future__ import annotations

from harness import DatasetContext, DatasetSpec, Samples, hookimpl
from harness_plugins.datasets.folder import PARAMS, load_folder

STUDY_CLASSES = [
    "baseball", "basketball", "canoe slamon", "field hockey", "figure skating women", "football",
    "formula 1 racing", "high jump", "hockey", "nascar racing", "olympic wrestling", "rings",
    "roller derby", "rollerblade racing", "rugby",
]


def load(params: dict, context: DatasetContext) -> Samples:
    return load_folder(params, context, "sports")


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="sports",
            load=load,
            params={**PARAMS, "root": "sports", "classes": STUDY_CLASSES},
            description="Kaggle sports train/valid/test/<sport>; the study's 15 sports by default",
        )
    ]
