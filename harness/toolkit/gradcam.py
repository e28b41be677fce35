"""Grad-CAM heat maps (Selvaraju et al. 2017) for any harness model, on every Keras backend.

API (imports Keras on first call, not on import):

- ``grad_cam(model, inputs, class_index=None, layer=None, batch_size=32) -> np.ndarray``:
  float32 heat maps ``(n, height, width)`` in [0, 1] at the image size, one per image; 1 where
  the chosen class's evidence is strongest, all 0 where there is none.
- ``GradCam(model, layer=None)``: the same, prepared once for repeated calls (a server):
  ``GradCam(model)(inputs, class_index=None, batch_size=32)``; ``.layer`` is the layer used.
- ``overlay(image, heatmap, alpha=0.4, colormap="jet") -> np.ndarray``: one uint8 RGB image
  ``(height, width, 3)``, the heat map coloured and blended onto ``image`` (uint8 RGB); the heat
  map is resized to the image if their sizes differ.

``model`` is a functional or Sequential Keras model as the harness builds and saves them (softmax
output). ``inputs`` is what the model takes: an image batch (uint8 0–255 or float, ``(n, h, w, 3)``),
or for a model with extra inputs the same dict (or list) the model is called with, e.g.
``{"image": pixels, "location": one_hot}``. ``class_index``: None explains each image's predicted
class; an int explains that class for every image; a sequence gives one class per image.

``layer`` names the layer whose feature map is explained; it may lie inside a nested model (the
backbone). By default: the nested layer named ``backbone`` (the pretrained base of the harness's
models, see ``harness.toolkit.backbones``), else the last layer with a 4-D output (the last
convolutional feature map). A model plugin can name a better one in ``ModelSpec.explain_layer``;
callers pass it on: ``grad_cam(model, x, layer=spec.explain_layer)``.

- ``default_layer(model) -> str``: the layer name used when ``layer`` is None.

Mistakes (an unknown layer, missing inputs, a class index out of range, a layer without a 4-D
output) raise ``HarnessError`` with one line. For an exported model folder
(``harness.serving.model_folder.ExportedModel``): decode the images with its ``decode``, build the
inputs as ``probabilities`` does, and average the maps of its fold models
(``np.mean([grad_cam(m, x) for m in exported.models], axis=0)``, then divide by the maximum).

How: the model is split at the layer into "inputs -> feature map A" and "A (and the inputs) ->
probabilities" by evaluating its functional graph node by node from A (no model is built, no
weights are copied, the model is left as it was). The gradient of the class's
log-probability with respect to A comes from the backend's own mechanism (TensorFlow's
GradientTape, ``jax.grad``, ``torch.autograd.grad``); the heat map is ReLU(sum_k alpha_k A_k), with
alpha_k the spatial mean of the gradient of channel k, resized bilinearly to the image and divided
by its maximum. The log-probability's gradient has the direction of the probability's, without its
vanishing when a prediction is certain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from harness.errors import HarnessError

#: The nested pretrained base of the harness's models (``harness.toolkit.backbones.BACKBONE``).
BACKBONE = "backbone"
#: Floor of the probability whose log is differentiated (a probability of exactly 0 has no log).
_TINY = 1e-30

Split = tuple[Callable[[list], Any], Callable[[Any, list], Any]]


class GradCam:
    """Grad-CAM for one model and layer, prepared once: ``GradCam(model, layer)(inputs)``."""

    def __init__(self, model, layer: str | None = None):
        self.model = model
        self.layer = layer if layer is not None else default_layer(model)
        self._features, self._head = split(model, self.layer)

    def __call__(self, inputs, class_index: int | Sequence[int] | None = None, batch_size: int = 32) -> np.ndarray:
        flat, size = _flat_inputs(self.model, inputs)
        n = len(flat[0])
        classes = None if class_index is None else np.asarray(class_index, dtype=int).reshape(-1)
        if classes is not None and len(classes) not in (1, n):
            raise HarnessError(f"grad_cam: give one class_index, or one per image ({n}), not {len(classes)}.")
        if classes is not None:
            classes = np.broadcast_to(classes, (n,))
        maps = []
        for start in range(0, n, batch_size):
            part = [x[start:start + batch_size] for x in flat]
            chosen = None if classes is None else classes[start:start + batch_size]
            features, gradients = self._gradients(part, chosen)
            maps.append(_cam(features, gradients))
        return _resize(np.concatenate(maps) if maps else np.zeros((0, 1, 1), "float32"), size)

    def _gradients(self, part: list, classes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        import keras

        part = [keras.ops.convert_to_tensor(x) for x in part]
        with _no_gradients():
            features = self._features(part)
            probabilities = keras.ops.convert_to_numpy(self._head(features, part))
        count = probabilities.shape[-1]
        if classes is None:
            classes = np.argmax(probabilities, axis=-1)
        if np.any((classes < 0) | (classes >= count)):
            wrong = sorted(set(classes.tolist()))
            raise HarnessError(f"grad_cam: class_index must lie in 0..{count - 1}, got {wrong}.")
        mask = keras.ops.convert_to_tensor(np.eye(count, dtype="float32")[classes])

        def score(a):
            p = keras.ops.cast(self._head(a, part), "float32")
            return keras.ops.sum(keras.ops.log(keras.ops.maximum(p, _TINY)) * mask)

        backend = keras.backend.backend()
        if backend not in _GRADIENT:
            raise HarnessError(f"grad_cam: the Keras backend '{backend}' has no gradients here; "
                               "use tensorflow, jax or torch.")
        gradients = _GRADIENT[backend](score, features)
        return keras.ops.convert_to_numpy(features), keras.ops.convert_to_numpy(gradients)


def grad_cam(model, inputs, class_index: int | Sequence[int] | None = None, layer: str | None = None,
             batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heat maps ``(n, height, width)`` float32 in [0, 1] for ``inputs`` (see the module doc)."""
    return GradCam(model, layer)(inputs, class_index, batch_size)


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """``heatmap`` (h, w) in [0, 1], coloured with ``colormap``, blended onto a uint8 RGB image."""
    import matplotlib

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise HarnessError(f"overlay: expected one RGB image (height, width, 3), got shape {image.shape}.")
    heat = np.asarray(heatmap, dtype="float32")
    if heat.shape != image.shape[:2]:
        heat = _resize(heat[None], image.shape[:2])[0]
    colours = matplotlib.colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype("float32") + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def default_layer(model) -> str:
    """The layer Grad-CAM explains by default: a nested ``backbone``, else the last 4-D output."""
    if _path_to(model, BACKBONE):
        return BACKBONE
    for layer in reversed(_layers_in_order(model)):
        if _is_input(layer):
            continue
        shape = _output_tensor(model, layer).shape
        if len(shape) == 4:
            return layer.name
    raise HarnessError(
        f"grad_cam: model '{model.name}' has no layer with a 4-D (feature map) output; name one with layer=."
    )


