"""`harness validate` and `harness export` under the protocols: a protocol problem is one line and exit 2
(through `validate` and `run`), validate's summary of what the protocol does with the images, and an
export that never trains on the locked test set unless told to, and says so in its model card."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness.workflows.export as export_module
from harness.cli import main
from harness.data import folds as fold_table  # (its test_indices is no pytest test)
from harness.errors import EXIT_USER
from harness.results.records import read_test_records
from harness.search.ids import fold_seed
from harness.workflows.export import _refit_rows, model_card

from conftest import harness_cache, tiny_study_text

DATA = Path(os.environ.get("HARNESS_TEST_DATA", "/nonexistent"))
needs_data = pytest.mark.skipif(
    not (DATA / "sports15").is_dir() or not (DATA / "rocks6").is_dir(),
    reason="set HARNESS_TEST_DATA to the shared datasets folder (../shared/datasets; .ci/run sets it): the protocol errors are "
    "checked on real splits (sports15 has train/valid/test folders, rocks6 none)",
)

FOLDER_STUDY = """
[study]
name = "{name}"
seed = 1

[dataset]
name = "folder"
root = "{root}"
image_size = [16, 16]

[cv]
{cv}

[train]
epochs = 1

[search]
trials = 1

[[candidates]]
model = "cnn5"
"""

#: (name, dataset folder, [cv] lines, what the one error line must say)
PROTOCOL_ERRORS = [
    ("no-such-split", "sports15", 'test = { split = "tests" }', "has no split 'tests'. Did you mean 'test'?"),
    ("given-without-splits", "rocks6", 'scheme = "given"', "gives no split"),
    ("class-out-of-test", "rocks6", "test = { fraction = 0.01 }", "leaves 6 classes out of the test set"),
    ("class-out-of-cv", "rocks6", "test = { fraction = 0.99 }", "leaves 6 classes out of cross-validation"),
    ("list-names-missing-files", "rocks6", 'test = { list = "test.txt" }', "2 lines name no image"),
    ("list-file-missing", "rocks6", 'test = { list = "absent.txt" }', "list file"),
]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One feature and hash cache for the module: the real photos are hashed once, not per test."""
    return tmp_path_factory.mktemp("protocol-cache")


def _folder_study(tmp_path: Path, name: str, root: str, cv: str) -> Path:
    (tmp_path / "test.txt").write_text("Shale/no-such-photo.jpg\nDolomite/nor-this.jpg\n")
    study = tmp_path / f"{name}.toml"
    study.write_text(FOLDER_STUDY.format(name=name, root=root, cv=cv))
    return study


@needs_data
@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("name, root, cv, says", PROTOCOL_ERRORS, ids=[case[0] for case in PROTOCOL_ERRORS])
def test_a_protocol_problem_is_one_line_and_exit_2(command, name, root, cv, says, tmp_path, capsys, monkeypatch,
                                                   shared_cache):
    monkeypatch.setenv("HARNESS_CACHE", str(shared_cache))
    study = _folder_study(tmp_path, name, root, cv)
    extra = ["--results", str(tmp_path / "results")] if command == "run" else []
    assert main([command, str(study), "--data-root", str(DATA), *extra]) == EXIT_USER
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "results" / name / "records.jsonl").exists()  # nothing trained


@needs_data
def test_validate_prints_the_protocol_cv_test_unused_and_notes(tmp_path, capsys, monkeypatch, shared_cache):
    monkeypatch.setenv("HARNESS_CACHE", str(shared_cache))
    study = _folder_study(tmp_path, "given", "sports15", 'scheme = "given"\ntest = { split = "test" }')
    assert main(["validate", str(study), "--data-root", str(DATA)]) == 0
    err = capsys.readouterr().err
    # sports15: 15 sports x (149 train + 5 valid + 5 test); one train photo copies a test photo.
    assert 'protocol: the dataset\'s own split (train on "train", validate on "valid")' in err
    assert "cross-validation: 2309 images" in err
    assert "test set: 75 images (the dataset's split \"test\"), scored once after selection" in err
    assert "unused: 1 image\n" in err
    assert "note: left out of cross-validation: 1 image outside the test set" in err


@needs_data
def test_validate_without_a_test_set_says_so(tmp_path, capsys, monkeypatch, shared_cache):
    monkeypatch.setenv("HARNESS_CACHE", str(shared_cache))
    study = _folder_study(tmp_path, "plain", "rocks6", "folds = 3")
    assert main(["validate", str(study), "--data-root", str(DATA)]) == 0
    err = capsys.readouterr().err
    assert "protocol: 3-fold cross-validation" in err and "cross-validation: 179 images" in err
    assert "test set: none" in err and "unused" not in err


# --- export ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny synthetic study with a locked test set (a quarter of the images), run: (results, cache)."""
    tmp = tmp_path_factory.mktemp("protocol-export")
    study = tmp / "locked.toml"
    text = tiny_study_text(name="locked", trials=1)
    study.write_text(text.replace("folds = 2", "folds = 2\ntest = { fraction = 0.25 }"))
    with harness_cache(tmp / "cache") as cache:
        assert main(["run", str(study), "--results", str(tmp / "r"), "--trials", "1", "--epochs", "1"]) == 0
    return tmp / "r" / "locked", cache


