"""Leakage grouping and the `harness audit` report."""

from __future__ import annotations

import io
import json
import os
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from fixtures import image_layouts as layouts
from fixtures.image_layouts import photo_like
from PIL import Image

from harness.data.audit import find_leakage
from harness.cli import main
from harness.config.study import CVConfig, DatasetConfig
from harness.data.dataset import HASH_COLUMNS, load_dataset
from harness.data.folds import make_folds
from harness.data.hashing import perceptual_hash
from harness.data.probes import probe_file
from harness.plugins import get_plugins
from harness.specs import DatasetContext


def _table(rows):
    return pd.DataFrame(rows, columns=["id", "label", "group", "hash", "phash"])


def test_exact_near_and_copy_groups_are_joined():
    base = layouts.noise("base", size=16).resize((64, 64), Image.Resampling.BICUBIC)  # photo-like: smooth
    buffer = io.BytesIO()
    base.resize((48, 48)).save(buffer, format="JPEG", quality=70)
    resized = Image.open(buffer).convert("RGB")
    ph = {name: perceptual_hash(img) for name, img in
          {"base": base, "resized": resized, "x": layouts.noise("x", 32), "y": layouts.noise("y", 32)}.items()}
    table = _table([
        ("a/1", "a", "a/1", "h1", ph["base"]),
        ("a/2", "a", "a/2", "h1", ph["base"]),      # exact copy of a/1
        ("b/3", "b", "b/3", "h3", ph["resized"]),   # near copy of a/1, in another class
        ("a/4", "a", "copy", "h4", ph["x"]),        # the plugin's own group: a/4 and a/5
        ("a/5", "a", "copy", "h5", ph["y"]),
        ("b/6", "b", "b/6", "h6", perceptual_hash(layouts.noise("z", 32))),
    ])
    leakage = find_leakage(table, 0.08)
    assert leakage.exact == [["a/1", "a/2"]]
    assert [(a, b) for a, b, _ in leakage.near] == [("a/1", "b/3")]
    assert leakage.copies == [["a/4", "a/5"]]
    groups = leakage.groups.tolist()
    assert groups[0] == groups[1] == groups[2] == "a/1" and groups[3] == groups[4] == "copy" and groups[5] == "b/6"
    notes = leakage.notes(dict(zip(table["id"], table["label"])))
    assert any("across classes" in n and "a/1 (a)" in n for n in notes)
    assert find_leakage(table, 0).near == []  # 0 turns near duplicates off; exact ones stay joined


