"""What a run says must be true: failed candidates shown, overrides saved, dead models flagged,
validate rejecting what run would reject, output a user can read."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import harness.search.trial as search  # where the search calls fit_fold
from harness.cli import main
from harness.config.study import load_study
from harness.reports.leaderboard import print_leaderboard
from harness.plugins import get_plugins
from harness.results.records import read_records
from harness.training.train import FoldResult

from conftest import tiny_study_text

CNN = 'filters = [4, 4, 4, 4, 4]\ndense = [8]\nbn_momentum = 0.5'


def _study(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _candidates(*tables: str) -> str:
    return "".join(f"\n[[candidates]]\n{t}\n" for t in tables)


def _fake_fit(probabilities):
    """A fit_fold that trains nothing and predicts ``probabilities(n_val, n_classes)``."""

    def fit_fold(spec, dataset, image_size, params, train, train_idx, val_idx, seed, on_epoch=None, cache=None,
                 keeper=None, **_):
        return FoldResult(probabilities(len(val_idx), len(dataset.classes), seed), 0.01, 1)

    return fit_fold


def _random_probabilities(n, k, seed):
    p = np.random.default_rng(seed).random((n, k))
    return p / p.sum(axis=1, keepdims=True)


# --- one failing candidate does not sink the study ----------------------------------------------


def test_a_candidate_that_cannot_run_is_marked_failed_and_the_others_are_ranked(tmp_path, capsys):
    text = tiny_study_text(trials=1) + _candidates(
        'name = "too_small"\nmodel = "mobilenetv2"\nimage_size = [16, 16]\nweights = "none"',
        f'name = "after"\nmodel = "cnn5"\n{CNN}',
    )
    results = tmp_path / "r"
    assert main(["run", str(_study(tmp_path, text)), "--results", str(results)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "1 of 3 candidate(s) failed" in " ".join(captured.err.split())
    out = results / "tiny"
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["candidate"]) == ["cnn5", "after", "too_small"] or list(board["candidate"]) == [
        "after", "cnn5", "too_small"]
    assert list(board["rank"].iloc[:2]) == [1, 2] and pd.isna(board["rank"].iloc[2])
    failed = board.set_index("candidate").loc["too_small"]
    assert failed["status"] == "failed" and "at least 32×32" in failed["error"]
    assert set(board.set_index("candidate").loc[["cnn5", "after"], "status"]) == {"ok"}
    # the candidate after the failing one ran
    assert {r.candidate for r in read_records(out / "records.jsonl")} == {"cnn5", "after"}
    for report in ("leaderboard.md", "report.md"):
        text = (out / report).read_text()
        assert "too_small" in text and "at least 32×32" in text and "FAILED" in text or "Failed" in text
    assert "FAILED" in captured.out


# --- what was run is what the results say ------------------------------------------------------


def test_overrides_are_written_into_the_saved_study_run_file_report_and_leaderboard(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", "none")
    text = tiny_study_text(trials=1) + _candidates('name = "mobile"\nmodel = "mobilenetv2"\nhead = [8]')
    text = text.replace("[train]\n", "[train]\nweights = \"imagenet\"\n")
    path = _study(tmp_path, text)
    results = tmp_path / "r"
    assert main(["run", str(path), "--results", str(results), "--epochs", "1", "--image-size", "32"]) == 0
    out = results / "tiny"
    saved = (out / "study.toml").read_text()
    assert 'weights = "none"' in saved and "epochs = 1" in saved and "imagenet" not in saved.split("\n\n", 1)[1]
    # the saved study, loaded without any override, is the study that ran
    plugins = get_plugins()
    monkeypatch.delenv("HARNESS_WEIGHTS")
    ran = load_study(path, plugins, {"epochs": 1, "image_size": 32, "weights": "none"})
    again = load_study(out / "study.toml", plugins)
    assert [c.fingerprint(again) for c in again.candidates] == [c.fingerprint(ran) for c in ran.candidates]
    info = json.loads((out / "run.json").read_text())
    assert info["overrides"]["weights"] == {"value": "none", "from": "$HARNESS_WEIGHTS"}
    assert info["overrides"]["epochs"] == {"value": 1, "from": "--epochs"}
    report = (out / "report.md").read_text()
    assert "weights = none (from $HARNESS_WEIGHTS)" in report and "epochs = 1 (from --epochs)" in report
    board = pd.read_csv(out / "leaderboard.csv").set_index("candidate")
    assert board.loc["mobile", "base"] == "none, frozen"
    assert json.loads(board.loc["mobile", "config"])["weights"] == "none"
    assert "none, frozen" in (out / "leaderboard.md").read_text()


def test_the_effective_study_holds_every_override(tmp_path):
    text = tiny_study_text(trials=3) + _candidates(
        'name = "tuned"\nmodel = "mobilenetv2"\nweights = "imagenet"\nepochs = 9\nimage_size = [40, 40]\n'
        "fine_tune = { epochs = 7, learning_rate = 1e-5 }",
        'name = "ft_default"\nmodel = "resnet50"\nfine_tune = true',
    )
    path = _study(tmp_path, text)
    plugins = get_plugins()
    overrides = {"trials": 2, "folds": 3, "epochs": 4, "weights": "none", "image_size": 48}
    ran = load_study(path, plugins, overrides)
    saved = _study(tmp_path, ran.effective_toml(), "effective.toml")
    again = load_study(saved, plugins)
    assert again.search.trials == 2 and again.cv.folds == 3
    assert [c.fingerprint(again) for c in again.candidates] == [c.fingerprint(ran) for c in ran.candidates]
    assert {c.image_size for c in again.candidates} == {(48, 48)}
    assert [c.train.fine_tune.epochs for c in again.candidates[1:]] == [4, 4]
    assert "--epochs" in saved.read_text().split("\n\n")[0]


# --- a model that learned nothing is a finding --------------------------------------------------


def test_learned_nothing_flags_constant_predictions_only():
    from harness.evaluation.scores import learned_nothing

    assert "ln 3" in learned_nothing(np.full((5, 3), 1 / 3))
    assert "always class 1" in learned_nothing(np.tile([0.2, 0.5, 0.3], (4, 1)))
    assert learned_nothing(_random_probabilities(6, 3, 0)) is None
    assert learned_nothing(np.full((1, 3), 1 / 3)) is None  # one image says nothing


def test_folds_whose_model_learned_nothing_are_warned_about_and_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(search, "fit_fold", _fake_fit(lambda n, k, seed: np.full((n, k), 1 / k)))
    results = tmp_path / "r"
    assert main(["run", str(_study(tmp_path, tiny_study_text(trials=1))), "--results", str(results)]) == 0
    captured = capsys.readouterr()
    assert "2 of 2 fold(s) learned nothing" in " ".join(captured.err.split())
    out = results / "tiny"
    assert all(r.warnings for r in read_records(out / "records.jsonl"))
    assert "WARNING: 2 of 2 folds learned nothing" in (out / "leaderboard.md").read_text()
    assert "## Folds whose model learned nothing" in (out / "report.md").read_text()
    assert "learned nothing" in captured.out


# --- validate catches what run would reject ----------------------------------------------------


def _validate_fails(tmp_path, capsys, text: str, *expected: str, args: tuple[str, ...] = ()) -> str:
    code = main(["validate", str(_study(tmp_path, text)), *args])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "Traceback" not in err
    for piece in expected:
        assert piece in err, err
    return err


def test_validate_builds_each_candidate_and_names_the_one_below_its_minimum_size(tmp_path, capsys):
    text = tiny_study_text() + _candidates('name = "small"\nmodel = "mobilenetv2"\nweights = "none"')
    _validate_fails(tmp_path, capsys, text, "1 of 2 candidate(s) cannot be built", "small:", "at least 32×32")


def test_validate_names_imagenet_weights_that_cannot_be_fetched(tmp_path, capsys, monkeypatch):
    from keras.src.utils import file_utils

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(fname, origin, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    text = tiny_study_text() + _candidates('name = "pretrained"\nmodel = "mobilenetv2"\nimage_size = [32, 32]')
    _validate_fails(tmp_path, capsys, text, "pretrained:", "ImageNet weights are not in the Keras cache")


def test_an_objective_that_cannot_tell_models_apart_is_refused_by_validate_and_run(tmp_path, capsys):
    text = tiny_study_text().replace("top_k = [1, 2, 5]", 'top_k = [1, 3]\nobjective = "top_3_accuracy"')
    _validate_fails(tmp_path, capsys, text, "top_3_accuracy", "cannot tell models apart", "3 classes")
    assert main(["run", str(tmp_path / "study.toml"), "--results", str(tmp_path / "r")]) == 2
    assert "cannot tell models apart" in capsys.readouterr().err
    assert not (tmp_path / "r" / "tiny" / "records.jsonl").exists()


def test_a_top_k_at_or_above_the_classes_is_a_warning(tiny_study, capsys):
    assert main(["validate", str(tiny_study)]) == 0
    assert "metrics.top_k 5: at or above the 3 classes" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("folds", ["0", "1"])
def test_fewer_than_two_folds_is_a_usage_error(tiny_study, capsys, folds):
    for command in ("validate", "run"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, str(tiny_study), "--folds", folds])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "must be at least 2" in err and "Traceback" not in err


# --- output a user reads ------------------------------------------------------------------------


def test_ctrl_c_shows_only_the_harness_message(tmp_path):
    """Optuna logs a trial that raised KeyboardInterrupt with its traceback; only ours may show."""
    study = _study(tmp_path, tiny_study_text(trials=2))
    code = (
        "import sys, harness.search.trial as search\n"
        "def interrupted(*args, **kwargs):\n    raise KeyboardInterrupt\n"
        "search.fit_fold = interrupted\n"
        "from harness.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "run", str(study), "--results", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 130
    assert "interrupted." in done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert "failed with parameters" not in done.stderr


def test_two_candidates_of_one_study_draw_different_configurations(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "fit_fold", _fake_fit(_random_probabilities))
    text = tiny_study_text(trials=3).replace('model = "cnn5"', 'name = "a"\nmodel = "cnn5"')
    text += _candidates(f'name = "b"\nmodel = "cnn5"\n{CNN}')
    text = text.replace("[search]\n", '[search]\nsampler = "random"\n')
    results = tmp_path / "r"
    assert main(["run", str(_study(tmp_path, text)), "--results", str(results)]) == 0
    drawn = {}
    for r in read_records(results / "tiny" / "records.jsonl"):
        drawn.setdefault(r.candidate, set()).add(r.tuned["learning_rate"])
    assert len(drawn["a"]) == len(drawn["b"]) == 3
    assert not drawn["a"] & drawn["b"]


def _wide_board(candidates: int = 2) -> pd.DataFrame:
    rows = []
    for i in range(candidates):
        row = {"rank": i + 1, "candidate": f"candidate_{i}", "model": "efficientnetv2b0", "status": "ok",
               "base": "imagenet, frozen + fine-tuned", "trials": 10, "complete": 10, "fit_seconds": 12.5,
               "best_params": json.dumps({"learning_rate": 0.001, "dropout": 0.2})}
        for m in ("accuracy", "top_2_accuracy", "top_3_accuracy", "loss", "f1_macro", "balanced_accuracy"):
            row |= {f"{m}_mean": 0.5, f"{m}_std": 0.05}
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("width", [60, 80, 100])
def test_a_narrow_terminal_gets_every_column_in_parts(width):
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=True, color_system=None)
    print_leaderboard(_wide_board(), console, title="wide")
    text = buffer.getvalue()
    tables = [line for line in text.splitlines() if line.startswith(("┏", "┃", "│", "└"))]
    assert max(len(line) for line in tables) <= width
    for header in ("accuracy", "top-2", "top-3", "loss", "f1_macro", "balanced", "trials", "s/fold", "base"):
        assert header in text, header
    assert "…" not in text and "wide (1/" in text
    assert text.count("candidate_0") >= 3  # repeated in each part, and in the notes below


def test_a_piped_leaderboard_is_one_whole_table():
    buffer = io.StringIO()
    print_leaderboard(_wide_board(), Console(file=buffer, width=80), title="wide")
    text = buffer.getvalue()
    assert "(1/" not in text and "…" not in text
    header = next(line for line in text.splitlines() if "accuracy" in line)
    assert all(h in header for h in ("accuracy", "top-3", "balanced", "f1_macro", "s/fold"))


def test_column_groups_keep_the_key_columns_and_drop_nothing():
    from harness.reports.leaderboard import column_groups

    groups = column_groups([2, 10, 11, 11, 11, 11, 11, 6], room=50)
    assert all(g[:2] == [0, 1] for g in groups)
    assert sorted({i for g in groups for i in g}) == list(range(8))
    assert column_groups([2, 10, 200], room=50) == [[0, 1, 2]]  # too wide alone: its own part
