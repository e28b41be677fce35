"""The locked test set with training: no fit ever sees a test row (search folds or the refit), the
test labels change nothing the search records, a kill -9 while scoring it leaves one record, and
one process of several scores it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import harness_cache, tiny_study_text

from harness import specs
from harness.cli import main
from harness.config.study import DatasetConfig
from harness.data.dataset import load_dataset
from harness.data.protocols import take_share
from harness.plugins import get_plugins
from harness.results.records import (
    read_records,
    read_test_predictions,
    read_test_records,
)
from harness.results.storage import ResultStore
from harness.specs import REQUIRED, DatasetContext
from harness.training import fold as fold_module
from harness.workflows import prepare

NAME = "locked"
TRAIN_EXTRA = "early_stopping = { patience = 1 }"  # so every fit also has an early-stopping share


def _study_text() -> str:
    text = tiny_study_text(name=NAME, trials=2).replace("image_size = [16, 16]", "image_size = [24, 24]")
    text = text.replace("folds = 2", 'folds = 2\ntest = { list = "test.txt" }')
    return text.replace("batch_size = 8", f"batch_size = 8\nepochs = 1\n{TRAIN_EXTRA}").replace("epochs = 2\n", "")


def _synthetic():
    plugins = get_plugins()
    params = {k: v for k, v in plugins.datasets.get("synthetic").params.items() if v is not REQUIRED}
    params |= {"classes": 3, "images_per_class": 12, "views": 2}
    config = DatasetConfig("synthetic", (24, 24), params)
    return load_dataset(config, plugins, DatasetContext(Path("."), Path(os.environ["HARNESS_CACHE"]), seed=7))


def _write_study(folder: Path) -> Path:
    """The study and its test list: a third of each class, whole objects (both views)."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = _synthetic()
    chosen = take_share(dataset.labels, dataset.groups, 1 / 3, seed=11)
    (folder / "test.txt").write_text("\n".join(dataset.table["id"][chosen]) + "\n")
    path = folder / f"{NAME}.toml"
    path.write_text(_study_text())
    return path


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class Recorder:
    """Every fold plan (its train, fit and early-stopping rows) and every BatchNormalization
    calibration (the images it computes statistics on) of a run in this process."""

    def __init__(self, monkeypatch):
        self.plans: list[dict] = []
        self.calibrations: list[set[str]] = []
        plan = fold_module.Fold.__dict__["plan"].__func__
        calibration = fold_module.batchnorm_calibration

        def recording_plan(cls, spec, dataset, image_size, params, train, train_idx, seed, **where):
            fold = plan(cls, spec, dataset, image_size, params, train, train_idx, seed, **where)
            self.plans.append({"train": np.array(train_idx), "fit": np.array(fold.fit_idx), "dataset": dataset,
                               "stop": None if fold.stop_idx is None else np.array(fold.stop_idx), "size": image_size})
            return fold

        def recording_calibration(model, inputs, batch_size, seed, **where):
            self.calibrations.append({_digest(image) for image in np.asarray(inputs)})
            return calibration(model, inputs, batch_size, seed, **where)

        monkeypatch.setattr(fold_module.Fold, "plan", classmethod(recording_plan))
        monkeypatch.setattr(fold_module, "batchnorm_calibration", recording_calibration)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One run of the study, every fit recorded: (study file, results folder, recorder)."""
    tmp = tmp_path_factory.mktemp("locked")
    with harness_cache(tmp / "cache"), pytest.MonkeyPatch.context() as patch:
        study = _write_study(tmp / "study")
        recorder = Recorder(patch)
        started = time.perf_counter()
        assert main(["run", str(study), "--results", str(tmp / "r")]) == 0
        print(f"base run: {time.perf_counter() - started:.1f} s")
    return study, tmp / "r" / NAME, recorder


def _test_rows(results: Path) -> np.ndarray:
    return np.flatnonzero(pd.read_csv(results / "folds.csv")["part"].to_numpy() == "test")


def test_no_fit_and_no_calibration_sees_a_test_row(base):
    _, results, recorder = base
    test = set(_test_rows(results))
    folds = pd.read_csv(results / "folds.csv")
    cv = set(np.flatnonzero(folds["part"].to_numpy() == "cv"))
    assert len(test) == 12 and len(cv) == 24
    assert len(recorder.plans) == 2 * 2 + 1  # two trials of two folds, then the refit
    for plan in recorder.plans:
        for rows in (plan["train"], plan["fit"], plan["stop"]):
            assert rows is not None and len(rows) and not test & set(rows.tolist())
    refits = [p for p in recorder.plans if set(p["train"].tolist()) == cv]
    assert len(refits) == 1 and recorder.plans[-1] is refits[0]  # the refit trains on every CV row, last
    for plan in recorder.plans[:-1]:
        assert set(plan["train"].tolist()) < cv
    # BatchNormalization statistics: computed on the fit rows' images, never a test image
    plan = recorder.plans[0]
    images = plan["dataset"].images(tuple(plan["size"]))
    test_images = {_digest(images[r]) for r in test}
    assert len(recorder.calibrations) == len(recorder.plans)
    for seen, plan in zip(recorder.calibrations, recorder.plans):
        assert seen == {_digest(images[r]) for r in plan["fit"]} and not seen & test_images
    records = read_test_records(results)
    assert [r.n for r in records] == [12] and records[0].train_size == 24


def _comparable(record) -> dict:
    row = dataclasses.asdict(record)
    for key in ("finished_at", "fit_seconds"):
        row.pop(key)
    row["history"] = {k: v for k, v in row["history"].items() if "second" not in k and "time" not in k}
    return row


def test_shuffled_test_labels_change_nothing_the_search_records(base, tmp_path, monkeypatch):
    """The planted test: the test rows' labels moved to another class; every fold record (and the
    model scored on the test set) must be the same, only the test score may change."""
    study, results, _ = base
    listed = set((study.parent / "test.txt").read_text().split())
    load = prepare.load_dataset

    def planted(config, plugins, context):
        dataset = load(config, plugins, context)
        dataset.images((24, 24))  # drawn now, from the true labels: only the labels change, not the images
        rows = dataset.table["id"].isin(listed).to_numpy()
        labels = dataset.labels.copy()
        labels[rows] = (labels[rows] + 1) % len(dataset.classes)
        table = dataset.table.copy()
        table.loc[rows, "label"] = [dataset.classes[c] for c in labels[rows]]
        return dataclasses.replace(dataset, table=table, labels=labels)

    monkeypatch.setattr(prepare, "load_dataset", planted)
    started = time.perf_counter()
    assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    print(f"planted run: {time.perf_counter() - started:.1f} s")
    other = tmp_path / "r" / NAME
    mine, theirs = read_records(results / "records.jsonl"), read_records(other / "records.jsonl")
    assert len(mine) == 4
    assert [_comparable(r) for r in theirs] == [_comparable(r) for r in mine]
    # the refit is the same model (same rows, same seed): the same probabilities, other labels
    search = read_test_records(results)[0].search_id
    assert read_test_records(other)[0].search_id == search
    a, b = read_test_predictions(results, search), read_test_predictions(other, search)
    assert np.array_equal(a["rows"], b["rows"]) and np.array_equal(a["rows"], _test_rows(results))
    assert not np.any(a["labels"] == b["labels"])
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)


SLOW_SCORING = (
    "import sys, time, harness.search.final_score as final\n"
    "fit = final.fit_fold\n"
    "def slow(*args, **kwargs):\n"
    "    time.sleep(120)\n"
    "    return fit(*args, **kwargs)\n"
    "final.fit_fold = slow\n"
    "from harness.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _wait_for(log: Path, words: str, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and words in " ".join(log.read_text(errors="replace").split()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no '{words}' before the run ended: {log.read_text(errors='replace')[-2000:]}")


def test_kill_9_while_scoring_the_test_set_then_rerun_stores_one_score(base, tmp_path):
    study, clean, _ = base
    results = tmp_path / "r"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", COLUMNS="400")
    args = ["run", str(study), "--results", str(results)]
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", SLOW_SCORING, *args], env=env, stdout=out, stderr=out)
        try:
            _wait_for(log, "scoring its selected configuration", proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not read_test_records(results / NAME)
    done = subprocess.run([sys.executable, "-m", "harness", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_test_records(results / NAME)
    assert len(records) == 1
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(results / NAME / "optuna.journal")))
    assert len(ResultStore(storage, NAME).test_records([records[0].search_id])) == 1
    # the claim the killed process left was taken over, and released once the score was stored
    assert not [s.study_name for s in storage.get_all_studies() if s.study_name.startswith("harness-claim:")]
    timing = [c for c in pd.read_csv(clean / "leaderboard.csv").columns if "seconds" in c or c.endswith("_at")]
    pd.testing.assert_frame_equal(pd.read_csv(results / NAME / "leaderboard.csv").drop(columns=timing),
                                  pd.read_csv(clean / "leaderboard.csv").drop(columns=timing))


def test_one_of_two_processes_claims_the_test_scoring(tmp_path):
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    one = ResultStore(optuna.storages.JournalStorage(backend), "shared")
    two = ResultStore(optuna.storages.JournalStorage(backend), "shared")
    assert one.claim_test("cnn5-abc", "one", stale_after=1.0)
    assert not two.claim_test("cnn5-abc", "two", stale_after=1.0)
    for _ in range(3):  # the first keeps beating: the second keeps waiting
        time.sleep(0.4)
        one.beat_test_claim("cnn5-abc")
        assert not two.claim_test("cnn5-abc", "two", stale_after=1.0)
    assert two.claim_test("other-search", "two", stale_after=1.0)  # a claim is per search
    time.sleep(1.2)  # the first died: its claim goes stale and is taken over, once
    assert two.claim_test("cnn5-abc", "two", stale_after=1.0)
    assert not one.claim_test("cnn5-abc", "one", stale_after=1.0)


def test_two_stores_on_one_journal_keep_one_test_record(tmp_path):
    backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    one = ResultStore(optuna.storages.JournalStorage(backend), "shared")
    two = ResultStore(optuna.storages.JournalStorage(backend), "shared")
    optuna.create_study(study_name="cnn5-abc", storage=one.storage)
    record = specs.TestRecord(candidate="cnn5", search_id="cnn5-abc", config_id="c1", model="refit", outer=None, n=2,
                              metrics={"accuracy": 0.5}, cv_score=0.6, configurations=2, params={}, tuned={},
                              train_size=8, fit_seconds=1.0)
    rows, labels, probabilities = np.array([3, 5]), np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]])
    assert one.append_test(record, rows, labels, probabilities)
    later = dataclasses.replace(record, config_id="c2", metrics={"accuracy": 1.0})
    assert not two.append_test(later, rows, labels, probabilities)  # the second scorer finds it stored
    assert two.get_test("cnn5-abc") == record and two.test_records(["cnn5-abc", "other"]) == [record]
    stored = two.test_predictions("cnn5-abc")
    assert stored["rows"].tolist() == [3, 5] and np.allclose(stored["probabilities"], probabilities)
