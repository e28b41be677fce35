"""Forward passes: a model's outputs for many rows, in inference mode, the cheapest way per backend."""

from __future__ import annotations

import numpy as np

from harness.training.build import load_keras


def forward_pass(model, x, batch_size: int) -> np.ndarray:
    """``model``'s outputs for the rows of ``x`` (an array, or a dict of arrays by input; inference
    mode): with TensorFlow in a lean function of its own (see ``harness.training.loops.predict``),
    else with ``predict``."""
    if load_keras().backend.backend() != "tensorflow":
        return model.predict(x, batch_size=batch_size, verbose=0)
    from harness.training.loops import predict

    return predict(model, x, batch_size)


def predict_once(model, inputs, batch_size: int) -> np.ndarray:
    """The probabilities of a model that predicts once (a fold's own model): with TensorFlow called
    directly batch by batch, else with ``predict``.

    Keras's ``predict`` traces a predict function for each new model, and again for a short last
    batch: with a new model per fold, one or two calls per trace, which TensorFlow reports as
    frequent retracing, and which costs more than it saves over a fold's rows (a traced pass of
    its own, see ``forward_pass``, would still be one trace for a few calls per fold).
    """
    keras = load_keras()
    if keras.backend.backend() != "tensorflow":
        if all(isinstance(a, np.ndarray) for a in keras.tree.flatten(inputs)):
            return model.predict(inputs, batch_size=batch_size, verbose=0)
        # Images read from the cache (ImageRows): batch by batch.
        from harness.training.batches import predict_rows

        return predict_rows(model, inputs, batch_size)
    return call_in_batches(model, inputs, batch_size)


def head_predict(head, inputs, batch_size: int) -> np.ndarray:
    """The head's probabilities, called directly batch by batch: ``predict`` would trace a new
    predict function for every fold (~0.2 s on a CPU, more than the head's arithmetic)."""
    parts = inputs if isinstance(inputs, list) else [inputs]  # split_model's head takes a list
    return call_in_batches(head, parts, max(batch_size, 256))


def call_in_batches(model, inputs, batch_size: int) -> np.ndarray:
    """``model(batch, training=False)`` over the rows of ``inputs`` (an array, or a list or dict
    of arrays), as one array."""
    keras = load_keras()
    rows = len(keras.tree.flatten(inputs)[0])
    out = []
    for start in range(0, rows, batch_size):
        batch = keras.tree.map_structure(lambda a: a[start : start + batch_size], inputs)
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(out)


def read_rows(inputs):
    """``inputs`` with any memory-mapped rows (``harness.training.boundary.MappedRows``) read into arrays."""
    return load_keras().tree.map_structure(lambda a: a if isinstance(a, np.ndarray) else np.asarray(a), inputs)
