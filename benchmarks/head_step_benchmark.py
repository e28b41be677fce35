"""Head-step benchmark: where the time of a cached-feature head's training goes (TensorFlow).

The study benchmark's heads (Dense 256 → softmax, Adam, batch 32 on 1280 pooled MobileNetV2
features) train on a few hundred rows per fold, so one training step holds little arithmetic.
This prints, per epoch over the same rows:

- arithmetic: the step's two large matrix products (forward, and the kernel's gradient; the
  features need no gradient) timed alone in one traced loop — what any implementation must spend;
- harness: ``harness.training.loops.EpochLoops`` over the head's Keras ``train_step``, compiled by
  ``harness.training.train.compile_model`` (what the harness runs), and its one trace;
- raw TensorFlow: the same step written with bare ops and a hand-written Adam in one traced loop
  (no Keras) — what TensorFlow's executor costs per step without Keras;
- raw TensorFlow with XLA (``jit_compile=True``), and its compile;
- Keras ``fit``, 3 epochs per call as in a fold (what the heads would cost without the harness's loop).

Not a test: run it by hand, e.g. ``python benchmarks/head_step_benchmark.py``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def timed(call, repeats: int) -> float:
    """Seconds per call, after one untimed call (tracing, compiling)."""
    call(0)
    start = time.perf_counter()
    for i in range(repeats):
        call(i + 1)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=477, help="training rows per fold (the study benchmark's)")
    parser.add_argument("--width", type=int, default=1280, help="feature width (MobileNetV2's)")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs per variant")
    parser.add_argument("--fits", type=int, default=60, help="epochs the study runs (20 fold fits × 3)")
    args = parser.parse_args()

    from harness.core.backend import start_backend

    devices = start_backend()
    import keras

    if keras.backend.backend() != "tensorflow":
        parser.error("TensorFlow only (the harness's own head loop exists only there); "
                 "run it with KERAS_BACKEND=tensorflow")
    import tensorflow as tf

    from harness.training.loops import EpochLoops
    from harness.training.train import compile_model, epoch_order

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(args.rows, args.width)).astype("float32"))
    y = tf.constant(rng.integers(0, args.classes, args.rows))
    steps = -(-args.rows // args.batch)
    orders = [tf.constant(epoch_order(0, epoch, args.rows)) for epoch in range(args.epochs + 1)]

    kernel = tf.Variable(rng.normal(size=(args.width, args.units)).astype("float32") * 0.03)

    @tf.function
    def products(x):
        total = tf.zeros([args.units])
        for start in tf.range(0, args.rows, args.batch):
            batch = x[start : start + args.batch]
            forward = tf.matmul(batch, kernel)
            kernel_gradient = tf.matmul(batch, forward, transpose_a=True)
            total += tf.reduce_sum(forward, 0) + tf.reduce_sum(kernel_gradient, 0)
        return total

    arithmetic = timed(lambda i: products(x).numpy(), args.epochs)

    inputs = keras.Input((args.width,))
    hidden = keras.layers.Dense(args.units, activation="relu")(inputs)
    head = keras.Model(inputs, keras.layers.Dense(args.classes, activation="softmax")(hidden))
    compile_model(head, "adam", 1e-3)
    head.optimizer.build(head.trainable_variables)
    loops = EpochLoops(head)
    start = time.perf_counter()
    loops.train_epoch(x, y, None, orders[0], args.batch)
    trace = time.perf_counter() - start

    def harness_epoch(i):
        head.reset_metrics()
        loops.train_epoch(x, y, None, orders[i % len(orders)], args.batch)
        head.get_metrics_result()

    harness = timed(harness_epoch, args.epochs)

    weights = [tf.Variable(w) for w in head.get_weights()]
    moments = [(tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w))) for w in weights]

    def raw_epoch(x, y, order):
        for start in tf.range(0, tf.shape(order)[0], args.batch):
            rows = order[start : start + args.batch]
            with tf.GradientTape() as tape:
                hidden = tf.nn.relu(tf.gather(x, rows) @ weights[0] + weights[1])
                logits = hidden @ weights[2] + weights[3]
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.gather(y, rows), logits))
            for weight, gradient, (m, v) in zip(weights, tape.gradient(loss, weights), moments):
                m.assign(0.9 * m + 0.1 * gradient)
                v.assign(0.999 * v + 0.001 * tf.square(gradient))
                weight.assign_sub(1e-3 * m / (tf.sqrt(v) + 1e-7))

    raw_traced = tf.function(raw_epoch)
    raw = timed(lambda i: raw_traced(x, y, orders[i % len(orders)]), args.epochs)
    raw_xla = tf.function(raw_epoch, jit_compile=True)
    start = time.perf_counter()
    raw_xla(x, y, orders[0])
    compile_s = time.perf_counter() - start
    xla = timed(lambda i: raw_xla(x, y, orders[i % len(orders)]), args.epochs)

    fitted = keras.models.clone_model(head)
    compile_model(fitted, "adam", 1e-3)
    fit = timed(lambda i: fitted.fit(x, y, batch_size=args.batch, epochs=3, verbose=0), max(3, args.epochs // 10)) / 3

    print(f"{devices}; TensorFlow {tf.__version__}, {os.cpu_count()} CPUs; "
          f"{args.rows} rows × {args.width} features → Dense {args.units} → {args.classes}, batch {args.batch} "
          f"({steps} steps per epoch); ms per epoch, and for the study's {args.fits} epochs:")
    rows = [
        ("arithmetic (the two large products alone)", arithmetic, None),
        ("harness: EpochLoops over Keras train_step", harness, f"+ {trace:.2f} s one trace"),
        ("raw TensorFlow step, hand-written Adam", raw, None),
        ("raw TensorFlow step, XLA", xla, f"+ {compile_s:.2f} s one compile"),
        ("Keras fit (3 epochs per call, as a fold)", fit, None),
    ]
    for name, seconds, extra in rows:
        line = f"  {name:<44} {seconds * 1e3:7.1f} ms  ({seconds * 1e3 / steps:.2f} ms per step)  "
        print(line + f"{args.fits} epochs: {seconds * args.fits:.2f} s" + (f" {extra}" if extra else ""))
    print(f"per-step cost beyond the arithmetic: harness {(harness - arithmetic) * 1e3 / steps:.2f} ms, "
          f"raw TensorFlow {(raw - arithmetic) * 1e3 / steps:.2f} ms")


if __name__ == "__main__":
    main()
