"""The toolkit for plugin authors: what a model or dataset plugin may use besides ``harness`` itself.

Everything below is importable from ``harness.toolkit`` (``from harness.toolkit import
build_pretrained``) or from its module. The names of ``backbones`` import Keras, which takes
seconds: they are loaded on first use, so ``import harness.toolkit`` stays cheap (``harness --help``
does not wait for Keras).

For model authors (``harness.toolkit.backbones``, imports Keras):

- ``build_pretrained(context, application, *, name, preprocessing, minimum=32, extra_inputs=(), **kw)``:
  a whole model from a ``keras.applications`` constructor: image -> ``Preprocess`` -> backbone
  (named ``BACKBONE``, so the core's freezing rules find it) -> pooling [-> extra inputs] -> head ->
  softmax. It reads ``context.params["pooling"]``, ``["head"]`` and ``["dropout"]``, honours
  ``context.weights`` ("imagenet", "none" or a file) and names a missing ImageNet file and the cache.
- ``Preprocess(mode)``: the backbone's input preprocessing as a Keras layer, one of ``PREPROCESSING``
  ("caffe", "tf", "torch", "lite", "none"); a saved model holding it loads after
  ``import harness.toolkit.backbones``.
- ``pretrained_base(application, context, model, minimum, **kw)``: only the backbone, with the
  study's weights; ``pool(x, pooling)`` (one of ``POOLING``) and ``classifier(x, num_classes, head,
  dropout)``: the parts after it, for a model that assembles its own graph.
- ``check_size(model, size, minimum)``: the clear error for images smaller than the architecture takes.
- ``random_weights(weights)``: whether the study asks for random weights ("none").
- ``keras_cache_dir()``: where Keras keeps downloaded weights ($KERAS_HOME/models).

Explaining predictions (``harness.toolkit.gradcam``, imports Keras on first call; any backend):

- ``grad_cam(model, inputs, class_index=None, layer=None, batch_size=32)``: Grad-CAM heat maps,
  float32 ``(n, height, width)`` in [0, 1], of the predicted (or given) class; ``inputs`` as the
  model takes them (images, or a dict with extra inputs); ``layer`` defaults to the ``backbone``'s
  output, else the last 4-D output (``ModelSpec.explain_layer`` names another).
- ``GradCam(model, layer=None)``: the same, prepared once for many calls.
- ``overlay(image, heatmap, alpha=0.4, colormap="jet")``: the map coloured and blended onto a
  uint8 RGB image.

Reading PyTorch weights (``harness.toolkit.torch_weights``, no PyTorch needed):

- ``read_state_dict(path)``: a ``.pth`` file's tensors as NumPy arrays, by name, without running
  any pickled code; ``UnsafeWeightsError`` when the file asks for anything but tensors.

Augmentation (``harness.toolkit.augment``):

- ``Augment``: the study file's ``[train.augment]`` settings (``FLIPS``, ``FILL_MODES``);
  ``augmentation_layers(augment)`` the Keras layers; ``with_augmentation(model, augment)`` the model
  with them in front (active in training only).

For dataset authors (``harness.toolkit.files``, ``harness.toolkit.text``):

- ``is_ignored(name)``: a hidden or system file or folder (.DS_Store, Thumbs.db, __MACOSX) a
  dataset skips without reporting it (``SYSTEM_FILES``, ``SYSTEM_FOLDERS``).
- ``plural(count, noun)``: "1 image", "3 classes", for messages.
- ``did_you_mean(name, choices)``: " Did you mean 'x'?" for the closest choice, or "".

The toolkit is in the API layer of the import contract: it imports ``harness.specs``,
``harness.errors``, ``harness.core`` and itself only.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.toolkit.augment import FILL_MODES, FLIPS, Augment, augmentation_layers, with_augmentation
from harness.toolkit.files import SYSTEM_FILES, SYSTEM_FOLDERS, is_ignored
from harness.toolkit.text import did_you_mean, plural
from harness.toolkit.torch_weights import UnsafeWeightsError, read_state_dict

#: Names loaded on first use, by the module that holds them (backbones imports Keras; gradcam, on first call).
LAZY = {
    **{
        name: "harness.toolkit.backbones"
        for name in (
            "BACKBONE", "POOLING", "PREPROCESSING", "Preprocess", "build_pretrained", "check_size",
            "classifier", "keras_cache_dir", "pool", "pretrained_base", "random_weights",
        )
    },
    **{name: "harness.toolkit.gradcam" for name in ("GradCam", "grad_cam", "overlay")},
}

__all__ = [
    "FILL_MODES", "FLIPS", "SYSTEM_FILES", "SYSTEM_FOLDERS", "Augment", "UnsafeWeightsError",
    "augmentation_layers", "did_you_mean", "is_ignored", "plural", "read_state_dict",
    "with_augmentation", *LAZY,
]


def __getattr__(name: str) -> Any:
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'harness.toolkit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY))
