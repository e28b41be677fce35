"""Batches read from the image cache's memory-mapped file as training asks for them.

A fold never copies its images: ``ImageRows`` stands for the rows of an index array and reads
only the rows of each batch (in sorted order, with plain reads, see ``harness.data.stacked``), and
``make_batches`` is a ``keras.utils.PyDataset`` (every backend) serving them with the one-hot
extra inputs and the labels, in the seeded order of ``epoch_order``, so a fold sees the same
batches as from arrays in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.data.dataset import Dataset
from harness.data.stacked import read_rows
from harness.training.build import load_keras


class ImageRows:
    """The rows ``index`` of ``pixels`` (n, h, w, 3), read on demand.

    ``rows[i]`` (an integer array or a slice) reads those rows into an array; ``take(i)`` is the
    subset as another ``ImageRows``, without reading.
    """

    def __init__(self, pixels: np.ndarray, index: Sequence[int] | np.ndarray):
        self.pixels, self.index = pixels, np.asarray(index, dtype=np.int64)
        self.dtype, self.shape = pixels.dtype, (len(self.index), *pixels.shape[1:])
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.index)

    def take(self, index) -> ImageRows:
        return ImageRows(self.pixels, self.index[index])

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return read_rows(self.pixels, self.index[[index]])[0]
        return read_rows(self.pixels, self.index[index])

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training rows in an epoch: a permutation drawn from the fold seed and
    the epoch. Every training path takes its batches in this order, so they all see the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def model_rows(dataset: Dataset, inputs: Sequence[str], image_size: tuple[int, int], index: np.ndarray):
    """A model's inputs for the rows ``index``: the images as ``ImageRows`` (not read yet) and the
    one-hot extras; the image rows alone when the model takes only ``image``, else a dict by name."""
    index = np.asarray(index, dtype=np.int64)
    rows = {
        name: ImageRows(dataset.images(image_size), index) if name == "image" else dataset.one_hot(name)[index]
        for name in inputs
    }
    return rows["image"] if tuple(inputs) == ("image",) else rows


def gather(x, rows: np.ndarray):
    """The ``rows`` of every array or ``ImageRows`` in ``x`` (an array, or a list or dict of them)."""
    return load_keras().tree.map_structure(lambda a: a[rows], x)


def row_count(x) -> int:
    return len(load_keras().tree.flatten(x)[0])


def make_batches(views: list, y=None, sample_weights=None, batch_size: int = 32, seed: int | None = None, **options):
    """A ``keras.utils.PyDataset`` of ``batch_size`` rows of the inputs in ``views`` (a list of
    structures of inputs, e.g. augmented views, served by epoch in turn; most often one), with
    ``y`` and ``sample_weights`` when given.

    ``seed``: each epoch takes the rows in ``epoch_order(seed, epoch, n)``; fit with ``shuffle=False``
    and the dataset's ``follow_epochs()`` callback, which tells it the epoch (Keras may peek at
    batches first). None: in row order, one pass (predict, evaluate). ``options``: PyDataset's
    ``workers``, ``use_multiprocessing`` and ``max_queue_size``.
    """
    keras = load_keras()
    n = row_count(views[0])

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(**options)
            self.epoch = 0
            self.order = np.arange(n) if seed is None else epoch_order(seed, 0, n)

        def __len__(self):
            return (n + batch_size - 1) // batch_size

        def __getitem__(self, i):
            rows = self.order[i * batch_size : (i + 1) * batch_size]
            x = gather(views[self.epoch % len(views)], rows)
            if y is None:
                return (x,)  # a list or dict of inputs alone would be read as (x, y)
            return (x, y[rows]) if sample_weights is None else (x, y[rows], sample_weights[rows])

        def follow_epochs(self):
            def begin(epoch, logs=None):
                self.epoch = epoch
                self.order = np.arange(n) if seed is None else epoch_order(seed, epoch, n)

            return keras.callbacks.LambdaCallback(on_epoch_begin=begin)

    return Batches()


def predict_rows(model, x, batch_size: int) -> np.ndarray:
    """``model.predict`` over ``x`` read batch by batch (any backend)."""
    return model.predict(make_batches([x], batch_size=batch_size), verbose=0)
