"""Rocks: a Roboflow classification export (train/valid/test/<class>/...), as the rocks study used it.

Roboflow names each augmented copy ``<stem>_<ext>.rf.<hash>.<ext>``: every copy of one source
photo gets the same group key, so copies never sit on both sides of a fold.
"""

from __future__ import annotations

import re

import pandas as pd

from harness import DatasetContext, DatasetSpec, Samples, hookimpl
from harness_plugins.datasets.folder import PARAMS, load_folder

#: The study's six classes, spelt as in the export.
STUDY_CLASSES = ["Conglomerate", "Dolomitic Limestone", "Limestone", "Sandstone", "Shale (Mudstone)", "Tezontle"]

_ROBOFLOW = re.compile(r"^(?P<stem>.+)_(?P<ext>[A-Za-z0-9]{2,5})\.rf\.[0-9A-Za-z]+\.[A-Za-z0-9]+$")


def roboflow_source(filename: str) -> str | None:
    """'IMG_1_jpg.rf.3fa2.jpg' -> 'IMG_1.jpg' (the photo Roboflow copied), or None for other names."""
    match = _ROBOFLOW.match(filename)
    return f"{match['stem']}.{match['ext']}" if match else None


def roboflow_groups(table: pd.DataFrame) -> pd.Series:
    """Group key per row: class/source photo for Roboflow copies, the image's own id otherwise."""
    sources = table["id"].str.rsplit("/", n=1).str[-1].map(roboflow_source)
    return (table["label"] + "/" + sources).where(sources.notna(), table["id"])


def load(params: dict, context: DatasetContext) -> Samples:
    return load_folder(params, context, "rocks", roboflow_groups)


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="rocks",
            load=load,
            params={**PARAMS, "root": "rocks", "classes": STUDY_CLASSES},
            description="Roboflow export train/valid/test/<class>; augmented copies of one photo share a group",
        )
    ]
