"""Study files: every user mistake is one clear line with file, key and a suggestion; exit code 2."""

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.cli import main
from harness.config.study import TRAIN_KEYS, CVConfig, FineTune, TrainConfig, load_study
from harness.errors import HarnessError
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


def _replace(old: str, new: str, text: str | None = None) -> str:
    text = tiny_study_text() if text is None else text
    assert old in text, old
    return text.replace(old, new, 1)


def _train(setting: str) -> str:
    return _replace("batch_size = 8", f"batch_size = 8\n{setting}")


_HEAD = tiny_study_text().split("[[candidates]]")[0]
# Each line exactly as the hand-written checks of harness 0.1 worded it: the pydantic schema's
# errors are translated back into these (file, dotted key, what was expected, did-you-mean).
EXACT_MESSAGES = {
    "top-level key": (
        _replace("[search]", "[serch]"),
        "serch: unknown key 'serch'. Did you mean 'search'? Allowed here: study, dataset, candidates, cv, train, search, metrics, report.",
    ),
    "table that is no table": ("study = 3\n" + _HEAD.replace('[study]\nname = "tiny"\nseed = 7\n', ""), "study: expected a table, got 3."),
    "missing table": ("[[candidates]]\nmodel = 'cnn5'\n", "dataset: missing key; this key is required."),
    "no candidates": (_HEAD + "candidates = []\n", "metrics.candidates: unknown key 'candidates'. Allowed here: objective, top_k, extra."),
    "study name": (_replace('name = "tiny"', 'name = "a/b"'), 'study.name: "a/b" cannot name a results folder; use letters, digits, - and _.'),
    "dataset parameter key": (
        _replace('name = "synthetic"', 'name = "synthetic"\nclases = 3'),
        "dataset.clases: unknown key 'clases'. Did you mean 'classes'? Allowed here: name, image_size, resize, strict, "
        "near_duplicates, classes, images_per_class, views, locations, noise, seed.",
    ),
    "dataset name missing": (_replace('name = "synthetic"', ""), "dataset.name: missing key; this key is required."),
    "integer parameter": (_replace("classes = 3", "classes = 3.0"), "dataset.classes: expected an integer, got 3.0."),
    "image size": (
        _replace("image_size = [16, 16]", "image_size = [16]"),
        "dataset.image_size: expected [height, width] in pixels, e.g. [224, 224], got [16].",
    ),
    "at least": (_replace("folds = 2", "folds = 1"), "cv.folds: must be at least 2, got 1."),
    "holdout folds": (
        _replace("folds = 2", 'folds = 2\nscheme = "holdout"'),
        'cv.folds: does not apply to cv.scheme = "holdout" (one split); remove it or use "kfold".',
    ),
    "choice": (
        _replace("folds = 2", 'folds = 2\nsmall_classes = "dorp"'),
        "cv.small_classes: unknown value \"dorp\". Did you mean 'drop'? Allowed: error, drop.",
    ),
    "unknown key before a bad value": (
        _replace("folds = 2", 'folds = "x"\nfold = 3'),
        "cv.fold: unknown key 'fold'. Did you mean 'folds'? Allowed here: folds, repeats, seed, stratified, grouped, "
        "small_classes, scheme, validation_fraction, ratios, train_split, valid_split, test, outer.",
    ),
    "sub-table that is no table": (_train("early_stopping = 3"), "train.early_stopping: expected a table, got 3."),
    "sub-table key": (
        _train("early_stopping = { patiense = 3 }"),
        "train.early_stopping.patiense: unknown key 'patiense'. Did you mean 'patience'? Allowed here: monitor, "
        "patience, validation_fraction, top_k.",
    ),
    "true, false or a string": (_train("jit_compile = 1"), "train.jit_compile: expected true or false or a string, got 1."),
    "true, false or auto": (_train('jit_compile = "yes"'), 'train.jit_compile: expected true, false or "auto", got "yes".'),
    "number": (_train("learning_rate = true"), "train.learning_rate: expected a number, got true."),
    "augment range": (_train("augment = { saturation = 2.0 }"), "train.augment.saturation: must be between 0 and 1, got 2.0."),
    "fine-tune": (
        _train("fine_tune = { from_layer = 120, last = 3 }"),
        "train.fine_tune: give from_layer or last, not both (neither unfreezes the whole backbone).",
    ),
    "list item": (_replace("top_k = [1, 2, 5]", "top_k = [1, true]"), "metrics.top_k[1]: expected a whole number k >= 1, got true."),
    "registered metric": (
        _replace("top_k = [1, 2, 5]", 'top_k = [1]\nextra = ["f1_macr"]'),
        "metrics.extra[0]: unknown metric 'f1_macr'. Available: balanced_accuracy, macro_f1. (`harness plugins` lists them.)",
    ),
    "engine setting": (
        _replace("[search]", '[search]\nengine = "keras_tuner"\nsampler = "tpe"'),
        'search.sampler: is Optuna\'s setting; with engine = "keras_tuner" set search.oracle.',
    ),
    "candidate model": (_replace('model = "cnn5"', "model = 5"), "candidates[0].model: expected a string, got 5."),
    "candidate parameter": (tiny_study_text(extra='filters = "x"'), 'candidates[0].filters: expected a list, got "x".'),
    "candidate training setting": (
        tiny_study_text(extra="fine_tune = { last = 2 }\nfreeze_base = false"),
        "candidates[0].fine_tune: fine-tuning unfreezes a frozen backbone, but freeze_base = false trains it from the start; "
        "drop one of the two.",
    ),
    "second candidate": (
        tiny_study_text() + '\n[[candidates]]\nmodel = "cnn4"\ndropout = "x"\n',
        'candidates[1].dropout: expected a number, got "x".',
    ),
}


