"""Training batches gathered from the memory-mapped image file: the same batches, in the same
seeded order, as from arrays in memory, on every backend, without a copy of the fold."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from harness.training.batches import ImageRows, epoch_order, make_batches


@pytest.fixture
def mapped(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (90, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)
    return pixels, np.load(tmp_path / "pixels.npy", mmap_mode="r")


def test_image_rows_read_what_indexing_gives(mapped):
    pixels, stack = mapped
    index = np.array([80, 3, 3, 41, 7, 0, 89])
    rows = ImageRows(stack, index)
    assert len(rows) == 7 and rows.shape == (7, 6, 5, 3) and rows.dtype == np.uint8
    assert np.array_equal(rows[np.array([2, 0, 6])], pixels[index[[2, 0, 6]]])
    assert np.array_equal(rows[1:4], pixels[index[1:4]]) and np.array_equal(rows[5], pixels[0])
    assert np.array_equal(np.asarray(rows.take([6, 1])), pixels[[89, 3]])


def test_batches_are_those_of_the_arrays_in_memory_in_each_epochs_seeded_order(mapped):
    pixels, stack = mapped
    index = np.arange(3, 90, 2)  # a fold's rows
    extra = np.eye(3, dtype="float32")[np.arange(90) % 3]
    y, weights = np.arange(90)[index] % 4, np.linspace(0.5, 2, len(index)).astype("float32")
    streamed = make_batches([{"image": ImageRows(stack, index), "site": extra[index]}], y, weights, 8, seed=5)
    assert len(streamed) == 6
    seen = []
    for epoch in range(3):
        streamed.follow_epochs().on_epoch_begin(epoch)
        order = epoch_order(5, epoch, len(index))
        for i in range(len(streamed)):
            rows = order[i * 8 : (i + 1) * 8]
            x, ys, ws = streamed[i]
            assert np.array_equal(x["image"], pixels[index][rows]) and np.array_equal(x["site"], extra[index][rows])
            assert np.array_equal(ys, y[rows]) and np.array_equal(ws, weights[rows])
        seen.append(np.concatenate([streamed[i][1] for i in range(len(streamed))]))
    assert not np.array_equal(seen[0], seen[1])  # shuffled anew each epoch, from the seed
    assert sorted(seen[0]) == sorted(y)
    in_order = make_batches([ImageRows(stack, index)], batch_size=16)
    assert np.array_equal(np.concatenate([in_order[i][0] for i in range(len(in_order))]), pixels[index])


def test_an_epoch_never_holds_the_fold(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "big.npy", pixels)
    stack = np.load(tmp_path / "big.npy", mmap_mode="r")
    batches = make_batches([ImageRows(stack, np.arange(0, 2000, 2))], np.zeros(1000, "int64"), batch_size=32, seed=0)
    tracemalloc.start()
    try:
        total = sum(int(batches[i][0].sum() > 0) for i in range(len(batches)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == len(batches) == 32
    assert peak < 1000 * 32 * 32 * 3 / 10  # a few batches, not the fold's 3 MB


def _fitted(stack, index, y, views):
    import keras

    from harness.training.epochs import fit_in_order

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 5, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    if views is None:
        batches = make_batches([ImageRows(stack, index)], y, batch_size=8, seed=3)
        seeding = keras.callbacks.LambdaCallback(on_train_begin=lambda logs=None: keras.utils.set_random_seed(3))
        model.fit(batches, shuffle=False, epochs=2, verbose=0, callbacks=[seeding, batches.follow_epochs()])
    else:
        fit_in_order(model, views, y, None, 8, 3, [], epochs=2)
    return model.get_weights()


def test_fitting_from_batches_gives_the_weights_of_the_arrays(mapped):
    """On the test run's backend (tests/test_backends.py runs the training tests, which train
    through these batches, on the others)."""
    pixels, stack = mapped
    index, y = np.arange(1, 60, 2), np.arange(30) % 3
    streamed, in_memory = _fitted(stack, index, y, None), _fitted(stack, index, y, [pixels[index]])
    assert all(np.array_equal(a, b) for a, b in zip(streamed, in_memory, strict=True))
