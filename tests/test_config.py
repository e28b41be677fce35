"""Study files: every user mistake is one clear line with file, key and a suggestion; exit code 2."""

from pathlib import Path

import pytest

from harness.cli import main
from harness.config.study import load_study
from harness.plugins import get_plugins

from conftest import tiny_study_text


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def _fails(tmp_path, capsys, text: str, *expected: str, names_file: bool = True) -> str:
    path = _write(tmp_path, text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    assert not names_file or str(path) in flat.replace(" ", "") or str(path) in flat
    for piece in expected:
        assert piece in flat, flat
    return flat


def test_valid_study_validates(tiny_study, capsys):
    assert main(["validate", str(tiny_study)]) == 0
    assert "ok" in capsys.readouterr().err


def test_syntax_error_names_file_and_line(tmp_path, capsys):
    _fails(tmp_path, capsys, "[study]\nname = \nseed = 1\n", "invalid TOML", "line 2")


def test_misspelt_key_gets_a_suggestion(tmp_path, capsys):
    text = tiny_study_text().replace("epochs = 2", "epocs = 2")
    _fails(tmp_path, capsys, text, "train.epocs", "unknown key 'epocs'", "Did you mean 'epochs'?")


def test_misspelt_section_gets_a_suggestion(tmp_path, capsys):
    text = tiny_study_text().replace("[search]", "[serch]")
    _fails(tmp_path, capsys, text, "unknown key 'serch'", "Did you mean 'search'?")


def test_unknown_model_gets_did_you_mean_and_the_list(tmp_path, capsys):
    text = tiny_study_text(model="cnn6", extra="")
    _fails(tmp_path, capsys, text, "candidates[0].model", "unknown model 'cnn6'", "Did you mean 'cnn5'?", "Available:")


def test_unknown_dataset(tmp_path, capsys):
    text = tiny_study_text().replace('name = "synthetic"', 'name = "synthetc"')
    _fails(tmp_path, capsys, text, "dataset.name", "Did you mean 'synthetic'?")


def test_wrong_type_names_the_dotted_key(tmp_path, capsys):
    text = tiny_study_text().replace("folds = 2", 'folds = "five"')
    _fails(tmp_path, capsys, text, "cv.folds", "expected an integer", '"five"')


def test_missing_required_key(tmp_path, capsys):
    text = tiny_study_text().replace('model = "cnn5"', 'name = "x"')
    _fails(tmp_path, capsys, text, "candidates[0].model", "missing key")


def test_bad_search_space(tmp_path, capsys):
    text = tiny_study_text().replace("log = true }", "log = true, hihg = 3 }")
    _fails(tmp_path, capsys, text, "search.space.learning_rate", "unknown key 'hihg'")


def test_space_for_an_unknown_parameter(tmp_path, capsys):
    text = tiny_study_text().replace("space.learning_rate", "space.learnig_rate")
    _fails(tmp_path, capsys, text, "search.space.learnig_rate", "Did you mean 'learning_rate'?")


def test_unknown_model_parameter(tmp_path, capsys):
    text = tiny_study_text(extra="dropuot = 0.5")
    _fails(tmp_path, capsys, text, "candidates[0].dropuot", "Did you mean 'dropout'?")


def test_objective_must_be_reported(tmp_path, capsys):
    text = tiny_study_text().replace("top_k = [1, 2, 5]", 'top_k = [1]\nobjective = "top_3_accuracy"')
    _fails(tmp_path, capsys, text, "metrics.objective", "top_3_accuracy")


def test_missing_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "no such study file" in capsys.readouterr().err


def test_too_few_images_for_the_folds_is_a_user_error(tmp_path, capsys):
    text = tiny_study_text().replace("folds = 2", "folds = 9")
    _fails(tmp_path, capsys, text, "fewer groups than cv.folds = 9", 'small_classes = "drop"', names_file=False)


def test_bad_command_line_value_exits_2(tiny_study, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tiny_study), "--trials", "zero"])
    assert exit_info.value.code == 2


def test_overrides_and_space_merging(tiny_study):
    study = load_study(tiny_study, get_plugins(), {"trials": 5, "folds": 3, "epochs": 4})
    assert study.search.trials == 5 and study.cv.folds == 3 and study.candidates[0].train.epochs == 4
    assert list(study.candidates[0].space) == ["learning_rate"]


def test_a_fixed_parameter_is_not_tuned(tmp_path):
    text = tiny_study_text(extra="filters = [4, 4, 4, 4, 4]\ndense = [8]\nlearning_rate = 0.01")
    study = load_study(_write(tmp_path, text), get_plugins())
    cand = study.candidates[0]
    assert cand.space == {} and cand.train.learning_rate == 0.01


def test_a_boundary_cache_budget_that_is_no_size_is_one_line(tmp_path, capsys):
    text = tiny_study_text().replace("batch_size = 8", 'batch_size = 8\nboundary_cache_budget = "lots"')
    _fails(tmp_path, capsys, text, "train.boundary_cache_budget", "'lots'", '"20G"')
    for good in ("25%", "20G", "500MiB", "0"):
        path = _write(tmp_path, tiny_study_text().replace("batch_size = 8", f'batch_size = 8\nboundary_cache_budget = "{good}"'))
        assert load_study(path, get_plugins()).train.boundary_cache_budget == good


def test_heartbeat_grace_must_outlast_the_beat(tmp_path, capsys):
    text = tiny_study_text().replace("[search]", "[search]\nheartbeat_seconds = 10\ngrace_seconds = 5")
    _fails(tmp_path, capsys, text, "search.grace_seconds", "longer than search.heartbeat_seconds")