@pytest.mark.parametrize("case", list(EXACT_MESSAGES))
def test_each_mistake_is_worded_exactly_as_before(tmp_path, case):
    text, message = EXACT_MESSAGES[case]
    path = _write(tmp_path, text)
    with pytest.raises(HarnessError) as caught:
        load_study(path, get_plugins())
    assert str(caught.value) == f"{path}: {message}"


def test_overrides_are_checked_and_recorded_with_their_source(tiny_study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HarnessError) as caught:
        load_study(tiny_study, get_plugins(), {"image_size": [0, 3]})
    assert str(caught.value) == f"{tiny_study}: image size override: expected [height, width] in pixels, e.g. [224, 224], got [0, 3]."
    monkeypatch.setenv("HARNESS_WEIGHTS", "nope.h5")
    with pytest.raises(HarnessError) as caught:
        load_study(tiny_study, get_plugins())
    assert str(caught.value) == (
        f'{tiny_study}: HARNESS_WEIGHTS / --weights: weights file {tmp_path / "nope.h5"} not found; give "imagenet", '
        '"none" or an existing file.'
    )
    monkeypatch.setenv("HARNESS_WEIGHTS", "None")
    study = load_study(tiny_study, get_plugins(), {"epochs": 1, "image_size": 20})
    assert study.overrides == {
        "epochs": {"value": 1, "from": "--epochs"},
        "image_size": {"value": 20, "from": "--image-size"},
        "weights": {"value": "none", "from": "$HARNESS_WEIGHTS"},
    }
    assert study.train.weights == "none" and study.candidates[0].image_size == (20, 20)
    assert load_study(tiny_study, get_plugins(), {"weights": "imagenet"}).train.weights == "imagenet"  # the command line wins


def test_code_builds_the_tables_as_before_and_gets_the_same_checks():
    train = TrainConfig(epochs=2, learning_rate=1, fine_tune=FineTune(last=2))
    assert train.learning_rate == 1.0 and isinstance(train.learning_rate, float) and train.total_epochs == 12
    smaller = dataclasses.replace(train, batch_size=4)
    assert smaller.batch_size == 4 and smaller.fine_tune == FineTune(last=2) and train.batch_size == 32
    assert CVConfig(scheme="holdout").folds == 1 and CVConfig(folds=5, seed=1).seed == 1
    assert TRAIN_KEYS[:3] == ("epochs", "batch_size", "optimizer")
    with pytest.raises(ValidationError, match="Did you mean 'adam'"):
        TrainConfig(optimizer="adm")
    with pytest.raises(ValidationError, match="freeze_base = false"):
        TrainConfig(freeze_base=False, fine_tune=FineTune())
    with pytest.raises(ValidationError):
        CVConfig(folds=1)
