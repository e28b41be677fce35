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
        ("views = 2", ["train.views", "need [train.augment]"]),
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


@pytest.mark.parametrize(
    "train, candidate, expected",
    [
        ('optimizer = "sgd"\nmomentum = 0.5', 'space.optimizer = ["sgd", "adam"]\n',
         ["candidates[0].space.optimizer", 'samples optimizer = \'adam\'', 'applies to optimizer = "sgd" or "rmsprop"']),
        ("fine_tune = { total_epochs = 5 }", "space.epochs = { low = 2, high = 6 }\n",
         ["candidates[0].space.epochs", "samples epochs = 6", "above [train] epochs (6)"]),
    ],
)
def test_a_tuned_training_setting_is_checked_against_the_rest_of_the_recipe(tmp_path, capsys, train, candidate,
                                                                             expected):
    _error(tmp_path, capsys, train, *expected, candidate=candidate)
    path = _study(tmp_path, train, candidate.replace('"adam"', '"rmsprop"').replace("high = 6", "high = 4"))
    assert load_study(path, get_plugins()).candidates[0].space  # values that fit load


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
    same = load_study(_study(tmp_path, "", 'padding = "same"\n'), plugins)
    valid = load_study(_study(tmp_path, "", 'pool_padding = "valid"\n'), plugins)
    assert search_id(same, same.candidates[0]) == search_id(plain, plain.candidates[0])
    assert search_id(valid, valid.candidates[0]) != search_id(plain, plain.candidates[0])


# --- how they train -----------------------------------------------------------------------------

import keras  # noqa: E402
import numpy as np  # noqa: E402

from harness import BuildContext  # noqa: E402
from harness.config.study import EarlyStopping, FineTune  # noqa: E402
from harness.training.build import compile_model, make_optimizer  # noqa: E402
from harness.training.fold import SCORED_FOLD_STEERS, _steering_rows  # noqa: E402
from harness.training.train import fit_fold  # noqa: E402
from harness.training.watch import watchers  # noqa: E402

from test_training import TINY, _dataset  # noqa: E402


def test_momentum_and_keras_2_decay():
    assert float(make_optimizer("sgd", 0.1).momentum) == 0.9  # unset: SGD's momentum as before
    assert float(make_optimizer("sgd", 0.1, momentum=0.0).momentum) == 0.0
    assert float(make_optimizer("rmsprop", 0.1, momentum=0.5).momentum) == 0.5
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    compile_model(model, "adam", 0.1, train=TrainConfig(decay=0.5))
    x, y = np.zeros((8, 2), "float32"), np.zeros(8, "int32")
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 4 steps
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1 / (1 + 0.5 * 4))


def _run_epochs(callbacks, model, losses, first_epoch=0):
    """Feed ``callbacks`` one epoch per loss, the model's weight set to the epoch's number."""
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, loss in enumerate(losses, first_epoch):
        model.layers[-1].kernel.assign(np.full((1, 1), float(epoch), "float32"))
        for callback in callbacks:
            callback.on_epoch_end(epoch, {"val_loss": loss, "val_top_k": -loss})
    for callback in callbacks:
        callback.on_train_end()
    return float(model.layers[-1].kernel.numpy()[0, 0])


def test_keep_best_restores_the_best_epoch_and_carries_over_phases():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    best = TrainConfig(keep_best={"monitor": "val_top_k", "top_k": 2})
    assert _run_epochs(watchers(best), model, [3.0, 1.0, 2.0, 2.5]) == 1.0  # best by top-k, no stop
    # With early stopping too: early stopping stops, keep-best restores.
    both = TrainConfig(early_stopping=EarlyStopping(patience=1), keep_best={"monitor": "val_loss"})
    assert _run_epochs(watchers(both), model, [3.0, 1.0, 2.0]) == 1.0 and model.stop_training
    # Continuing to total_epochs: the same callbacks keep phase one's best (weights of the owner).
    carried = watchers(TrainConfig(keep_best={"monitor": "val_loss"}), owner=model)
    _run_epochs(carried, model, [3.0, 1.0])
    assert _run_epochs(carried, model, [2.0, 4.0], first_epoch=2) == 1.0


