"""Throughput benchmark: training and feature-extraction images/s of each study backbone.

For the active Keras backend (KERAS_BACKEND), precision and device, with synthetic uint8 images
at each model's study input size. Training: ``train_on_batch`` of the whole model (a backbone
unfrozen as in fine-tuning, BatchNormalization kept frozen as the harness does), Adam, integer
labels. Feature extraction: ``predict_on_batch`` of the extractor the feature cache uses (image →
pooled features); n/a for the CNNs trained from scratch (nothing to cache). Warm-up steps (tracing,
compilation) are excluded. Weights are random (weights = "none"): the speed is the same as ImageNet's.
Not a test: run it by hand, e.g.

    python benchmarks/throughput_benchmark.py --steps 3 --warmup 1 --batch 16      # a quick CPU look
    KERAS_BACKEND=jax python benchmarks/throughput_benchmark.py --models resnet50 \\
        --precision mixed_bfloat16 --batch 256 --steps 50                          # the GPU target
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Each study backbone at its study's input size (studies/*.toml).
STUDY_MODELS = {
    "cnn5": 128,        # minerals
    "cnn4": 128,        # minerals
    "vgg16": 224,       # gems
    "resnet50": 224,    # rocks
    "xception": 299,    # conus
    "mobilenetv2": 224,  # sports
}


def _sync(value) -> None:
    import keras

    keras.ops.convert_to_numpy(value[0] if isinstance(value, (list, tuple)) else value)  # waits for the device


def measure(name: str, size: int, batch: int, steps: int, warmup: int, jit_compile) -> tuple[float, float | None]:
    import keras

    from harness.toolkit.backbones import find_backbone, set_base_trainable
    from harness.training.features import split_model
    from harness.plugins import get_plugins
    from harness.specs import BuildContext
    from harness.training.train import compile_model

    spec = get_plugins().models.get(name)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    context = BuildContext(num_classes=10, image_size=(size, size), params=dict(spec.params), extra_inputs={}, weights="none")
    model = spec.build(context)
    base = find_backbone(model)
    if base is not None:
        set_base_trainable(base, True)
    compile_model(model, "adam", 1e-4, jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.integers(0, 256, (batch, size, size, 3), dtype="uint8"))
    y = keras.ops.convert_to_tensor(rng.integers(0, 10, (batch,)).astype("int32"))
    for _ in range(warmup):
        _sync(model.train_on_batch(x, y))
    start = time.perf_counter()
    for _ in range(steps):
        out = model.train_on_batch(x, y)
    _sync(out)
    train = batch * steps / (time.perf_counter() - start)

    parts = split_model(model) if base is not None else None
    if parts is None:
        return train, None
    extractor = parts[0]
    extractor.compile(jit_compile=jit_compile)
    for _ in range(warmup):
        _sync(extractor.predict_on_batch(x))
    start = time.perf_counter()
    for _ in range(steps):
        out = extractor.predict_on_batch(x)
    _sync(out)
    return train, batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(STUDY_MODELS), help="comma-separated (default: the six study backbones)")
    parser.add_argument("--size", type=int, default=None, help="square input side for every model (default: each study's)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"])
    parser.add_argument("--jit-compile", default="auto", help='true, false or "auto" (Keras: XLA where the backend supports it)')
    args = parser.parse_args()
    jit = {"true": True, "false": False}.get(args.jit_compile.lower(), "auto")

    from harness.plugins import get_plugins

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    models = get_plugins().models
    unknown = [n for n in names if n not in models]
    if unknown:
        parser.error(models.unknown_message(unknown[0]))

    from harness.core.backend import start_backend

    devices = start_backend()
    import keras

    keras.config.set_dtype_policy(args.precision)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{devices}; precision {args.precision}, jit_compile {jit}")
    print(f"os.cpu_count() = {os.cpu_count()}, load average {load}")
    print(f"batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up steps, synthetic uint8 images, weights none")
    print(f"{'model':<12} {'size':>5} {'train img/s':>12} {'features img/s':>15}")
    for name in names:
        size = args.size or STUDY_MODELS.get(name, 224)
        train, features = measure(name, size, args.batch, args.steps, args.warmup, jit)
        shown = f"{features:15.1f}" if features is not None else f"{'n/a':>15}"
        print(f"{name:<12} {size:>5} {train:12.1f} {shown}", flush=True)
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