def split(model, name: str) -> Split:
    """``(features, head)``: ``features(flat_inputs) -> A`` at layer ``name``; ``head(A, flat_inputs)``
    -> the model's output. ``flat_inputs`` is ``keras.tree.flatten`` of what the model takes."""
    path = _path_to(model, name)
    if not path:
        from harness.toolkit.text import did_you_mean

        raise HarnessError(f"grad_cam: model '{model.name}' has no layer '{name}', nested ones included."
                           f"{did_you_mean(name, _all_names(model))} Leave layer unset for the default.")
    return _split_at(model, path)


def _split_at(model, path: list) -> Split:
    import keras

    layer = path[0]
    if isinstance(model, keras.Sequential):
        return _split_sequential(model, path)
    if not hasattr(model, "_nodes") or not hasattr(model, "inputs"):
        raise HarnessError(f"grad_cam: model '{model.name}' is not a functional or Sequential Keras model.")
    node = _node_of(model, layer)
    inputs, outputs = list(model.inputs), list(model.outputs)

    def given(flat) -> dict:
        return {id(t): x for t, x in zip(inputs, flat)}

    def result(known: dict):
        values = [_evaluate(t, known) for t in outputs]
        return values[0] if len(values) == 1 else values

    feature = node.output_tensors[0]
    if len(path) == 1:
        return (lambda flat: _evaluate(feature, given(flat))), (lambda a, flat: result({**given(flat), id(feature): a}))
    # The layer lies inside the nested model ``layer``: split that, and join its parts to this graph.
    inner_features, inner_head = _split_at(layer, path[1:])

    def to_inner(flat) -> list:
        known = given(flat)
        return [_evaluate(t, known) for t in node.input_tensors]

    def head(a, flat):
        return result({**given(flat), id(feature): inner_head(a, to_inner(flat))})

    return (lambda flat: inner_features(to_inner(flat))), head


def _evaluate(tensor, known: dict):
    """The value of a symbolic tensor of a functional graph, given ``known`` values by tensor id.

    Only the nodes between the known tensors and ``tensor`` run, eagerly: no new model is built and
    the model's graph is left as it was (rewiring it with ``keras.Model`` on inner tensors clones
    nodes and leaves the model unsavable).
    """
    import keras

    if id(tensor) not in known:
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        if node.is_input:
            raise HarnessError(f"grad_cam: the input '{tensor.name}' was not given.")
        for parent in node.input_tensors:
            _evaluate(parent, known)
        args, kwargs = node.arguments.fill_in(known)
        for symbolic, value in zip(node.outputs, keras.tree.flatten(operation(*args, **kwargs))):
            known[id(symbolic)] = value
    return known[id(tensor)]


def _split_sequential(model, path: list) -> Split:
    layers = list(model.layers)
    index = layers.index(path[0])

    def run(x, chosen):
        for layer in chosen:
            x = layer(x, training=False)
        return x

    if len(path) == 1:
        return (lambda flat: run(flat[0], layers[:index + 1])), (lambda a, flat: run(a, layers[index + 1:]))
    inner_features, inner_head = _split_at(path[0], path[1:])
    return (
        lambda flat: inner_features([run(flat[0], layers[:index])]),
        lambda a, flat: run(inner_head(a, [run(flat[0], layers[:index])]), layers[index + 1:]),
    )