def test_scored_fold_steers_only_where_allowed_and_says_so():
    dataset = _dataset()
    idx = np.arange(len(dataset.labels))
    train = TrainConfig(keep_best={"monitor": "val_loss"}, validation_data="scored_fold")
    fit, stop, notes = _steering_rows(dataset, train, idx[::2], idx[1::2], 0)
    assert list(stop) == list(idx[1::2]) and list(fit) == list(idx[::2]) and notes == [SCORED_FOLD_STEERS]
    fit, stop, notes = _steering_rows(dataset, train, idx[::2], None, 0)  # a test set's fit: a held-out share
    assert set(stop) < set(idx[::2]) and not set(fit) & set(stop) and notes == []
    fit, stop, _ = _steering_rows(dataset, TrainConfig(keep_best=True, validation_fraction=0.3), idx, None, 0)
    assert len(stop) == pytest.approx(0.3 * len(idx), abs=2)


def test_fine_tuning_to_a_total_epoch_count_with_batchnorm_training(monkeypatch):
    import harness.toolkit.backbones as backbones

    asked = []
    real = backbones.set_base_trainable
    monkeypatch.setattr(backbones, "set_base_trainable", lambda *a, **k: asked.append(k) or real(*a, **k))
    dataset, idx = _dataset(), np.arange(18)
    train = TrainConfig(epochs=1, batch_size=8, keep_best={"monitor": "val_loss"},
                        fine_tune=FineTune(total_epochs=3, batchnorm_trainable=True))
    result = fit_fold(TINY, dataset, (12, 12), {}, train, idx[::2], idx[1::2], seed=1, steer_idx=idx[1::2])
    assert result.epochs_run == 3 and result.history["phase"] == ["train", "fine-tune", "fine-tune"]
    assert asked[-1]["train_batchnorm"] is True and result.warnings == []  # held-out share: no label


def test_cnn4_valid_padding_is_the_minerals_model_2_and_cnn5_its_model_1():
    from harness.plugins import get_plugins

    models = get_plugins().models
    cnn4 = models.get("cnn4")
    params = dict(cnn4.params, padding="valid")
    model = cnn4.build(BuildContext(3, (180, 180), params))
    flatten = next(layer for layer in model.layers if isinstance(layer, keras.layers.Flatten))
    assert flatten.output.shape[-1] == 12544  # 180 → 178 … 7 × 7 × 256, as the study's summary
    same = cnn4.build(BuildContext(3, (180, 180), dict(cnn4.params)))
    assert next(l for l in same.layers if isinstance(l, keras.layers.Flatten)).output.shape[-1] != 12544
    cnn5 = models.get("cnn5")
    params = dict(cnn5.params, filters=[12, 6, 12, 6, 12], dense=[500, 100, 50, 10], pool_padding="valid")
    model = cnn5.build(BuildContext(3, (400, 321), params))
    kinds = [type(layer).__name__ for layer in model.layers[2:17]]
    assert kinds == ["Conv2D", "BatchNormalization", "MaxPooling2D"] * 5
    flatten = next(layer for layer in model.layers if isinstance(layer, keras.layers.Flatten))
    assert flatten.output.shape[-1] == 1440  # the study's Model 1: 12 × 10 × 12
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [500, 100, 50, 10, 3]


