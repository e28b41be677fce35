"""Training reads the images of a fold batch by batch from the image cache's file: no path
(end to end with augmentation and a held-out share, cached features and their augmented views,
fine-tuning from the boundary cache) gathers a fold's images into one array."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import ModelSpec, Samples
from harness.config.study import EarlyStopping, FineTune, TrainConfig
from harness.data.dataset import Dataset
from harness.toolkit.augment import Augment
from harness.training.features import FeatureCache
from harness.training.train import fit_fold

N, SIDE = 2400, 12
#: The most rows any one read may take: a block of the content hashes' pass (1,024), never the
#: 1,728 rows a fold fits (its 1,920 training rows less the early-stopping share).
LIMIT = 1100


class Guarded(np.ndarray):
    """The dataset's pixels, refusing to be gathered more than LIMIT rows at a time."""

    def __getitem__(self, index):
        if isinstance(index, (list, np.ndarray)) and np.asarray(index).dtype != bool and len(index) > LIMIT:
            raise AssertionError(f"{len(index)} rows gathered into one array")
        return super().__getitem__(index)


def _model(context):
    import keras

    from harness.toolkit.backbones import classifier

    base_in = keras.Input((*context.image_size, 3))
    b = keras.layers.Conv2D(4, 3, name="conv_a")(base_in)
    b = keras.layers.Conv2D(4, 3, name="conv_b")(b)
    b = keras.layers.Conv2D(4, 3, name="conv_c")(b)
    base = keras.Model(base_in, b, name="backbone")
    image = keras.Input((*context.image_size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base(keras.layers.Rescaling(1 / 255)(image), training=False))
    return keras.Model(image, classifier(x, context.num_classes, [8], 0.0))


SPEC = ModelSpec("guarded", _model, image_size=(SIDE, SIDE))


@pytest.fixture(scope="module")
def dataset():
    labels = np.arange(N) % 2
    table = pd.DataFrame({"id": [str(i) for i in range(N)], "label": labels.astype(str)})
    table["group"] = table["id"]
    rng = np.random.default_rng(0)
    pixels = np.clip(labels[:, None, None, None] * 100 + rng.integers(0, 80, (N, SIDE, SIDE, 3)), 0, 255)
    guarded = pixels.astype(np.uint8).view(Guarded)
    data = Dataset("guarded", table, ["0", "1"], labels, Samples(table, lambda rows, size: guarded))
    data._pixels[(SIDE, SIDE)] = guarded
    return data


AUGMENT = Augment(flip="horizontal")
SETTINGS = {
    "end to end, augmented, early stopping": dict(augment=AUGMENT, early_stopping=EarlyStopping(patience=1)),
    "cached features, augmented views": dict(augment=AUGMENT, views=1),
    "fine-tuning from the boundary cache": dict(fine_tune=FineTune(epochs=1, last=2), augment=AUGMENT, views=1),
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_no_training_path_gathers_a_fold(dataset, name, tmp_path):
    train = TrainConfig(epochs=1, batch_size=64, weights="none", **SETTINGS[name])
    index = np.arange(N)
    cache = FeatureCache(tmp_path) if "cache" in name else None
    result = fit_fold(SPEC, dataset, (SIDE, SIDE), {}, train, index[N // 5 :], index[: N // 5], seed=0, cache=cache)
    assert result.probabilities.shape == (N // 5, 2)
    if cache is not None:
        assert cache.computed > 0  # the phase did run on the cache
    if "boundary" in name:
        assert any((tmp_path / "boundary").rglob("*.npy"))
