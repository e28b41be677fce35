"""Each dataset plugin on a layout generated in a temporary folder, odd files included."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fixtures import image_layouts as layouts
from PIL import Image

from harness.cli import main
from harness.config.study import CVConfig, DatasetConfig, load_study
from harness.data.dataset import apply_small_class_policy, load_dataset
from harness.errors import HarnessError
from harness.data.folds import make_folds
from harness.plugins import get_plugins
from harness.specs import REQUIRED, DatasetContext

STUDIES = Path(__file__).resolve().parents[1] / "studies"
MANIFEST = Path(os.environ.get("HARNESS_TEST_DATA", "/nonexistent")) / "conus_layout" / "manifest.csv"


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


def load(plugins, name, data_root, cache, strict=False, **params):
    spec = plugins.datasets.get(name)
    merged = {k: v for k, v in spec.params.items() if v is not REQUIRED} | params
    config = DatasetConfig(name, None, merged, strict=strict)
    return load_dataset(config, plugins, DatasetContext(Path(data_root), Path(cache), seed=0))


def test_folder_skips_broken_files_and_names_them(plugins, tmp_path):
    root = layouts.broken_folder(tmp_path / "data" / "broken")
    data = load(plugins, "folder", tmp_path / "data", tmp_path / "cache", root="broken")
    ids = set(data.table["id"])
    for name, (_, outcome) in layouts.ODD_FILES.items():
        if outcome == "ok":
            assert f"odd/{name}" in ids
        elif outcome == "ignored":
            assert f"odd/{name}" not in ids and not any(name in p for p, _ in data.skipped)
        else:
            reason = dict((Path(p).name, r) for p, r in data.skipped)[name]
            assert outcome.lower() in reason.lower()
    assert not any("__MACOSX" in i for i in ids)
    assert data.classes == ["more", "odd", "plain"]
    assert data.images((8, 8)).shape == (len(data.table), 8, 8, 3)


def test_strict_turns_unreadable_files_into_an_error(plugins, tmp_path):
    layouts.broken_folder(tmp_path / "broken")
    with pytest.raises(HarnessError, match=r"unreadable file.*empty\.jpg.*strict"):
        load(plugins, "folder", tmp_path, tmp_path / "cache", strict=True, root="broken")


def test_folder_selects_splits_classes_and_caps(plugins, tmp_path):
    layouts.class_folders(tmp_path / "set", {f"c{i}": 10 for i in range(6)}, {"train": 0.7, "valid": 0.1, "test": 0.2})
    kw = dict(data_root=tmp_path, cache=tmp_path / "cache", root="set")
    everything = load(plugins, "folder", **kw)
    assert len(everything.table) == 60 and set(everything.table["split"]) == {"train", "valid", "test"}
    train = load(plugins, "folder", **kw, splits=["train"])
    assert set(train.table["split"]) == {"train"} and len(train.table) == 42
    subset = load(plugins, "folder", **kw, classes=["c1", "c2", "c3"], exclude=["c2"], max_per_class=4)
    assert subset.classes == ["c1", "c3"] and subset.table["label"].value_counts().tolist() == [4, 4]
    picked = load(plugins, "folder", **kw, random_classes=3, sample_seed=1)
    again = load(plugins, "folder", **kw, random_classes=3, sample_seed=1)
    assert len(picked.classes) == 3 and picked.classes == again.classes
    with pytest.raises(HarnessError, match="'c10'.*Did you mean 'c1'"):
        load(plugins, "folder", **kw, classes=["c10"])
    with pytest.raises(HarnessError, match="splits names 'validation'"):
        load(plugins, "folder", **kw, splits=["validation"])


def test_folder_joins_metadata_and_group_pattern(plugins, tmp_path):
    root = layouts.class_folders(tmp_path / "set", {"a": 4, "b": 4})
    rows = ["path,location,group"] + [f"{c}/{i:03d}.jpg,{'north' if c == 'a' else 'south'},{c}{i // 2}" for c in "ab" for i in range(4)]
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    data = load(plugins, "folder", tmp_path, tmp_path / "cache", root="set", metadata="meta.csv")
    assert data.table["location"].tolist() == ["north"] * 4 + ["south"] * 4
    assert data.table["group"].nunique() == 4 and data.one_hot("location").shape == (8, 2)
    patterned = load(plugins, "folder", tmp_path, tmp_path / "cache", root="set", group_pattern=r"^00([01])")
    assert patterned.table["group"].tolist()[:4] == ["a/0", "a/1", "a/002.jpg", "a/003.jpg"]


def test_missing_root_is_a_clear_error(plugins, tmp_path):
    with pytest.raises(HarnessError, match="does not exist.*--data-root"):
        load(plugins, "minerals", tmp_path, tmp_path / "cache")


def test_rocks_roboflow_copies_share_a_group_and_a_fold(plugins, tmp_path):
    layouts.rocks_layout(tmp_path / "rocks")
    data = load(plugins, "rocks", tmp_path, tmp_path / "cache")
    assert data.classes == sorted(layouts.ROCKS)
    assert "Shale (Mudstone)" in data.classes
    sizes = data.table.groupby("group").size()
    assert sizes.max() == 3 and len(sizes) == 6 * 6
    folds = make_folds(data, CVConfig(folds=3, seed=0))
    assert (folds.groupby("group")["repeat_0"].nunique() == 1).all()


def test_minerals_preset_oddities_and_duplicates(plugins, tmp_path):
    layouts.minerals_layout(tmp_path / "minerals")
    study = load(plugins, "minerals", tmp_path, tmp_path / "cache")
    assert study.classes == ["biotite", "bornite", "chrysocolla"]
    assert "bornite/9. bo" in set(study.table["id"])
    full = load(plugins, "minerals", tmp_path, tmp_path / "cache", classes=[])
    assert full.classes == layouts.MINERALS and not full.skipped
    group = full.table.set_index("id")["group"]
    assert group["quartz/dup.jpg"] == group["quartz/000.jpg"]
    assert any("exact duplicates" in n for n in full.notes)


def test_gems_random_classes_and_small_class_policy(plugins, tmp_path):
    layouts.gems_layout(tmp_path / "gems")
    data = load(plugins, "gems", tmp_path, tmp_path / "cache")
    assert len(data.classes) == len(layouts.GEMS) and set(data.table["split"]) == {"train", "test"}
    with pytest.raises(HarnessError, match="Benitoite"):
        apply_small_class_policy(data, CVConfig(folds=5))
    kept, notes = apply_small_class_policy(data, CVConfig(folds=5, small_classes="drop"))
    assert "Benitoite" not in kept.classes and "Beryl Golden" not in kept.classes and notes
    assert kept.images((4, 4)).shape[0] == len(kept.table)
    ten = load(plugins, "gems", tmp_path, tmp_path / "cache", random_classes=10, sample_seed=42)
    other = load(plugins, "gems", tmp_path, tmp_path / "cache", random_classes=10, sample_seed=7)
    assert len(ten.classes) == 10 and ten.classes != other.classes


def test_sports_splits_spelling_and_grayscale(plugins, tmp_path):
    layouts.sports_layout(tmp_path / "sports")
    data = load(plugins, "sports", tmp_path, tmp_path / "cache")
    assert "formula 1 racing" in data.classes and "canoe slamon" in data.classes
    assert data.table.groupby("split").size().to_dict() == {"test": 15, "train": 76, "valid": 15}
    row = data.table.index[data.table["id"] == "train/rings/135.jpg"][0]
    assert data.images((8, 8))[row].shape == (8, 8, 3)


def test_conus_species_regions_and_views(plugins, tmp_path):
    layouts.conus_layout(tmp_path / "Conus")
    data = load(plugins, "conus", tmp_path, tmp_path / "cache")
    table = data.table.set_index("id")
    assert {"bartschii", "ermineus", "evorai", "flavusalbus", "ventricosus"} <= set(data.classes)
    assert set(table["location"]) == {"EASTERN_ATLANTIC", "EASTERN_PACIFIC", "INDO-PACIFIC", "MEDITERRANEAN"}
    assert table.loc["EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/011-flavusalbus_d.jpg", "subregion"] == "ANGOLA"
    assert table.loc["INDO-PACIFIC/algoensis_SA/007-algoensis-IP-South_Africa.JPG", "label"] == "algoensis"
    pairs = [
        ("EASTERN_PACIFIC/arcuatus_EP/001-arcuatus-EP-Neotype_d.jpg", "EASTERN_PACIFIC/arcuatus_EP/002-arcuatus-EP-Neotype_v.jpg"),
        ("EASTERN_PACIFIC/monilifer_EP/022-monilifer-EP-Lectotype-d.jpg", "EASTERN_PACIFIC/monilifer_EP/022-monilifer-EP-Lectotype-v.jpg"),
        ("EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/011-flavusalbus_d.jpg", "EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/012-flavusalbus_v.jpg"),
        ("EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/021-flavusalbus_d.jpg", "EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/022-flavusalbus_v.jpg"),
    ]
    for dorsal, ventral in pairs:
        assert table.loc[dorsal, "group"] == table.loc[ventral, "group"]
    lone = "EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/013-flavusalbus_d.jpg"
    assert (table["group"] == table.loc[lone, "group"]).sum() == 1
    assert data.one_hot("location").shape == (len(table), 4)


@pytest.mark.skipif(not MANIFEST.is_file(), reason="HARNESS_TEST_DATA (the shared datasets folder) is not set")
def test_conus_at_the_real_scale_from_the_thesis_file_list(plugins, tmp_path):
    relpaths = layouts.conus_manifest(MANIFEST)
    layouts.conus_layout(tmp_path / "Conus", relpaths)
    data = load(plugins, "conus", tmp_path, tmp_path / "cache")
    assert len(data.table) == 1958 and not data.skipped
    counts = data.table["label"].value_counts()
    assert len(counts) == 83 and counts.min() == 10 and counts.max() == 40
    assert data.table["location"].value_counts().to_dict() == {
        "EASTERN_ATLANTIC": 903, "EASTERN_PACIFIC": 699, "INDO-PACIFIC": 316, "MEDITERRANEAN": 40,
    }
    assert (data.table["subregion"] != "").sum() == 723
    folds = make_folds(data, CVConfig(folds=5, seed=0))
    assert (folds.groupby("group")["repeat_0"].nunique() == 1).all()
    assert len(data.table) - data.table["group"].nunique() >= 8  # the dorsal/ventral pairs


@pytest.mark.parametrize("study", ["rocks", "minerals", "gems", "sports", "conus"])
def test_study_file_validates_on_its_fixture_layout(study, tmp_path, capsys):
    layouts.all_layouts(tmp_path / "data")
    code = main([
        "validate", str(STUDIES / f"{study}.toml"), "--data-root", str(tmp_path / "data"), "--folds", "2",
        "--weights", "none",  # validate builds every candidate: ImageNet weights cannot be fetched here
    ])
    assert code == 0, capsys.readouterr().err


def test_dataset_keys_resize_strict_and_near_duplicates_are_validated(plugins, tmp_path):
    def study(extra):
        path = tmp_path / "s.toml"
        path.write_text(textwrap.dedent(f"""
            [dataset]
            name = "folder"
            root = "x"
            {extra}
            [[candidates]]
            model = "cnn5"
        """))
        return load_study(path, plugins)

    config = study('resize = "pad"\nstrict = true\nnear_duplicates = 0.05').dataset
    assert (config.resize, config.strict, config.near_duplicates) == ("pad", True, 0.05)
    assert study("").dataset.resize == "stretch"
    with pytest.raises(HarnessError, match="dataset.resize.*Did you mean 'crop'"):
        study('resize = "crap"')
    with pytest.raises(HarnessError, match="near_duplicates"):
        study("near_duplicates = 0.9")


def test_resize_policy_reaches_the_pixels(plugins, tmp_path):
    root = tmp_path / "set"
    for label in ("a", "b"):
        for i in range(2):
            layouts.write_image(root / label / f"{i}.png", (label, i), "PNG", size=8)
    Image.fromarray(np.full((4, 16, 3), 255, dtype=np.uint8)).save(root / "a" / "wide.png")
    spec = plugins.datasets.get("folder")
    params = {k: v for k, v in spec.params.items() if v is not REQUIRED} | {"root": "set"}
    context = DatasetContext(tmp_path, tmp_path / "cache", 0)
    padded = load_dataset(DatasetConfig("folder", None, params, resize="pad"), plugins, context)
    row = padded.table.index[padded.table["id"] == "a/wide.png"][0]
    assert padded.images((16, 16))[row][:5].max() == 0  # black bars above the wide image