def test_preprocessing_modes_and_dataset_statistics_saved_with_the_model(tmp_path):
    import tensorflow as tf

    from harness.toolkit.backbones import Preprocess, set_dataset_stats

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(Preprocess("unit")(x), x / 255, rtol=1e-6)
    np.testing.assert_allclose(Preprocess("tf")(x), x / 127.5 - 1, rtol=1e-5, atol=1e-6)
    flat = np.full((1, 8, 8, 3), 7.0, "float32")  # a flat image: std below 1 / sqrt(N)
    for images in (x, flat):
        expected = tf.image.per_image_standardization(images).numpy()
        np.testing.assert_allclose(Preprocess("per_image")(images), expected, rtol=1e-4, atol=1e-4)
    cnn4 = get_plugins().models.get("cnn4")
    params = dict(cnn4.params, filters=[4], top_filters=4)
    assert not any(isinstance(l, Preprocess) for l in cnn4.build(BuildContext(3, (16, 16), params)).layers)
    model = cnn4.build(BuildContext(3, (16, 16), params, preprocess="dataset"))
    train_images = rng.integers(0, 256, (10, 16, 16, 3)).astype("uint8")
    assert set_dataset_stats(model, train_images)
    layer = model.get_layer("preprocess")
    np.testing.assert_allclose(layer.mean.numpy(), train_images.reshape(-1, 3).mean(0), rtol=1e-4)
    np.testing.assert_allclose(layer.std.numpy(), train_images.reshape(-1, 3).std(0), rtol=1e-4)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.get_layer("preprocess").mean.numpy(), layer.mean.numpy())
    np.testing.assert_allclose(loaded.predict(train_images, verbose=0), model.predict(train_images, verbose=0), rtol=1e-5)


def _tiny_application(include_top, weights, input_shape):
    """A stand-in for a keras.applications constructor: one convolution."""
    image = keras.Input(input_shape)
    return keras.Model(image, keras.layers.Conv2D(2, 3)(image))


def test_preprocessing_changes_a_pretrained_models_feature_cache_key():
    from harness.toolkit.backbones import build_pretrained
    from harness.training.features import backbone_key, split_model

    keys = {}
    for mode in ("model", "symmetric", "unit", "per_image"):
        context = BuildContext(3, (16, 16), {"pooling": "avg", "head": [], "dropout": 0.0}, weights="none",
                               preprocess=mode)
        keras.utils.set_random_seed(0)
        model = build_pretrained(context, _tiny_application, name="tiny", preprocessing="tf", minimum=8)
        keys[mode] = backbone_key(split_model(model)[0], (16, 16))
    assert keys["model"] == keys["symmetric"]  # the model's own input is [-1, 1]: the same features
    assert len({keys["model"], keys["unit"], keys["per_image"]}) == 3


def test_augmentation_probability_per_transform():
    from harness.toolkit.augment import Augment, augmentation_layers
    from harness.toolkit.random_apply import RandomApply

    layers = augmentation_layers(Augment(flip="horizontal", noise=0.5, probability={"noise": 0.5}))
    assert isinstance(layers[0], keras.layers.RandomFlip) and isinstance(layers[1], RandomApply)
    x = np.full((64, 4, 4, 3), 128.0, "float32")
    noisy = keras.ops.convert_to_numpy(layers[1](x, training=True))
    changed = (np.abs(noisy - x).reshape(64, -1).max(axis=1) > 1e-3).mean()
    assert 0.25 < changed < 0.75
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layers[1](x, training=False)), x)
    again = RandomApply.from_config(layers[1].get_config())
    assert again.probability == 0.5 and isinstance(again.layer, keras.Sequential)


