"""Feature cache for frozen backbones: pooled features computed once per image and view.

While a backbone is frozen its features of an image never change, so a K-fold × N-trial search
only needs them once. A model qualifies when it has a layer named ``backbone`` followed by one
named ``pool`` (as every ``harness.backbones`` model does); it is split into an extractor (image →
pooled features) and a head (features [+ extra inputs] → probabilities) that shares the model's own
head layers, so training the head trains the model.

Features are stored as one ``.npy`` per image and view under
``<cache>/features/<backbone key>/<view>/<image content hash>.npy``; the backbone key hashes the
extractor's weights, its layer configuration (preprocessing included) and the input size.
"""

from __future__ import annotations

import hashlib
import random
import os
import tempfile
from pathlib import Path

import numpy as np

POOL_LAYER = "pool"


def split_model(model):
    """``(extractor, head)`` for a model with a frozen-able backbone and a ``pool`` layer, else None."""
    import keras

    try:
        pool = model.get_layer(POOL_LAYER)
    except ValueError:
        return None
    inputs = model.inputs
    image = next((t for t in inputs if t.name.split(":")[0] == "image"), inputs[0])
    extras = [t for t in inputs if t is not image]
    extractor = keras.Model(image, pool.output, name=f"{model.name}_features")
    head = keras.Model([pool.output, *extras], model.outputs[0], name=f"{model.name}_head")
    return extractor, head


def reset_head(head, seed: int, template=None) -> None:
    """Give a head (see ``split_model``) fresh initial weights and dropout seeds drawn from ``seed``.

    A clone of ``template`` (an uncompiled clone of the head; the head itself when None) built
    under the seed supplies them, so the result depends on the seed alone, not on what the head
    went through before (it may be kept and reused between folds). ``head`` None: no-op.
    """
    if head is None:
        return
    import keras

    # Keras draws a new layer's initializer and dropout seeds from Python's random (numpy for the
    # rest). keras.utils.set_random_seed would also reset TensorFlow's global seed, which drops
    # every traced function's kernels: ~0.1 s on the next call of each, every fold.
    random.seed(seed)
    np.random.seed(seed)
    fresh = keras.models.clone_model(head if template is None else template)
    for variable, initial in zip(head.variables, fresh.variables, strict=True):
        variable.assign(initial)


def backbone_key(extractor, image_size: tuple[int, int]) -> str:
    """Identity of what produces the features: layer types, preprocessing, precision, weights, size.

    Layer names are left out (Keras numbers them per session); the weights carry their source.
    """
    digest = hashlib.sha256(repr(tuple(image_size)).encode())
    for layer in extractor.layers:
        policy = getattr(getattr(layer, "dtype_policy", None), "name", "")
        digest.update(f"{layer.__class__.__name__}/{getattr(layer, 'mode', '')}/{policy}".encode())
    for weight in extractor.weights:
        value = np.ascontiguousarray(np.asarray(weight))
        digest.update(repr(value.shape).encode() + value.tobytes())
    return digest.hexdigest()[:20]


def content_ids(images: np.ndarray) -> list[str]:
    """A content hash per decoded image (so the same picture under another name shares features)."""
    return [hashlib.sha1(image.tobytes()).hexdigest()[:20] for image in images]


class FeatureCache:
    """Pooled features on disk, with an in-process memo."""

    def __init__(self, root: Path):
        self.root = Path(root) / "features"
        self._memo: dict[tuple[str, int, str], np.ndarray] = {}
        self._ids: dict[int, tuple[np.ndarray, list[str]]] = {}
        self.computed = 0
        self.loaded = 0

    def ids(self, images: np.ndarray) -> list[str]:
        """``content_ids(images)``, computed once per array for the life of this cache."""
        found = self._ids.get(id(images))
        if found is None or found[0] is not images:
            found = self._ids[id(images)] = (images, content_ids(images))  # holding it keeps the id unique
        return found[1]

    def features(
        self,
        extractor,
        key: str,
        images: np.ndarray,
        ids: list[str],
        view: int = 0,
        make_augmenter=None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Features of ``images`` (n, h, w, 3 uint8) for ``view``: 0 is the image itself; views 1..V
        pass first through the layer ``make_augmenter()`` builds, in training mode, seeded by view.

        Changes the global Keras seed when it augments: callers re-seed before training.
        """
        out: list[np.ndarray | None] = []
        missing = []
        folder = self.root / key / str(view)
        for i, image_id in enumerate(ids):
            found = self._memo.get((key, view, image_id))
            if found is None:
                path = folder / f"{image_id}.npy"
                if path.exists():
                    found = np.load(path, allow_pickle=False)
                    self._memo[(key, view, image_id)] = found
                    self.loaded += 1
            out.append(found)
            if found is None:
                missing.append(i)
        if missing:
            batch = images[missing]
            if view > 0 and make_augmenter is not None:
                batch = _augment(make_augmenter, batch, seed=view, batch_size=batch_size)
            computed = np.asarray(extractor.predict(batch, batch_size=batch_size, verbose=0), dtype="float32")
            folder.mkdir(parents=True, exist_ok=True)
            for i, vector in zip(missing, computed):
                self._memo[(key, view, ids[i])] = vector
                _save(folder / f"{ids[i]}.npy", vector)
                out[i] = vector
            self.computed += len(missing)
        return np.stack(out)


def _augment(make_augmenter, images: np.ndarray, seed: int, batch_size: int) -> np.ndarray:
    import keras

    keras.utils.set_random_seed(seed)  # random layers draw their seeds when built: build after seeding
    augmenter = make_augmenter()
    chunks = []
    for start in range(0, len(images), batch_size):
        chunk = augmenter(images[start : start + batch_size].astype("float32"), training=True)
        chunks.append(np.clip(keras.ops.convert_to_numpy(chunk), 0, 255))
    return np.concatenate(chunks).astype("float32")


def _save(path: Path, array: np.ndarray) -> None:
    """Write-then-rename, so a crash or a concurrent worker never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)
