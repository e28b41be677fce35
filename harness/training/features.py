"""Feature cache for frozen backbones: pooled features computed once per image and view.

While a backbone is frozen its features of an image never change, so a K-fold × N-trial search
only needs them once. A model qualifies when it has a layer named ``backbone`` followed by one
named ``pool`` (as every ``harness.toolkit.backbones`` model does); it is split into an extractor (image →
pooled features) and a head (features [+ extra inputs] → probabilities) that shares the model's own
head layers, so training the head trains the model.

Features are stored as one ``.npy`` per image and view under
``<cache>/features/<backbone key>/<view>/<image content hash>.npy``; the backbone key hashes the
extractor's weights, its layer configuration (preprocessing included) and the input size.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.files import atomic_write, atomic_writer
from harness.data.stacked import blocks, read_rows

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


def content_ids(images) -> list[str]:
    """A content hash per decoded image (so the same picture under another name shares features),
    read a block of rows at a time."""
    return [hashlib.sha1(image.tobytes()).hexdigest()[:20] for _, block in blocks(images) for image in block]


class FeatureCache:
    """Pooled features on disk, with an in-process memo.

    Each computed batch is one ``<name>.npy`` (rows of features) beside ``<name>.json`` (the rows'
    image ids) under ``features/<backbone key>/<view>/``; any later list of images takes its rows
    from whichever files hold them.
    """

    def __init__(self, root: Path):
        self.root = Path(root) / "features"
        self._memo: dict[tuple[str, int, str], np.ndarray] = {}
        self._ids: dict[int, tuple[np.ndarray, list[str]]] = {}
        self._stored: dict[Path, dict[str, tuple[str, int]]] = {}  # folder → id → (file name, row)
        self._listed: set[Path] = set()
        self.computed = 0
        self.loaded = 0
        #: The ``ModelKeeper`` of the fits that use this cache and pass none of their own, and the
        #: ``BoundaryCache`` beside it: made by ``harness.training.fit`` and ``boundary_cache_for``.
        self.keeper: Any = None
        self.boundary: Any = None

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
        predict=None,
    ) -> np.ndarray:
        """Features of ``images`` (n, h, w, 3 uint8: an array, the image cache's memory map or
        ``ImageRows``, read a chunk at a time) for ``view``: 0 is the image itself; views 1..V
        pass first through the layer ``make_augmenter()`` builds, in training mode, seeded by view.
        ``predict(extractor, images, batch_size)`` computes them (default: the extractor's ``predict``).

        Changes the global seeds when it augments (training does not depend on them).
        """
        folder = self.root / key / str(view)
        out = [self._memo.get((key, view, image_id)) for image_id in ids]
        if any(found is None for found in out):
            self._load(folder, key, view, {ids[i] for i, found in enumerate(out) if found is None})
            out = [self._memo.get((key, view, image_id)) for image_id in ids]
        missing = [i for i, found in enumerate(out) if found is None]
        if missing:
            computed = []
            # In chunks of whole batches: the batches and the augmenter's draws are those of one pass.
            augmenter = make_augmenter if view > 0 else None
            for chunk in rechunk(view_batches(images, missing, augmenter, view, batch_size), batch_size * 16):
                part = extractor.predict(chunk, batch_size=batch_size, verbose=0) if predict is None else \
                    predict(extractor, chunk, batch_size)
                computed.append(np.asarray(part, dtype="float32"))
            computed = np.concatenate(computed)
            new_ids = list(dict.fromkeys(ids[i] for i in missing))
            rows = {image_id: row for row, image_id in zip(computed, (ids[i] for i in missing))}
            save_rows(folder, new_ids, np.stack([rows[i] for i in new_ids]))
            for i in missing:
                out[i] = self._memo[(key, view, ids[i])] = rows[ids[i]]
            self.computed += len(missing)
        return np.stack(out)

    def _load(self, folder: Path, key: str, view: int, wanted: set[str]) -> None:
        """Memoise the stored rows of ``wanted`` ids (re-reading the folder: other workers add files)."""
        stored = index_listings(folder, self._listed, self._stored.setdefault(folder, {}))
        by_file: dict[str, list[str]] = {}
        for image_id in wanted & stored.keys():
            by_file.setdefault(stored[image_id][0], []).append(image_id)
        for name, image_ids in by_file.items():
            try:
                rows = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                for image_id in image_ids:
                    self._memo[(key, view, image_id)] = np.array(rows[stored[image_id][1]])
            except (OSError, ValueError, IndexError):
                continue
            self.loaded += len(image_ids)


def index_listings(folder: Path, listed: set[Path], stored: dict[str, tuple[str, int]],
                   usable: Callable[[Path, list[str]], bool] | None = None) -> dict[str, tuple[str, int]]:
    """Add to ``stored`` where each id of the folder's new listings (``*.json`` beside ``*.npy``
    rows) is: (file stem, row). Re-reads the folder, since other workers add files. A listing that
    cannot be read, or that ``usable`` rejects, is skipped: its rows are computed again."""
    for listing in sorted(folder.glob("*.json")) if folder.exists() else []:
        if listing in listed:
            continue
        try:
            names = json.loads(listing.read_text())
            if usable is not None and not usable(listing, names):
                continue
        except (OSError, ValueError):
            continue
        listed.add(listing)
        stored.update({image_id: (listing.stem, row) for row, image_id in enumerate(names)})
    return stored


def augment_view(make_augmenter, images: np.ndarray, seed: int, batch_size: int) -> np.ndarray:
    """``images`` through ``make_augmenter()``'s layer in training mode, seeded by ``seed``, as float32."""
    return np.concatenate(list(view_batches(images, np.arange(len(images)), make_augmenter, seed, batch_size)))


def view_batches(images, rows, make_augmenter, seed: int, batch_size: int):
    """The ``rows`` of ``images`` (an array, a memory map or ``ImageRows``), ``batch_size`` at a
    time, read as they are needed: as they are without ``make_augmenter``, else through the layer it
    makes in training mode, built after seeding with ``seed`` (float32, clipped to 0–255)."""
    augmenter = keras = None
    if make_augmenter is not None:
        import keras

        keras.utils.set_random_seed(seed)  # random layers draw their seeds when built: build after seeding
        augmenter = make_augmenter()
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        batch = read_rows(images, rows[start : start + batch_size])
        if augmenter is None:
            yield batch
        else:
            chunk = augmenter(batch.astype("float32"), training=True)
            yield np.clip(keras.ops.convert_to_numpy(chunk), 0, 255).astype("float32")


def rechunk(batches, size: int):
    """The rows of ``batches`` (arrays) again, as arrays of ``size`` rows (the last may be shorter)."""
    held, count = [], 0
    for batch in batches:
        held.append(batch)
        count += len(batch)
        while count >= size:
            joined = np.concatenate(held)
            yield joined[:size]
            held, count = [joined[size:]], count - size
    if count:
        yield np.concatenate(held)


def save_rows(folder: Path, ids: list[str], rows: np.ndarray) -> None:
    """One file of rows and, after it, the list of their ids: a reader that finds the list finds the rows."""
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:20]
    # No fsync: a cache file lost to a crash is computed again; the rename keeps a torn one from being read.
    with atomic_writer(folder / f"{name}.npy", fsync=False, sweep=True) as fh:
        np.save(fh, rows, allow_pickle=False)
    atomic_write(folder / f"{name}.json", json.dumps(ids), fsync=False)