@pytest.mark.parametrize("test_model", ["refit", "folds"])
def test_the_scored_fold_steers_cross_validation_never_the_locked_test_set(tmp_path, monkeypatch, test_model):
    """The study's way, labelled: each fold's scored rows steer it; the test set's refit holds a share
    out, and its fold models are steered as their search's were (by their validation rows)."""
    import pandas as pd

    from harness.training import fold as fold_module

    plans = []
    plan = fold_module.Fold.__dict__["plan"].__func__

    def recording_plan(cls, *args, **where):
        fold = plan(cls, *args, **where)
        plans.append((where.get("scored_idx"), fold.stop_idx, args[5]))
        return fold

    monkeypatch.setattr(fold_module.Fold, "plan", classmethod(recording_plan))
    recipe = 'epochs = 1\njit_compile = false\nvalidation_data = "scored_fold"\nkeep_best = { monitor = "val_accuracy" }'
    text = _study(tmp_path, recipe).read_text().replace("trials = 2", "trials = 1").replace("epochs = 2\n", "")
    path = tmp_path / "study.toml"
    path.write_text(text.replace("folds = 2", f'folds = 2\ntest = {{ fraction = 0.25, model = "{test_model}" }}'))
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 0
    results = tmp_path / "r" / "tiny"
    parts = pd.read_csv(results / "folds.csv")["part"].to_numpy()
    test = set(np.flatnonzero(parts == "test"))
    scored = [(s, stop) for s, stop, _ in plans if s is not None]
    assert all(list(s) == list(stop) and not set(s) & test for s, stop in scored)
    refits = [(stop, rows) for s, stop, rows in plans if s is None]
    assert not set().union(*(set(rows) for _, _, rows in plans)) & test  # no fit trains on a test row
    if test_model == "refit":
        assert len(scored) == 2 and refits and all(set(stop) < set(rows) and not set(stop) & test for stop, rows in refits)
    else:  # the two CV folds, then the same two folds' models for the test set, steered alike
        assert len(scored) == 4 and [list(s) for s, _ in scored[:2]] == [list(s) for s, _ in scored[2:]]
    board = pd.read_csv(results / "leaderboard.csv")
    assert board["warnings"].str.contains("steered by its scored fold").all()
    assert not board["warnings"].str.contains("learned nothing").any()
    assert "learned nothing" not in (results / "report.md").read_text()  # a label, not a failure


def test_a_model_that_ignores_the_preprocessing_setting_is_a_clear_error():
    from harness import HarnessError
    from harness.training.build import build_model

    context = BuildContext(2, (12, 12), {}, weights="none", preprocess="unit")
    with pytest.raises(HarnessError, match="does not take \\[train\\] preprocess = \"unit\""):
        build_model(TINY, context)
    cnn4 = get_plugins().models.get("cnn4")
    build_model(cnn4, BuildContext(2, (16, 16), dict(cnn4.params, filters=[4], top_filters=4), preprocess="unit"))


def test_quick_epochs_shorten_a_fine_tuning_to_a_total_and_the_saved_study_loads_back(tmp_path):
    """--epochs 2 on a study that trains 50 epochs, then fine-tunes on to epoch 60: 2 + 2 epochs, and the
    results folder's study.toml (what export, report and heat maps read) is a valid study file."""
    import tomli_w

    from harness.config.study import load_study

    path = _study(tmp_path, "[train.fine_tune]\ntotal_epochs = 60\nlast = 2\n").read_text()
    path = path.replace("epochs = 2\n", "epochs = 50\n", 1)
    study_file = tmp_path / "ft.toml"
    study_file.write_text(path)
    study = load_study(study_file, get_plugins(), {"epochs": 2})
    train = study.candidates[0].train
    assert (train.epochs, train.fine_tune.total_epochs, train.total_epochs) == (2, 4, 4)
    saved = tmp_path / "saved.toml"
    saved.write_text(tomli_w.dumps(study.effective_raw()))
    again = load_study(saved, get_plugins())
    assert (again.candidates[0].train.epochs, again.candidates[0].train.fine_tune.total_epochs) == (2, 4)


def test_fold_findings_count_each_kind_and_only_dead_folds_count_as_learning_nothing():
    from types import SimpleNamespace

    from harness.evaluation.scores import dead_warnings, folds_findings

    steered = "steered by its scored fold (the study's way)"
    records = [SimpleNamespace(warnings=[steered]), SimpleNamespace(warnings=["learned nothing: always class 0", steered]),
               SimpleNamespace(warnings=[steered, "learned nothing: uniform"])]
    assert folds_findings(records) == f"3 of 3 folds {steered}; 2 of 3 folds learned nothing: always class 0"
    assert dead_warnings(records[2].warnings) == ["learned nothing: uniform"] and dead_warnings([steered]) == []
    assert folds_findings([SimpleNamespace(warnings=[])]) == ""


