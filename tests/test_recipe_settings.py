"""The studies' recipe settings (issue 27): optimizer momentum and decay, the best epoch kept,
which rows steer training, preprocessing per candidate, augmentation probabilities, cnn4/cnn5
padding, BatchNormalization while fine-tuning, fine-tuning to a total epoch count."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.config.study import TrainConfig, load_study
from harness.plugins import get_plugins
from harness.search.ids import search_id

from conftest import tiny_study_text


def _study(tmp_path: Path, train: str = "", candidate: str = "") -> Path:
    text = tiny_study_text().replace("batch_size = 8\n", f"batch_size = 8\n{train}\n", 1)
    path = tmp_path / "study.toml"
    path.write_text(text + candidate)
    return path


def _error(tmp_path, capsys, train: str, *expected: str, candidate: str = "") -> None:
    path = _study(tmp_path, train, candidate)
    code = main(["validate", str(path)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "Traceback" not in err
    for piece in expected:
        assert piece in err, err


@pytest.mark.parametrize(
    "train, expected",
    [
        ('optimizer = "adam"\nmomentum = 0.9', ['train.momentum', 'applies to optimizer = "sgd" or "rmsprop"']),
        ('optimizer = "sgd"\nmomentum = 1.5', ["train.momentum", "below 1"]),
        ("decay = 1e-5\nreduce_lr = true", ["train.decay", "keep one of them"]),
        ('keep_best = { monitor = "val_acuracy" }', ["train.keep_best.monitor", "Did you mean 'val_accuracy'?"]),
        ('validation_data = "scored"', ["train.validation_data", "Did you mean 'scored_fold'?"]),
        ('validation_data = "scored_fold"', ["train.validation_data", "nothing watches"]),
        ("validation_fraction = 0.2\nearly_stopping = true", ["train.validation_fraction", "early_stopping."]),
        ('preprocess = "per_imag"', ["train.preprocess", "Did you mean 'per_image'?"]),
        ("augment = { rotation = 0.1, probability = { rotaton = 0.5 } }",
         ["train.augment.probability", "Did you mean 'rotation'?"]),
        ("augment = { rotation = 0.1, probability = { rotation = 1.5 } }", ["probability.rotation", "between 0 and 1"]),
        ("augment = { rotation = 0.1, probability = { zoom = 0.5 } }", ["probability.zoom", "zoom itself is off"]),
        ("fine_tune = { epochs = 3, total_epochs = 5 }", ["train.fine_tune.total_epochs", "not both"]),
        ("fine_tune = { total_epochs = 2 }", ["fine_tune.total_epochs", "above [train] epochs"]),
        ("fine_tune = { batchnorm_trainabel = true }", ["batchnorm_trainabel", "Did you mean 'batchnorm_trainable'?"]),
        ('early_stopping = { monitor = "val_top_kk" }', ["train.early_stopping.monitor", "val_top_k"]),
    ],
)
def test_recipe_mistakes_are_one_line(tmp_path, capsys, train, expected):
    _error(tmp_path, capsys, train, *expected)


def test_a_candidate_sets_its_own_preprocessing(tmp_path, capsys):
    _error(tmp_path, capsys, "", "candidates[0].preprocess", "Did you mean 'unit'?", candidate='preprocess = "unt"\n')
    path = _study(tmp_path, "", 'preprocess = "unit"\n')
    study = load_study(path, get_plugins())
    assert study.candidates[0].train.preprocess == "unit"


def test_recipe_settings_validate_and_defaults_keep_search_ids(tmp_path):
    plugins = get_plugins()
    plain = load_study(_study(tmp_path), plugins)
    recipe = (
        'optimizer = "rmsprop"\nmomentum = 0.5\ndecay = 1e-5\nvalidation_data = "scored_fold"\npreprocess = "per_image"\n'
        'keep_best = { monitor = "val_top_k", top_k = 2 }\n'
        "augment = { rotation = 0.1, zoom = 0.2, probability = { rotation = 0.5 } }"
    )
    study = load_study(_study(tmp_path, recipe), plugins)
    train = study.candidates[0].train
    assert (train.momentum, train.decay, train.keep_best.top_k) == (0.5, 1e-5, 2)
    assert train.augment.probability == {"rotation": 0.5}
    defaults = (
        'momentum = 0.9\ndecay = 0.0\nvalidation_data = "held_out"\npreprocess = "model"\n'
        "augment = { rotation = 0.1, probability = {} }"
    )
    with_augment = load_study(_study(tmp_path, "augment = { rotation = 0.1 }"), plugins)
    explicit = load_study(_study(tmp_path, defaults.replace("momentum = 0.9\n", "")), plugins)
    assert search_id(explicit, explicit.candidates[0]) == search_id(with_augment, with_augment.candidates[0])
    assert search_id(study, study.candidates[0]) != search_id(plain, plain.candidates[0])
    assert TrainConfig(epochs=3, fine_tune={"total_epochs": 7}).total_epochs == 7
