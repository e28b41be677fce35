"""The model contract: checks a model plugin's ``ModelSpec`` passes, at a small size, on a CPU.

A model builds with random weights (``weights = "none"``) for a few classes at ``SMALL`` pixels (or
at the minimum its size check names), has the inputs it declares, outputs a softmax over the classes,
takes a training step under the core's freezing rule, and round-trips through ``.keras`` save/load.
Its parameters all have defaults, its search space parses and tunes only parameters it has.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.config.space import parse_dimension, thaw
from harness.config.study import TrainConfig
from harness.errors import HarnessError
from harness.specs import REQUIRED, BuildContext, ModelSpec

#: The image side the checks build at, unless the model's size check asks for more.
SMALL = 32
CLASSES = 3
#: Width of every one-hot extra input (such as ``location``).
LOCATIONS = 4

Built = TypeVar("Built")


def default_params(spec: ModelSpec) -> dict[str, Any]:
    """The model's parameter defaults, as a build gets them; every parameter must have one."""
    missing = [k for k, v in spec.params.items() if v is REQUIRED]
    assert not missing, f"model '{spec.name}' has required params {missing}: give them defaults so it can be tested"
    return {k: thaw(v) for k, v in spec.params.items()}


def context_for(spec: ModelSpec, size: int = SMALL, num_classes: int = CLASSES) -> BuildContext:
    """A build context at ``size`` × ``size`` with random weights and every declared extra input."""
    return BuildContext(
        num_classes=num_classes,
        image_size=(size, size),
        params=default_params(spec),
        extra_inputs={n: LOCATIONS for n in spec.inputs if n != "image"},
        weights="none",
    )


def minimum_size(error: HarnessError) -> int | None:
    """The smallest side a size check names ("needs images of at least 71×71 pixels"), or None."""
    found = re.search(r"at least (\d+)×(\d+)", str(error))
    return int(found.group(1)) if found else None


def build_small(spec: ModelSpec, build: Callable[[BuildContext], Built], size: int = SMALL) -> tuple[BuildContext, Built]:
    """``build(context)`` at ``size`` px, or at the minimum the model's size check names."""
    import keras

    try:
        return context_for(spec, size), build(context_for(spec, size))
    except HarnessError as exc:
        smallest = minimum_size(exc)
        if smallest is None or smallest <= size:
            raise
        keras.backend.clear_session()
        return context_for(spec, smallest), build(context_for(spec, smallest))


def sample_batch(spec: ModelSpec, context: BuildContext, n: int = 2) -> np.ndarray | dict[str, np.ndarray]:
    """Random 0–255 images (and one-hot extra inputs) the model takes: an array, or a dict by input name."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (n, *context.image_size, 3), dtype=np.uint8)
    if tuple(spec.inputs) == ("image",):
        return image
    arrays = {"image": image}
    for extra in spec.inputs[1:]:
        arrays[extra] = np.eye(LOCATIONS, dtype="float32")[rng.integers(0, LOCATIONS, n)]
    return arrays


def check_spec(spec: ModelSpec) -> None:
    """Name, inputs and image size well formed; parameters defaulted; the space parses and tunes
    only the model's parameters."""
    assert isinstance(spec.name, str) and spec.name, f"a model needs a name: {spec!r}"
    assert spec.inputs and spec.inputs[0] == "image", f"model '{spec.name}': the first input must be 'image'"
    assert len(spec.image_size) == 2 and all(isinstance(s, int) and s > 0 for s in spec.image_size), (
        f"model '{spec.name}': image_size must be (height, width), got {spec.image_size!r}")
    default_params(spec)
    for name, raw in spec.space.items():
        parse_dimension(name, thaw(raw), f"model '{spec.name}' space.{name}")
    untuned = sorted(set(spec.space) - set(spec.params))
    assert not untuned, f"model '{spec.name}': its space tunes {untuned}, which are not among its params"


def check_outputs(spec: ModelSpec, model: Any, context: BuildContext) -> None:
    """The declared inputs, and a softmax over the classes for a batch of two."""
    import keras

    assert sorted(t.name for t in model.inputs) == sorted(spec.inputs), (
        f"model '{spec.name}' has inputs {[t.name for t in model.inputs]}, declares {list(spec.inputs)}")
    probabilities = keras.ops.convert_to_numpy(model(sample_batch(spec, context), training=False))
    assert probabilities.shape == (2, context.num_classes)
    assert np.all(probabilities >= 0) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4), (
        f"model '{spec.name}' does not output a softmax: {probabilities}")


def check_training_step(model: Any, base: Any, x: Any) -> None:
    """One eager step on two images changes a trainable weight; a frozen backbone stays frozen."""
    import keras

    from harness.training.build import compile_model

    if base is not None:  # the frozen phase: only the head learns
        assert not any(w.trainable for w in base.weights)
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert before, "nothing to train"
    compile_model(model, "adam", 1e-2, run_eagerly=True)  # eager: one step costs less than tracing it
    loss = model.train_on_batch(x, np.array([0, 1]))
    assert np.isfinite(np.asarray(loss)).all()
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after)), "a training step changed no weight"


def check_save_load(model: Any, x: Any, folder: Path) -> None:
    """The model saved as ``.keras`` loads back and predicts the same."""
    import keras

    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = Path(folder) / f"{model.name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), expected, rtol=1e-4, atol=1e-5)


def prepare_small(spec: ModelSpec) -> tuple[BuildContext, tuple[Any, Any]]:
    """The model as the core prepares it for the first (frozen) phase, at a small size: (model, backbone)."""
    from harness.training.build import prepare_model

    return build_small(spec, lambda c: prepare_model(spec, c, TrainConfig(weights="none")))


def check_model(spec: ModelSpec, folder: Path | None = None, train_step: bool = True) -> None:
    """The whole contract: the spec, a small build's outputs, a training step and (given a folder) save/load."""
    import keras

    check_spec(spec)
    keras.backend.clear_session()
    context, (model, base) = prepare_small(spec)
    check_outputs(spec, model, context)
    x = sample_batch(spec, context)
    if train_step:
        check_training_step(model, base, x)
    if folder is not None:
        from harness.training.train import build_model

        keras.backend.clear_session()
        context, model = build_small(spec, lambda c: build_model(spec, c), context.image_size[0])
        check_save_load(model, sample_batch(spec, context), folder)
