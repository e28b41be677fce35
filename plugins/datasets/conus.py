"""Conus: ``Conus/<REGION>[/<SUBREGION>]/<species>_<CODE>/NNN-<species>-<RC>-<place>.jpg``.

The label is the species from the folder name (file names do not always repeat it); the
``location`` column is the region, an extra input for models that take one; ``subregion`` is kept
as metadata. A type specimen photographed dorsal and ventral (``…_d.jpg`` / ``…_v.jpg`` or
``-d`` / ``-v``, the ventral numbered the same or one after) is one shell: both views share a group.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from harness import DatasetContext, DatasetSpec, HarnessError, Samples, hookimpl
from harness.toolkit import is_ignored
from harness_plugins.datasets.folder import resolve_root, select, subfolders

_SPECIES = re.compile(r"^(?P<species>.+?)_(?P<code>[A-Z][A-Z0-9_]*)$")
_VIEW = re.compile(r"^(?P<number>\d+)-(?P<name>.+?)[-_](?P<view>[dv])$", re.IGNORECASE)


def species_of(folder: str) -> str:
    """'bartschii_EP' -> 'bartschii', 'ermineus_WEST_AFRICA' -> 'ermineus'."""
    match = _SPECIES.match(folder)
    return match["species"] if match else folder


def scan(root: Path) -> pd.DataFrame:
    """One row per image: id, path, label (species), location (region), subregion."""
    rows = []
    for region in subfolders(root):
        for here, dirs, files in os.walk(region):
            dirs[:] = sorted(d for d in dirs if not is_ignored(d))
            here = Path(here)
            if here == region:
                continue  # files loose in a region folder belong to no species
            middle = here.relative_to(region).parts[:-1]
            for name in sorted(f for f in files if not is_ignored(f)):
                file = here / name
                rows.append({
                    "id": file.relative_to(root).as_posix(),
                    "path": str(file),
                    "label": species_of(here.name),
                    "location": region.name,
                    "subregion": "/".join(middle),
                })
    return pd.DataFrame(rows, columns=["id", "path", "label", "location", "subregion"])


def view_groups(table: pd.DataFrame) -> pd.Series:
    """Group key per row: a ventral view joins the dorsal view of the same name numbered n or n-1."""
    groups = table["id"].copy()
    folders = table["id"].str.rsplit("/", n=1).str[0]
    for _, rows in table.groupby(folders, sort=False):
        views = {}
        for index, image_id in rows["id"].items():
            match = _VIEW.match(Path(image_id).stem)
            if match:
                views[(match["name"].lower(), int(match["number"]), match["view"].lower())] = index
        for (name, number, view), index in views.items():
            if view != "v":
                continue
            dorsal = views.get((name, number, "d"), views.get((name, number - 1, "d")))
            if dorsal is not None:
                groups[index] = groups[dorsal]
    return groups


def load(params: dict, context: DatasetContext) -> Samples:
    root = resolve_root("conus", params["root"], context)
    table = scan(root)
    if table.empty:
        raise HarnessError(
            f"dataset 'conus': no images in {root}. Expected <REGION>[/<SUBREGION>]/<species>_<CODE>/<image>."
        )
    table = select(table, params, "conus", root)
    table["group"] = view_groups(table)
    return Samples(table)


@hookimpl
def register_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="conus",
            load=load,
            params={"root": "Conus", "classes": [], "exclude": [], "random_classes": 0, "max_per_class": 0, "sample_seed": 0},
            description="Conus/<REGION>[/<SUBREGION>]/<species>_<CODE>/...; label = species, location = region",
        )
    ]
