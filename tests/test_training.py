"""Training settings of the study file and how one fold trains: phases, weights, holdout."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from harness import HarnessError, ModelSpec, Samples
from harness.toolkit.augment import Augment
from harness.config.study import FineTune, ReduceLR, TrainConfig, load_study
from harness.data.dataset import Dataset
from harness.training.features import FeatureCache
from harness.data.folds import fold_indices, make_folds
from harness.plugins import get_plugins
from harness.training.train import balanced_class_weight, fit_fold

from conftest import tiny_study_text

CNN = "filters = [4, 4, 4, 4, 4]\ndense = [8]"


def load(tmp_path, train: str = "", candidate: str = "", cv: str = "folds = 2", overrides=None):
    text = tiny_study_text(extra=CNN + "\n" + candidate)
    text = text.replace("[train]\n", "[train]\n" + train + "\n").replace("[cv]\nfolds = 2\n", "[cv]\n" + cv + "\n")
    path = tmp_path / "study.toml"
    path.write_text(text)
    return load_study(path, get_plugins(), overrides)


def test_training_settings_parse_and_candidates_replace_them(tmp_path):
    study = load(
        tmp_path,
        'label_smoothing = 0.1\nclass_weight = "balanced"\nreduce_lr = { patience = 2 }\n'
        "fine_tune = { epochs = 3 }",
        "fine_tune = { last = 4 }\nfreeze_base = true",
    )
    assert study.train.fine_tune == FineTune(epochs=3)
    assert study.train.reduce_lr == ReduceLR(patience=2)
    train = study.candidates[0].train
    assert train.fine_tune == FineTune(epochs=10, learning_rate=1e-5, last=4)
    assert train.label_smoothing == 0.1 and train.class_weight == "balanced" and train.total_epochs == 12


@pytest.mark.parametrize(
    "train, message",
    [
        ("fine_tuning = { last = 3 }", r"train\.fine_tuning: unknown key 'fine_tuning'\. Did you mean 'fine_tune'\?"),
        ("fine_tune = { from_layer = 120, last = 3 }", r"train\.fine_tune: give from_layer or last, not both"),
        ("fine_tune = { last = 3 }\nfreeze_base = false", r"train\.fine_tune: fine-tuning unfreezes a frozen backbone"),
        ("fine_tune = { lr = 1e-5 }", r"train\.fine_tune\.lr: unknown key 'lr'"),
        ("label_smoothing = 1.5", r"train\.label_smoothing: must be at least 0 and below 1"),
        ('class_weight = "balance"', r"train\.class_weight: unknown value \"balance\"\. Did you mean 'balanced'\?"),
        ("reduce_lr = { factor = 2.0 }", r"train\.reduce_lr\.factor: must be between 0 and 1"),
        ('weights = "missing.h5"', r"train\.weights: weights file .*missing\.h5 not found"),
    ],
)
def test_bad_training_settings_name_file_and_key(tmp_path, train, message):
    with pytest.raises(HarnessError, match=r"study\.toml: " + message):
        load(tmp_path, train)


def test_weights_file_is_relative_to_the_study_and_the_environment_overrides_all(tmp_path, monkeypatch):
    (tmp_path / "base.weights.h5").write_bytes(b"")
    study = load(tmp_path, 'weights = "base.weights.h5"', 'weights = "imagenet"')
    assert study.train.weights == str(tmp_path / "base.weights.h5")
    assert study.candidates[0].train.weights == "imagenet"
    imagenet_id = study.candidates[0].fingerprint(study)
    monkeypatch.setenv("HARNESS_WEIGHTS", "none")
    study = load(tmp_path, 'weights = "base.weights.h5"', 'weights = "imagenet"')
    assert study.train.weights == "none" and study.candidates[0].train.weights == "none"
    assert study.candidates[0].fingerprint(study) != imagenet_id  # random-weight results never mix with ImageNet ones
    assert load(tmp_path, overrides={"weights": "imagenet"}).candidates[0].train.weights == "imagenet"


def test_holdout_scheme_is_one_validation_split(tmp_path):
    study = load(tmp_path, cv='scheme = "holdout"\nvalidation_fraction = 0.25')
    assert study.cv.folds == 1
    labels = np.repeat([0, 1, 2], 20)
    table = pd.DataFrame({"id": [str(i) for i in range(60)], "label": labels.astype(str), "group": [str(i) for i in range(60)]})
    dataset = Dataset("t", table, ["0", "1", "2"], labels, Samples(table))
    folds = make_folds(dataset, study.cv)
    train_idx, val_idx = fold_indices(folds, 0, 0)
    assert len(val_idx) == 15 and len(train_idx) == 45
    assert np.bincount(labels[val_idx]).tolist() == [5, 5, 5]
    with pytest.raises(HarnessError, match=r"cv\.folds: does not apply"):
        load(tmp_path, cv='scheme = "holdout"\nfolds = 5')
    assert load(tmp_path, cv='scheme = "holdout"', overrides={"folds": 3}).cv.scheme == "kfold"


def test_balanced_class_weights_follow_scikit_learn():
    assert balanced_class_weight(np.array([0, 0, 0, 1])) == {0: 4 / 6, 1: 2.0}


# A tiny backbone model: fine-tuning and freezing work on any model with a layer named "backbone"
# (and with a layer named "pool" after it, its frozen phase can train on cached features).
def _tiny_backbone(context):
    import keras

    from harness.toolkit.backbones import classifier

    base_in = keras.Input((*context.image_size, 3))
    b = keras.layers.Conv2D(4, 3, name="conv_a")(base_in)
    b = keras.layers.BatchNormalization(name="bn")(b)
    b = keras.layers.Conv2D(4, 3, name="conv_b")(b)
    base = keras.Model(base_in, b, name="backbone")
    image = keras.Input((*context.image_size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base(keras.layers.Rescaling(1 / 255)(image), training=False))
    return keras.Model(image, classifier(x, context.num_classes, [8], 0.0))


TINY = ModelSpec("tiny_backbone", _tiny_backbone, image_size=(12, 12))


def _dataset(n_per_class=(12, 6)) -> Dataset:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    table = pd.DataFrame({"id": [str(i) for i in range(len(labels))], "label": labels.astype(str)})
    table["group"] = table["id"]

    def pixels(rows, size):
        rng = np.random.default_rng(0)
        base = labels[rows.index.to_numpy()][:, None, None, None] * 120
        return np.clip(base + rng.integers(0, 60, (len(rows), *size, 3)), 0, 255).astype(np.uint8)

    return Dataset("t", table, ["0", "1"], labels, Samples(table, pixels))


def test_fine_tuning_continues_the_epoch_count_with_every_option_on():
    dataset = _dataset()
    train = TrainConfig(
        epochs=2, batch_size=8, weights="none", label_smoothing=0.1, class_weight="balanced",
        reduce_lr=ReduceLR(patience=1), fine_tune=FineTune(epochs=2, last=2),
    )
    seen = []
    idx = np.arange(len(dataset.labels))
    result = fit_fold(
        TINY, dataset, (12, 12), {}, train, idx[::2], idx[1::2], seed=1, on_epoch=lambda epoch, logs: seen.append(epoch)
    )
    assert result.epochs_run == 4 and seen == [0, 1, 2, 3]
    assert result.probabilities.shape == (9, 2) and np.allclose(result.probabilities.sum(axis=1), 1, atol=1e-5)


# What each backend's out-of-memory error says: TensorFlow, JAX (XLA), PyTorch.
OUT_OF_MEMORY = [
    "RESOURCE_EXHAUSTED: OOM when allocating tensor with shape[8,64,64,32]",
    "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1073741824 bytes.",
    "CUDA out of memory. Tried to allocate 2.00 GiB",
]


@pytest.mark.parametrize("message", OUT_OF_MEMORY)
def test_out_of_memory_retries_the_fold_with_half_the_batch_size(monkeypatch, message):
    from harness.training import fit as training
    tried, real = [], training._fit_fold

    def short_of_memory(spec, dataset, image_size, params, train, *rest):
        tried.append(train.batch_size)
        if train.batch_size > 2:
            raise RuntimeError(message)
        return real(spec, dataset, image_size, params, train, *rest)

    monkeypatch.setattr(training, "_fit_fold", short_of_memory)
    dataset, idx = _dataset(), np.arange(18)
    with pytest.warns(UserWarning) as caught:
        result = fit_fold(TINY, dataset, (12, 12), {}, TrainConfig(epochs=1, batch_size=8, weights="none"),
                          idx[::2], idx[1::2], seed=1)
    assert [str(w.message) for w in caught if "accelerator" in str(w.message)] == [
        "out of accelerator memory: retrying the fold with batch size 4",
        "out of accelerator memory: retrying the fold with batch size 2",
    ]
    assert tried == [8, 4, 2]
    assert result.probabilities.shape == (9, 2)


@pytest.mark.parametrize(("error", "batch_size"), [(ValueError("bad input"), 8), (RuntimeError(OUT_OF_MEMORY[2]), 1)])
def test_other_errors_and_out_of_memory_at_batch_size_1_are_not_retried(monkeypatch, error, batch_size):
    from harness.training import fit as training
    tried = []

    def failing(spec, dataset, image_size, params, train, *rest):
        tried.append(train.batch_size)
        raise error

    monkeypatch.setattr(training, "_fit_fold", failing)
    idx = np.arange(18)
    with pytest.raises(type(error), match=str(error).split(".")[0]):
        fit_fold(TINY, _dataset(), (12, 12), {}, TrainConfig(epochs=1, batch_size=batch_size, weights="none"),
                 idx[::2], idx[1::2], seed=1)
    assert tried == [batch_size]


def test_with_pytorch_on_a_gpu_each_fold_empties_torchs_memory_cache(monkeypatch):
    import keras

    if keras.backend.backend() != "torch":
        pytest.skip("PyTorch only (run by test_backends_torch.py::test_model_tests_pass_on_torch)")
    import torch

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # Keras picked its device at import: still the CPU
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    idx = np.arange(18)
    fit_fold(TINY, _dataset(), (12, 12), {}, TrainConfig(epochs=1, batch_size=8, weights="none"), idx[::2], idx[1::2], seed=1)
    assert emptied == [1]


@pytest.mark.parametrize("augment", [None, Augment(flip="horizontal")], ids=["cached_head_phase", "end_to_end"])
def test_folds_and_trials_on_a_frozen_backbone_trigger_no_retracing_warning(augment, monkeypatch, tmp_path):
    """TensorFlow warns ("5 out of the last N calls to <function> triggered tf.function retracing")
    when most recent calls of the functions traced from one piece of code traced: a new traced
    function per fold called once or twice, or one traced again for a short last batch. Three
    trials of three folds on a frozen backbone, head on cached features or (augmenting) end to end,
    must not make it warn; each fold's scored rows end in a short batch."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip(
            "tf.function retracing exists only under TensorFlow; this test runs in the main (TensorFlow) run"
        )
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    # TensorFlow counts calls per piece of code for the life of the process and warns at most twice
    # per piece: a fresh count keeps earlier tests from hiding or causing a warning here.
    monkeypatch.setattr(
        polymorphic_function, "_frequent_tracing_detector_manager", polymorphic_function._FrequentTracingDetectorManager()
    )
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("tensorflow").addHandler(handler)
    dataset, rows = _dataset((12, 9)), np.arange(21)
    cache = FeatureCache(tmp_path)
    try:
        for learning_rate in (1e-3, 3e-3, 1e-2):
            for fold in range(3):
                train = TrainConfig(epochs=2, batch_size=3, weights="none", learning_rate=learning_rate, augment=augment)
                scored = rows[fold::3]  # 7 rows: batches of 3, 3 and 1
                fit_fold(TINY, dataset, (12, 12), {}, train, np.setdiff1d(rows, scored), scored, seed=fold, cache=cache)
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert not [m for m in messages if "retracing" in m], messages