def _path_to(model, name: str) -> list:
    """The chain of layers from ``model`` down to the layer ``name`` (outermost first), or []."""
    for layer in getattr(model, "layers", []):
        if layer.name == name:
            return [layer]
    for layer in getattr(model, "layers", []):
        below = _path_to(layer, name) if hasattr(layer, "layers") else []
        if below:
            return [layer, *below]
    return []


def _all_names(model) -> list[str]:
    names = []
    for layer in getattr(model, "layers", []):
        names += [layer.name, *_all_names(layer)]
    return names


def _layers_in_order(model) -> list:
    return list(getattr(model, "layers", []))


def _is_input(layer) -> bool:
    return type(layer).__name__ == "InputLayer"


def _output_tensor(model, layer):
    import keras

    if isinstance(model, keras.Sequential):
        return layer.output
    return _node_of(model, layer).output_tensors[0]


def _node_of(model, layer):
    """The node where ``model``'s own graph calls ``layer`` (a layer may also sit in other graphs)."""
    nodes = getattr(model, "_nodes", set())
    mine = [n for i, n in enumerate(layer._inbound_nodes) if f"{id(layer)}_ib-{i}" in nodes]
    if not mine and len(layer._inbound_nodes) == 1:
        mine = list(layer._inbound_nodes)
    if len(mine) != 1:
        raise HarnessError(
            f"grad_cam: layer '{layer.name}' is called {len(mine)} times in model '{model.name}'; name a layer "
            "called once with layer=."
        )
    return mine[0]


def _flat_inputs(model, inputs) -> tuple[list, tuple[int, int]]:
    """The model's inputs as a flat list of float32 arrays, and the image size (height, width)."""
    import keras

    wanted = getattr(model, "input", None)
    if isinstance(wanted, dict) and isinstance(inputs, dict):
        missing = sorted(set(wanted) - set(inputs))
        if missing:
            raise HarnessError(f"grad_cam: model '{model.name}' needs the input(s) {', '.join(missing)}; give "
                               f"{{{', '.join(repr(k) for k in wanted)}}}.")
        inputs = {name: inputs[name] for name in wanted}
    flat = [np.asarray(x) for x in keras.tree.flatten(inputs)]
    expected = len(getattr(model, "inputs", None) or [None])
    if len(flat) != expected:
        raise HarnessError(
            f"grad_cam: model '{model.name}' takes {expected} input(s), got {len(flat)}; give extra inputs as the "
            "dict the model is called with, e.g. {'image': pixels, 'location': one_hot}."
        )
    images = [x for x in flat if x.ndim == 4]
    if not images or len({len(x) for x in flat}) != 1:
        raise HarnessError(
            "grad_cam: expected an image batch (n, height, width, 3) and extra inputs with the same n rows, got "
            f"shapes {[x.shape for x in flat]}."
        )
    return [x.astype("float32") for x in flat], tuple(images[0].shape[1:3])


def _cam(features: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """ReLU(sum_k alpha_k A_k), alpha_k the spatial mean of dscore/dA_k, for (n, h', w', c) arrays."""
    if features.ndim != 4:
        raise HarnessError(f"grad_cam: the layer's output has shape {features.shape}; choose a layer with a 4-D "
                           "(n, height, width, channels) feature map.")
    weights = gradients.astype("float64").mean(axis=(1, 2))
    return np.maximum(np.einsum("nhwc,nc->nhw", features.astype("float64"), weights), 0.0).astype("float32")


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each map resized bilinearly to ``size`` (height, width), then divided by its maximum."""
    from PIL import Image

    out = np.zeros((len(maps), *size), dtype="float32")
    for i, heat in enumerate(maps):
        resized = np.asarray(Image.fromarray(heat.astype("float32")).resize(size[::-1], Image.BILINEAR))
        resized = np.maximum(resized, 0.0)
        top = float(resized.max())
        if top > 0 and np.isfinite(top):
            out[i] = resized / top
    return out


def _no_gradients():
    """No gradient recording while the feature map is computed, where the backend records by default."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return nullcontext()


def _tensorflow_gradient(score, features):
    # Chosen only when Keras runs on TensorFlow; one of the two modules allowed to import it
    # (tests/test_backends.py), as each backend's gradient needs its own mechanism.
    import tensorflow as tf

    features = tf.convert_to_tensor(features)
    with tf.GradientTape() as tape:
        tape.watch(features)
        value = score(features)
    return tape.gradient(value, features)


def _jax_gradient(score, features):
    import jax

    return jax.grad(score)(features)


def _torch_gradient(score, features):
    import torch

    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(score(features), features)
    return gradient


#: Each backend's own gradient of a scalar function of the feature map.
_GRADIENT = {"tensorflow": _tensorflow_gradient, "jax": _jax_gradient, "torch": _torch_gradient}
