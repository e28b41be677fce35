"""Leakage grouping and the `harness audit` report."""

from __future__ import annotations

import io
import json
import textwrap

import pandas as pd
from fixtures import image_layouts as layouts
from PIL import Image

from harness.audit import find_leakage
from harness.cli import main
from harness.images import perceptual_hash


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
    assert any("span classes" in n and "a/1 (a)" in n for n in notes)
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
    assert "## Fold balance" in markdown and "## Formats" in markdown


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