def test_audit_of_a_broken_folder_names_every_problem(tmp_path, capsys):
    root = layouts.broken_folder(tmp_path / "broken")
    (root / "plain" / "copy.jpg").write_bytes((root / "plain" / "000.jpg").read_bytes())
    (root / "more" / "stolen.jpg").write_bytes((root / "plain" / "001.jpg").read_bytes())
    code = main(["audit", str(root), "--results", str(tmp_path / "results"), "--folds", "2"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.out + out.err
    report = json.loads((tmp_path / "results" / "broken" / "audit.json").read_text())
    markdown = (tmp_path / "results" / "broken" / "audit.md").read_text()
    skipped = {p.split("/")[-1]: r for p, r in ((s["path"], s["reason"]) for s in report["skipped"])}
    for name, (_, outcome) in layouts.ODD_FILES.items():
        if outcome not in ("ok", "ignored"):
            assert outcome.lower() in skipped[name].lower()
            assert name in markdown
    assert len(report["skipped"]) == 5
    exact = {tuple(e["files"]): e for e in report["exact_duplicates"]}
    assert ("plain/000.jpg", "plain/copy.jpg") in exact
    assert exact[("more/stolen.jpg", "plain/001.jpg")]["cross_class"]
    assert any("across classes" in p and "stolen" in p for p in report["problems"])
    assert report["folds"]["groups_split_across_folds"] == 0
    assert report["counts"]["odd"]["total"] == 14
    assert "## Fold balance" in markdown and "## Images per format" in markdown


def test_audit_of_a_study_file_uses_its_dataset_and_folds(tmp_path, capsys):
    layouts.rocks_layout(tmp_path / "data" / "rocks")
    study = tmp_path / "rocks.toml"
    study.write_text(textwrap.dedent("""
        [study]
        name = "rocks-audit"
        [dataset]
        name = "rocks"
        [cv]
        folds = 3
        [[candidates]]
        model = "cnn5"
    """))
    code = main(["audit", str(study), "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "results" / "rocks-audit" / "audit.json").read_text())
    assert report["splits"] == ["test", "train", "valid"]
    assert len(report["copy_groups"]) == 6 * 4 and all(len(g["files"]) == 3 for g in report["copy_groups"])
    assert len(report["folds"]["per_class"]["Tezontle"]) == 3
    assert report["folds"]["groups_split_across_folds"] == 0


def test_audit_of_a_locked_test_set_names_its_copies_left_out_of_cv(tmp_path, capsys):
    """A test photo copied into train (as exports and scrapes do): with the test split locked, the
    copy is left out of CV, and the audit says so and counts it."""
    root = layouts.rocks_layout(tmp_path / "data" / "rocks")
    test_photo = sorted((root / "test").rglob("*.jpg"))[0]
    (root / "train" / test_photo.parent.name / "copy-of-a-test-photo.jpg").write_bytes(test_photo.read_bytes())
    study = tmp_path / "rocks.toml"
    study.write_text('[study]\nname = "rocks-test"\n[dataset]\nname = "rocks"\n[cv]\nfolds = 3\n'
                     'test = { split = "test" }\n[[candidates]]\nmodel = "cnn5"\n')
    code = main(["audit", str(study), "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "results" / "rocks-test" / "audit.json").read_text())
    folds = report["folds"]
    assert folds["columns"] == ["fold 0", "fold 1", "fold 2", "test", "unused"]
    assert folds["parts"]["unused"] == 1 and folds["parts"]["test"] == len(list((root / "test").rglob("*.jpg")))
    assert any("left out of cross-validation" in p and "copy or nearly copy a test image" in p for p in report["problems"])
    assert folds["groups_split_across_folds"] == 0


def test_audit_with_a_holdout_split(tmp_path, capsys):
    layouts.class_folders(tmp_path / "data" / "set", {"a": 10, "b": 10})
    study = tmp_path / "holdout.toml"
    study.write_text('[dataset]\nname = "folder"\nroot = "set"\n[cv]\nscheme = "holdout"\n[[candidates]]\nmodel = "cnn5"\n')
    code = main(["audit", str(study), "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "results" / "holdout" / "audit.json").read_text())
    assert report["folds"]["columns"] == ["validation", "train only"]


def test_audit_reports_classes_too_small_for_the_folds(tmp_path, capsys):
    layouts.class_folders(tmp_path / "tiny", {"a": 6, "b": 2})
    code = main(["audit", str(tmp_path / "tiny"), "--results", str(tmp_path / "results"), "--folds", "3"])
    assert code == 0
    report = json.loads((tmp_path / "results" / "tiny" / "audit.json").read_text())
    assert "'b' (2 images)" in report["folds"]["error"]


def test_audit_of_a_missing_folder_is_one_line(tmp_path, capsys):
    code = main(["audit", str(tmp_path / "nowhere.toml")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "nowhere.toml" in err


# ---------------------------------------------------------------------------------------------
# Copies rotated or mirrored


DATA = os.environ.get("HARNESS_TEST_DATA")
SHELLS = Path(DATA or ".") / "seashells8" / "Acteon_nakayamai"
T = Image.Transpose


def _save(picture: Image.Image, path: Path, quality: int = 90, orientation: int | None = None) -> str:
    """Write a JPEG (or, for .png, a PNG), with an EXIF orientation tag when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": quality} if path.suffix == ".jpg" else {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation  # 6: shown turned 90° clockwise, 8: counter-clockwise
        options["exif"] = exif.tobytes()
    picture.save(path, **options)
    return path.name


def _probed_table(folder: Path, names: list[str]) -> pd.DataFrame:
    probes = [probe_file(folder / name) for name in names]
    assert all(p.ok for p in probes)
    columns = {column: [getattr(p, column) for p in probes] for column in HASH_COLUMNS}
    return pd.DataFrame({"id": names, "label": "x", "group": names, **columns})


#: case -> (how the copy is made from the original: turn, JPEG quality, EXIF orientation of each file; expected)
COPIES = {
    "exif tag vs none": ((None, 90, None), (None, 90, 6), "same pixels, rotated 90° clockwise"),
    "exif tag vs turned on disk": ((None, 90, 8), (T.ROTATE_90, 90, None), "as is"),
    "rotated 90°, re-encoded": ((None, 90, None), (T.ROTATE_270, 60, None), "rotated 90° clockwise"),
    "mirrored, re-encoded": ((None, 90, None), (T.FLIP_LEFT_RIGHT, 75, None), "mirrored left-right"),
    "rotated 180°": ((None, 90, None), (T.ROTATE_180, 80, None), "rotated 180°"),
    "lossless, mirrored top-bottom": ((None, 0, None), (T.FLIP_TOP_BOTTOM, 0, None), "same pixels, mirrored top-bottom"),
}


@pytest.mark.parametrize("source", ["generated", "photo"])
def test_rotated_and_mirrored_copies_are_joined_and_named(tmp_path, source):
    if source == "photo" and not SHELLS.is_dir():
        pytest.skip("set HARNESS_TEST_DATA to the shared datasets to try a real photo too")
    # originals, and other pictures of one layout (like different shells photographed alike)
    originals = [photo_like(case) for case in COPIES]
    others = [photo_like(f"shell {k}", layout="shells") for k in range(4)]
    if source == "photo":  # ten shells of one species, photographed alike
        shells = [Image.open(SHELLS / f"Acteon_nakayamai_{k}_A.jpg").convert("RGB") for k in range(1, 11)]
        originals, others = shells[:len(COPIES)], shells[len(COPIES):]
    names = []
    for n, (original, (first, second, _)) in enumerate(zip(originals, COPIES.values())):
        for tag, (turn, quality, orientation) in (("a", first), ("b", second)):
            picture = original if turn is None else original.transpose(turn)
            names.append(_save(picture, tmp_path / f"{n}{tag}.{'jpg' if quality else 'png'}", quality, orientation))
    for k, other in enumerate(others):  # each with a mirrored copy: a shell mirrored is not another shell
        names.append(_save(other, tmp_path / f"other{k}.jpg"))
        names.append(_save(other.transpose(T.FLIP_LEFT_RIGHT), tmp_path / f"other{k}m.jpg", quality=70))
    leakage = find_leakage(_probed_table(tmp_path, names))
    group = dict(zip(names, leakage.groups))
    for n, (case, (_, _, expected)) in enumerate(COPIES.items()):
        first, second = names[2 * n], names[2 * n + 1]  # the original and its copy
        assert group[first] == group[second], case
        assert list(group.values()).count(group[first]) == 2, case
        assert leakage.matches_of([first, second])[second].describe() == expected, case
    exact = [set(members) for members in leakage.exact]
    assert {"0a.jpg", "0b.jpg"} in exact and {"5a.png", "5b.png"} in exact
    for k in range(len(others)):  # each other picture joins only its own mirrored copy
        assert list(group.values()).count(group[f"other{k}.jpg"]) == 2
        assert group[f"other{k}.jpg"] == group[f"other{k}m.jpg"]


def _shop(root: Path) -> Path:
    """Shell classes with one copy of each kind: EXIF-rotated, rotated, mirrored into another class."""
    for label in ("cone", "cowrie", "murex"):
        for k in range(4):
            _save(photo_like((label, k)), root / label / f"{k}.jpg")
    _save(photo_like("a"), root / "cone" / "a.jpg")
    _save(photo_like("a"), root / "cone" / "a_tagged.jpg", orientation=6)
    _save(photo_like("b"), root / "cone" / "b.jpg")
    _save(photo_like("b").transpose(T.ROTATE_270), root / "cone" / "b_turned.jpg", quality=60)
    _save(photo_like("c"), root / "cowrie" / "c.jpg")
    _save(photo_like("c").transpose(T.FLIP_LEFT_RIGHT), root / "murex" / "c_mirrored.jpg", quality=75)
    return root


def test_audit_groups_and_names_rotated_and_mirrored_copies(tmp_path, capsys):
    root = _shop(tmp_path / "shop")
    code = main(["audit", str(root), "--results", str(tmp_path / "results"), "--folds", "3"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads((tmp_path / "results" / "shop" / "audit.json").read_text())
    markdown = (tmp_path / "results" / "shop" / "audit.md").read_text()
    [exact] = report["exact_duplicates"]
    assert exact["files"] == ["cone/a.jpg", "cone/a_tagged.jpg"] and exact["rotated_or_mirrored"]
    assert exact["matches"] == {"cone/a_tagged.jpg": "same pixels, rotated 90° clockwise"}
    near = {tuple(item["files"]): item for item in report["near_duplicates"]}
    assert near[("cone/b.jpg", "cone/b_turned.jpg")]["orientation"] == "rotated 90° clockwise"
    mirrored = near[("cowrie/c.jpg", "murex/c_mirrored.jpg")]
    assert mirrored["orientation"] == "mirrored left-right" and mirrored["cross_class"] and mirrored["rotated_or_mirrored"]
    assert len(near) == 2
    crossing = "near duplicate across classes ['cowrie', 'murex']: cowrie/c.jpg = murex/c_mirrored.jpg (mirrored left-right)"
    assert crossing in report["problems"]
    assert "| cone/a.jpg = cone/a_tagged.jpg | same pixels, rotated 90° clockwise |" in markdown
    assert "| cowrie/c.jpg = murex/c_mirrored.jpg | mirrored left-right |" in markdown
    assert "1 exact-duplicate set (1 rotated or mirrored) and 2 near-duplicate pairs (2 rotated or mirrored)" in markdown
    assert report["folds"]["groups_split_across_folds"] == 0

    plugins = get_plugins()
    config = DatasetConfig("folder", None, dict(plugins.datasets.get("folder").params) | {"root": str(root)})
    dataset = load_dataset(config, plugins, DatasetContext(root, tmp_path / "cache", seed=0))
    assert any("across classes (1 rotated or mirrored)" in note and "mirrored left-right" in note for note in dataset.notes)
    sets = [["cone/a.jpg", "cone/a_tagged.jpg"], ["cone/b.jpg", "cone/b_turned.jpg"], ["cowrie/c.jpg", "murex/c_mirrored.jpg"]]
    for seed in range(5):
        folds = make_folds(dataset, CVConfig(folds=3, seed=seed)).set_index("id")["repeat_0"]
        assert all(folds[members].nunique() == 1 for members in sets)


# ---------------------------------------------------------------------------------------------
# What the report says


def _audit(tmp_path, root: Path, capsys, *extra: str) -> tuple[dict, str, str]:
    code = main(["audit", str(root), "--results", str(tmp_path / "results"), "--folds", "2", *extra])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.out + out.err
    folder = tmp_path / "results" / root.name
    return json.loads((folder / "audit.json").read_text()), (folder / "audit.md").read_text(), out.out


def test_audit_counts_formats_per_image(tmp_path, capsys):
    root = layouts.class_folders(tmp_path / "set", {"a": 3, "b": 3})
    (root / "a" / "copy.jpg").write_bytes((root / "a" / "000.jpg").read_bytes())
    layouts.write_image(root / "b" / "pic.png", "png", "PNG")
    report, markdown, _ = _audit(tmp_path, root, capsys)
    assert report["formats"] == {"JPEG RGB": 7, "PNG RGB": 1} and report["images"] == 8  # the copy counts too
    assert "| format and mode | images |" in markdown


def test_audit_names_files_whose_extension_is_another_format(tmp_path, capsys):
    root = layouts.class_folders(tmp_path / "set", {"a": 3, "b": 3})
    layouts.write_image(root / "a" / "really_png.jpg", "p", "PNG")
    layouts.write_image(root / "a" / "really_webp.jpg", "w", "WEBP")
    layouts.write_image(root / "b" / "really_jpeg.png", "j", "JPEG")
    layouts.write_image(root / "b" / "no_extension", "n", "JPEG")
    layouts.write_image(root / "b" / "9. bo", "b", "JPEG")  # as in the minerals set: a suffix, but no image extension
    layouts.write_image(root / "b" / "fine.JPEG", "f", "JPEG")
    report, markdown, _ = _audit(tmp_path, root, capsys)
    misnamed = {m["file"]: (m["extension"], m["content"]) for m in report["misnamed"]}
    assert misnamed == {"a/really_png.jpg": (".jpg", "PNG"), "a/really_webp.jpg": (".jpg", "WEBP"),
                        "b/really_jpeg.png": (".png", "JPEG"), "b/no_extension": ("", "JPEG"), "b/9. bo": ("", "JPEG")}
    assert "a/really_png.jpg: a PNG image named .jpg" in report["problems"]
    assert "b/really_jpeg.png: a JPEG image named .png" in report["problems"]
    assert "b/no_extension: a JPEG image without an image extension" in report["problems"]
    assert "## Files whose extension is not their format" in markdown and "| a/really_webp.jpg | .jpg | WEBP |" in markdown


def test_audit_reports_empty_class_folders_and_nested_or_loose_files(tmp_path, capsys):
    root = layouts.class_folders(tmp_path / "set", {"a": 3, "b": 3})
    (root / "empty").mkdir()
    (root / "hidden_only").mkdir()
    (root / "hidden_only" / ".DS_Store").write_bytes(b"\0")
    layouts.write_image(root / "a" / "extra" / "1.jpg", "n1")
    layouts.write_image(root / "a" / "extra" / "2.jpg", "n2")
    layouts.write_image(root / "b" / "old" / "1.jpg", "n3")
    layouts.write_image(root / "loose.jpg", "loose")
    (root / "README.txt").write_text("notes\n")
    report, markdown, _ = _audit(tmp_path, root, capsys)
    layout = {item["path"]: item["note"] for item in report["layout"]}
    assert layout == {
        "loose.jpg": "an image file outside any class folder: not used",
        "empty/": "an empty class folder: no files, so no class",
        "hidden_only/": "an empty class folder: no files, so no class",
        "a/extra/": "a subfolder of class folder 'a' with 2 files, used as 'a'",
        "b/old/": "a subfolder of class folder 'b' with 1 file, used as 'b'",
    }
    assert report["counts"]["a"]["total"] == 5 and report["classes"] == 2  # which files are used is unchanged
    assert "empty/: an empty class folder: no files, so no class" in report["problems"]
    assert "## Folder layout" in markdown and "| a/extra/ |" in markdown


def test_audit_reports_a_split_layouts_empty_class_folder(tmp_path, capsys):
    root = layouts.class_folders(tmp_path / "set", {"a": 6, "b": 6}, {"train": 0.5, "valid": 0.5})
    (root / "valid" / "c").mkdir()
    layouts.write_image(root / "train" / "b" / "more" / "x.jpg", "x")
    report, _, _ = _audit(tmp_path, root, capsys)
    layout = {item["path"]: item["note"] for item in report["layout"]}
    assert layout == {"valid/c/": "an empty class folder: no files, so no class",
                      "train/b/more/": "a subfolder of class folder 'b' with 1 file, used as 'b'"}


def test_audit_shows_paths_relative_to_the_dataset_root_and_counts_in_words(tmp_path, capsys):
    root = layouts.class_folders(tmp_path / "set", {"a": 3, "b": 3})
    (root / "b" / "broken.jpg").write_text("<html><body>gone</body></html>")
    (root / "a" / "copy.jpg").write_bytes((root / "a" / "000.jpg").read_bytes())
    report, markdown, printed = _audit(tmp_path, root, capsys)
    assert report["skipped"] == [{"path": "b/broken.jpg", "reason": "not an image: an HTML page saved under an image name"}]
    assert "skipped b/broken.jpg: not an image" in report["problems"][0]
    body = markdown.split("\n", 3)[3]  # after the title and the source line
    assert str(tmp_path) not in body
    assert "1 file skipped" in markdown and "1 exact-duplicate set" in markdown
    assert "(s)" not in markdown + printed and "1 images" not in markdown + printed
    assert "1 problem:" in printed


def test_audit_of_a_missing_folder_says_folder_or_study_file(tmp_path, capsys):
    code = main(["audit", str(tmp_path / "nosuchdir")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no such folder or study file:" in err and "nosuchdir" in err
