"""Integration tests on the real photos in ../shared/datasets (found through HARNESS_TEST_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from harness.data.audit import audit
from harness.config.study import CVConfig, DatasetConfig
from harness.data.dataset import load_dataset
from harness.data.folds import make_folds
from harness.plugins import get_plugins
from harness.specs import REQUIRED, DatasetContext

DATA = os.environ.get("HARNESS_TEST_DATA")
pytestmark = pytest.mark.skipif(
    not DATA or not Path(DATA).is_dir(),
    reason="set HARNESS_TEST_DATA to the shared datasets folder (../shared/datasets) to run tests on real images",
)


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    # one cache for the module: each dataset is probed once, as in a real run
    return DatasetContext(Path(DATA or "."), tmp_path_factory.mktemp("cache"), seed=0)


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


def load(plugins, context, name, **params):
    spec = plugins.datasets.get(name)
    merged = {k: v for k, v in spec.params.items() if v is not REQUIRED} | params
    return load_dataset(DatasetConfig(name, None, merged), plugins, context)


@pytest.fixture(scope="module")
def minerals(plugins, context):
    return load(plugins, context, "minerals", classes=[])


@pytest.fixture(scope="module")
def sports(plugins, context):
    return load(plugins, context, "sports", root="sports15")


def test_minerals_every_file_decodes_whatever_its_format_or_name(minerals):
    assert len(minerals.table) == 773 and not minerals.skipped
    assert minerals.table["label"].value_counts().to_dict() == {
        "bornite": 170, "chrysocolla": 162, "malachite": 100, "quartz": 100, "pyrite": 96, "muscovite": 77, "biotite": 68,
    }
    probes = minerals.store.cached(minerals.table["hash"].tolist())
    by_id = {i: probes[h] for i, h in zip(minerals.table["id"], minerals.table["hash"])}
    assert {p.format for p in probes.values()} == {"JPEG", "PNG", "GIF"}
    assert {"RGBA", "P"} <= {p.mode for p in probes.values() if p.format == "PNG"}
    for odd in ("bornite/9. bo", "bornite/42. bo", "chrysocolla/147. geocentral-chrysocolla-roughjpg"):
        assert by_id[odd].format == "JPEG"
    assert max(p.width for p in probes.values()) >= 6000  # the largest photos, decoded in draft mode
    pixels = minerals.images((24, 24))
    assert pixels.shape == (773, 24, 24, 3) and pixels.dtype == np.uint8
    assert pixels.reshape(773, -1).std(axis=1).min() > 0  # no blank arrays


def test_minerals_duplicate_pair_is_found_and_kept_in_one_group(minerals, tmp_path):
    assert ["quartz/0001.jpg", "quartz/0061.jpg"] in minerals.leakage.exact
    group = minerals.table.set_index("id")["group"]
    assert group["quartz/0001.jpg"] == group["quartz/0061.jpg"]
    report = audit(minerals, CVConfig(folds=5), "minerals")
    assert report["folds"]["groups_split_across_folds"] == 0
    assert any(e["files"] == ["quartz/0001.jpg", "quartz/0061.jpg"] for e in report["exact_duplicates"])


def test_sports_splits_and_the_grayscale_image(sports):
    assert len(sports.table) == 2385 and not sports.skipped
    counts = sports.table.groupby(["label", "split"]).size().unstack()
    assert len(counts) == 15 and "formula 1 racing" in counts.index
    assert (counts["train"] == 149).all() and (counts["valid"] == 5).all() and (counts["test"] == 5).all()
    row = sports.table.index[sports.table["id"] == "train/rings/135.jpg"][0]
    assert sports.store.cached([sports.table.at[row, "hash"]])[sports.table.at[row, "hash"]].mode == "L"
    one = sports.store.pixels([sports.table.at[row, "path"]], [sports.table.at[row, "hash"]], (32, 32))[0]
    assert one.shape == (32, 32, 3) and (one[..., 0] == one[..., 1]).all() and (one[..., 1] == one[..., 2]).all()


def test_sports_near_identical_pairs_are_grouped(sports):
    assert not sports.leakage.exact
    labels = dict(zip(sports.table["id"], sports.table["label"]))
    assert len(sports.leakage.near) >= 11  # the dataset's README counts 11 near-identical pairs in train
    assert all(labels[a] == labels[b] for a, b, _ in sports.leakage.near)
    group = sports.table.set_index("id")["group"]
    assert all(group[a] == group[b] for a, b, _ in sports.leakage.near)


def test_seashells_two_views_of_a_specimen_share_a_fold(plugins, context):
    shells = load(plugins, context, "folder", root="seashells8", group_pattern=r"^(.+)_[AB]\.")
    assert len(shells.table) == 160 and shells.table["group"].nunique() == 80  # no false near duplicates
    folds = make_folds(shells, CVConfig(folds=5, seed=0))
    assert (folds.groupby("group")["repeat_0"].nunique() == 1).all()
    assert (folds.groupby("label")["repeat_0"].nunique() == 5).all()  # every species in every fold
    # without the group key, plain stratified folds would put the two views of many shells apart
    loose = make_folds(shells, CVConfig(folds=5, seed=0, grouped=False))
    assert (loose.groupby("group")["repeat_0"].nunique() > 1).sum() > 40