@pytest.fixture
def fits(monkeypatch):
    """Every fit_fold call of the export: its training rows and seed (the fit still runs)."""
    calls = []
    real = export_module.fit_fold

    def recording(spec, dataset, size, params, train, train_idx, val_idx, seed, **kwargs):
        calls.append({"train_idx": np.asarray(train_idx), "seed": seed})
        return real(spec, dataset, size, params, train, train_idx, val_idx, seed=seed, **kwargs)

    monkeypatch.setattr(export_module, "fit_fold", recording)
    return calls


def _folds(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "folds.csv", dtype={"id": str}, keep_default_na=False)


def test_export_refits_on_the_cv_rows_only_the_model_the_test_set_scored(finished, fits, tmp_path, monkeypatch):
    results, cache = finished
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    assert main(["export", str(results), "--out", str(tmp_path / "m")]) == 0
    folds, (record,) = _folds(results), read_test_records(results)
    test_rows = fold_table.test_indices(folds)
    (fit,) = fits
    assert np.array_equal(fit["train_idx"], fold_table.cv_indices(folds))
    assert len(test_rows) and not np.intersect1d(fit["train_idx"], test_rows).size
    # The same rows and seed as the test set's refit of the same configuration.
    assert fit["seed"] == fold_seed(7, record.config_id, -1, -1) and record.train_size == len(fit["train_idx"])
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    protocol, test = info["protocol"], info["test"]
    assert protocol["scheme"] == "kfold" and protocol["folds"] == 2 and protocol["repeats"] == 1
    assert protocol["test"] == {"source": "a seeded 25% share", "size": len(test_rows), "model": "refit"}
    assert protocol["refit_includes_test"] is False and protocol["training_images"] == len(fold_table.cv_indices(folds))
    assert test["n"] == record.n and test["accuracy"] == pytest.approx(record.metrics["accuracy"], abs=1e-6)
    assert test["ci_low"] <= test["accuracy"] <= test["ci_high"] and test["ci_high"] - test["ci_low"] > 0.1
    assert test["config_id"] == info["version"] and test["exported_configuration"] is True
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "## Protocol and locked test set" in card and "Scored by 2-fold cross-validation" in card
    assert f"Test accuracy: **{test['accuracy']:.3f}** (95% CI {test['ci_low']:.3f}–{test['ci_high']:.3f}" in card
    assert "of the exported configuration" in card
    assert "refit on the" in card and "cross-validation images only, not on the test images" in card
    assert "it is the model the test set scored" in card and "including the test images" not in card


def test_include_test_refits_on_the_test_rows_too_and_the_card_says_so(finished, fits, tmp_path, monkeypatch):
    results, cache = finished
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    assert main(["export", str(results), "--include-test", "--out", str(tmp_path / "m")]) == 0
    folds = _folds(results)
    (fit,) = fits
    assert np.array_equal(fit["train_idx"], np.union1d(fold_table.cv_indices(folds), fold_table.test_indices(folds)))
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["protocol"]["refit_includes_test"] is True
    assert info["protocol"]["training_images"] == len(fit["train_idx"])
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert "**The exported model was refit including the test images**" in card
    assert "describes a model trained on less data" in card and "no unseen data is left" in card


def test_the_ensemble_never_trains_on_a_test_row(finished, fits, tmp_path, monkeypatch, capsys):
    results, cache = finished
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    assert main(["export", str(results), "--ensemble", "--include-test"]) == EXIT_USER
    assert "--include-test applies to the refit" in capsys.readouterr().err and not fits
    assert main(["export", str(results), "--ensemble", "--out", str(tmp_path / "m")]) == 0
    test_rows = fold_table.test_indices(_folds(results))
    assert len(fits) == 2 and all(not np.intersect1d(f["train_idx"], test_rows).size for f in fits)
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["protocol"]["refit_includes_test"] is False and info["test"]["n"] == len(test_rows)
    assert "none of them trained on a test image" in (tmp_path / "m" / "MODEL_CARD.md").read_text()


def test_refit_rows_never_include_unused_rows():
    folds = pd.DataFrame({"part": ["cv", "test", "unused", "cv", "test"], "repeat_0": [0, -1, -1, 1, -1]})
    quiet = export_module.Console(quiet=True)
    assert list(_refit_rows(folds, False, quiet)) == [0, 3]
    assert list(_refit_rows(folds, True, quiet)) == [0, 1, 3, 4]


def test_without_a_test_set_the_card_is_as_before():
    """The card of a study without a test set: refit on every image, no protocol section."""
    info = {"name": "s/c", "model": "cnn5", "candidate": "c", "version": "abc", "kind": "refit", "models": ["m"],
            "inputs": {"image": {"size": [16, 16], "resize": "stretch"}}, "exported": "now", "backend": "jax",
            "versions": {"harness": "0", "keras": "3"}, "study_sha256": "0", "params": {}, "classes": ["a", "b"],
            "estimate": {"objective": "accuracy", "mean": 0.5, "std": 0.1, "ci_low": None, "ci_high": None,
                         "folds": 2, "protocol": "2-fold CV"},
            "data": {"dataset": "synthetic", "images": 36},
            "protocol": {"scheme": "kfold", "folds": 2, "repeats": 1, "images": {"cv": 36, "test": 0, "unused": 0},
                         "test": None, "training_images": 36, "refit_includes_test": False},
            "test": None}
    card = model_card(info, None)
    assert "refit on every image of the study with the same recipe" in card
    assert "test" not in card.lower()