def test_early_stopping_share_of_a_small_class_splits_without_a_warning_per_fold():
    """Classes smaller than 1 / fraction are common in small folds: the split is best effort, silently."""
    import warnings

    from harness.training.train import inner_split

    labels = np.array([0] * 30 + [1] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit, stop = inner_split(labels, np.arange(len(labels)), 0.1, seed=0)
    assert len(fit) + len(stop) == len(labels) and not set(fit) & set(stop)


def test_the_training_modules_keep_no_mutable_state_at_module_level():
    """What a fold keeps between calls lives in objects (ModelKeeper, FeatureCache, the model),
    not in module globals: no module-level container, weak table, or `global` statement."""
    import ast
    from pathlib import Path

    import harness.training

    mutable_calls = {"set", "dict", "list", "WeakKeyDictionary", "WeakValueDictionary", "defaultdict", "Event"}
    found = []
    for path in sorted(Path(harness.training.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if "__all__" in ast.unparse(node).split("=")[0]:
                continue  # the module's list of public names
            call = value.func if isinstance(value, ast.Call) else None
            name = getattr(call, "attr", getattr(call, "id", None))
            if isinstance(value, (ast.List, ast.Dict, ast.Set)) or name in mutable_calls:
                found.append(f"{path.name}:{node.lineno}")
        found += [f"{path.name}:{n.lineno} global" for n in ast.walk(tree) if isinstance(n, ast.Global)]
    assert found == []
