"""TensorFlow only: lean traced calls where Keras's own loops cost more than the work.

- ``EpochLoops``: a whole epoch of a model's own ``train_step`` (or ``test_step``) in one traced
  call. Keras's ``fit`` spends ~4 ms per batch on a small head here (its tf.data pipeline and
  per-step machinery) against ~1 ms for the step itself.
- ``predict``: a model's forward pass batch by batch in one traced function. Keras's ``predict``
  traces its data and distribution machinery too: 0.4–0.9 s more for a MobileNetV2 pass over 596
  images on a CPU.

Imported only when Keras runs on TensorFlow; other backends use ``fit`` and ``predict``.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

#: The attribute of a model that holds its traced forward passes.
PASSES_ATTRIBUTE = "_harness_forward_passes"


def forward_passes(model) -> dict:
    """``model``'s traced forward passes by kind of rows (dtype, row shape): kept on the model, as
    Keras keeps its own ``predict_function``, so they live as long as it does and no longer."""
    # Written to the instance's dict: Keras's (and TensorFlow's) __setattr__ would track the
    # functions as part of the model's state.
    return vars(model).setdefault(PASSES_ATTRIBUTE, {})


def predict(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model(x, training=False)`` over the rows of one array, ``batch_size`` at a time; traced
    once per model and kind of rows (dtype, shape) for any number of rows (per batch shape too
    with XLA)."""
    passes = forward_passes(model)
    kind = (x.dtype.str, x.shape[1:])
    if kind not in passes:
        held = weakref.ref(model)  # no cycle: the model is freed as soon as nothing else holds it
        passes[kind] = tf.function(
            lambda batch: held()(batch, training=False),
            input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype))],
            jit_compile=model.jit_compile,  # as Keras's predict: XLA when there is a GPU, unless told otherwise
        )
    forward = passes[kind]
    return np.concatenate([forward(x[start : start + batch_size]).numpy() for start in range(0, len(x), batch_size)])


class EpochLoops:
    """Traced loops over the batches of in-memory arrays for one compiled model."""

    def __init__(self, model):
        self.model = model
        self._traced: dict[str, tf.types.experimental.PolymorphicFunction] = {}

    @staticmethod
    def tensors(data):
        return tf.nest.map_structure(tf.convert_to_tensor, data)

    def train_epoch(self, x, y, sample_weights, order, batch_size: int) -> None:
        """One ``train_step`` per batch of rows taken in ``order``."""
        args = (x, y, tf.constant(order), tf.constant(batch_size)) + (() if sample_weights is None else (sample_weights,))
        if not self._traced:
            self._build_state(x, y)
        self._function("train" if sample_weights is None else "train_weighted", self._train_epoch, args)(*args)

    def test(self, x, y, batch_size: int) -> None:
        """One ``test_step`` per batch, in row order (the model's metrics accumulate)."""
        args = (x, y, tf.constant(batch_size))
        self._function("test", self._test_all, args)(*args)

    def _build_state(self, x, y) -> None:
        """Create the compiled loss's and metrics' variables before tracing, as ``fit`` does:
        variables made during the first trace make TensorFlow trace the loop twice (~0.3 s)."""
        build = getattr(self.model, "_symbolic_build", None)  # Keras's own pre-fit step (private)
        if build is not None:
            build(data_batch=(tf.nest.map_structure(lambda t: t[:1], x), y[:1]))

    def _function(self, name, python_function, args):
        """Traced once for any number of rows (folds differ in size by a few)."""
        if name not in self._traced:
            any_rows = lambda t: tf.TensorSpec([None, *t.shape[1:]] if t.shape.rank else [], t.dtype)  # noqa: E731
            signature = tf.nest.map_structure(any_rows, args)
            self._traced[name] = tf.function(python_function, input_signature=signature)
        return self._traced[name]

    def _train_epoch(self, x, y, order, batch, sample_weights=None):
        for start in tf.range(0, tf.shape(order)[0], batch):
            rows = order[start : start + batch]
            take = lambda a: tf.gather(a, rows)  # noqa: E731
            data = (tf.nest.map_structure(take, x), take(y))
            self.model.train_step(data if sample_weights is None else (*data, take(sample_weights)))

    def _test_all(self, x, y, batch):
        for start in tf.range(0, tf.shape(y)[0], batch):
            take = lambda a: a[start : start + batch]  # noqa: E731
            self.model.test_step((tf.nest.map_structure(take, x), take(y)))