def test_early_stopping_starts_over_each_phase_and_keep_best_spans_the_run():
    """Keras 2 (the studies' fit called twice with the same callbacks) reset EarlyStopping at each
    fit: phase two's patience starts over. The kept epoch is the best of the whole run."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    train = TrainConfig(early_stopping=EarlyStopping(patience=2), keep_best={"monitor": "val_loss"})
    carried = watchers(train, owner=model)
    for watcher in carried:
        watcher.hold = True  # phase one: the best epoch waits for the last phase
    _run_epochs(carried, model, [1.0, 2.0, 3.0])  # patience spent: phase one stops
    assert model.stop_training
    model.stop_training = False
    for watcher in carried:
        watcher.hold = False
    # Phase two: worse than phase one's best at first, yet it goes on past one epoch.
    assert _run_epochs(carried, model, [2.5, 1.5], first_epoch=3) == 0.0 and not model.stop_training
    assert _run_epochs(carried, model, [0.5], first_epoch=5) == 5.0


def _kept_epoch_is_scored(cache, **train_settings):
    """Fit a fold whose scored rows steer keep_best (validation_data = "scored_fold") and check that
    its predictions of those rows give the kept epoch's logged val_loss and val_accuracy."""
    dataset, idx = _dataset(), np.arange(18)
    train = TrainConfig(epochs=3, batch_size=4, weights="none", learning_rate=0.3, validation_data="scored_fold",
                        keep_best={"monitor": "val_loss"}, **train_settings)
    result = fit_fold(TINY, dataset, (12, 12), {}, train, idx[::2], idx[1::2], seed=1, cache=cache,
                      steer_idx=idx[1::2])
    history, labels = result.history, dataset.labels[idx[1::2]]
    kept = int(np.argmin(history["val_loss"]))
    p = np.clip(result.probabilities, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(np.log(p[np.arange(len(labels)), labels])))
    accuracy = float(np.mean(p.argmax(axis=1) == labels))
    assert (loss, accuracy) == (pytest.approx(history["val_loss"][kept], abs=1e-3), pytest.approx(history["val_accuracy"][kept])), (
        kept, history["val_loss"])
    return result, kept


@pytest.mark.parametrize("path", ["end_to_end", "cached_head_then_end_to_end", "cached_head_then_boundary_cache"])
def test_the_scored_model_is_the_kept_epochs_across_a_fine_tuning_to_a_total(path, tmp_path):
    """Phase one end to end or on cached features, then fine-tuning end to end or on the boundary
    cache, its BatchNormalization training (random weights): the epoch kept (phase one's end to end,
    phase two's cached, neither the last) is the model scored, its statistics not recalibrated."""
    from harness.training.features import FeatureCache

    cache = None if path == "end_to_end" else FeatureCache(tmp_path / "cache")
    fine_tune = FineTune(total_epochs=7, last=2, learning_rate=0.5)
    result, kept = _kept_epoch_is_scored(cache, boundary_cache=path.endswith("boundary_cache"), fine_tune=fine_tune,
                                         early_stopping=EarlyStopping(patience=2))
    phases = result.history["phase"]
    assert kept < len(phases) - 1 and phases[kept] == ("train" if path == "end_to_end" else "fine-tune")
    assert (tmp_path / "cache" / "boundary").exists() == path.endswith("boundary_cache")


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_per_image_standardisation_is_finite_at_every_precision(precision):
    from harness.toolkit.backbones import Preprocess

    rng = np.random.default_rng(0)
    images = np.concatenate([rng.integers(0, 256, (1, 224, 224, 3)), np.full((1, 224, 224, 3), 77)]).astype("float32")
    out = keras.ops.convert_to_numpy(Preprocess("per_image", dtype=precision)(images)).astype("float64")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0].mean(), 0.0, atol=1e-2)
    np.testing.assert_allclose(out[0].std(), 1.0, atol=1e-2)
    assert np.abs(out[1]).max() == 0.0  # a flat image: all zeros, as tf.image.per_image_standardization gives
