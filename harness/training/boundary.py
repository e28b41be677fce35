"""Boundary cache for fine-tuning: the tensor crossing the cut between a backbone's frozen bottom
and its trained top, computed once per image and augmentation view.

A fine-tuning phase that trains the backbone from layer i on (``set_base_trainable``) leaves
layers 0..i-1 frozen, so what they hand to layer i never changes during a study. The model is
split there into a bottom (image → the boundary tensor) and a top (boundary tensor [+ extra
inputs] → probabilities) that is built from the model's own layers, so training the top trains
the model. Where the requested cut falls inside a block whose branches cross it (a residual
connection), the cut moves down to the nearest point crossed by one tensor; the layers in between
stay frozen in the top part, which computes what they computed.

Rows are stored in the study's precision (bfloat16 as float32, which holds it exactly) as one
``.npy`` per computed chunk beside a ``.json`` list of its image ids, under
``<cache>/boundary/<bottom key>-cut<i>/<view>/``, and read back memory-mapped
(``np.load(mmap_mode="r", allow_pickle=False)``): a fold gathers only the rows of its batches.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.config.study import parse_budget  # noqa: F401  (re-exported for the budget's users)
from harness.core import settings
from harness.core.settings import BUDGET_ENV
from harness.errors import HarnessError
from harness.training.features import FeatureCache, backbone_key, index_listings, rechunk, save_rows, view_batches

log = logging.getLogger("harness.training.boundary")

#: ``BUDGET_ENV``, the environment variable: the most bytes one cut's boundary cache may add to disk,
#: as a share of the free space where the cache lives ("50%") or a size ("20G", "500M", "0").
DEFAULT_BUDGET = "50%"
#: A cut whose frozen bottom holds less than this share of the backbone's multiply-adds saves
#: too little per epoch to be worth a cache: the phase runs end to end.
MIN_FROZEN_SHARE = 0.1
#: Images passed through the bottom and written per file.
CHUNK_ROWS = 256

def budget_bytes(cache_root: Path, budget: str = DEFAULT_BUDGET) -> int:
    """The boundary cache's budget for one cut: the study's ``boundary_cache_budget`` (or
    ``$HARNESS_BOUNDARY_CACHE_BUDGET``), a share of the free disk where the cache lives or a size."""
    cache_root = Path(cache_root)
    probe = cache_root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    text = settings.current().boundary_cache_budget or budget
    try:
        return parse_budget(text, shutil.disk_usage(probe).free)
    except ValueError as exc:
        raise HarnessError(f"{BUDGET_ENV}: {exc}") from None


def multiply_adds(layer) -> int:
    """Rough per-image cost of a layer: its kernel's multiply-adds per output position times the
    positions (Conv2D, DepthwiseConv2D, SeparableConv2D, Dense), else its output's size."""
    output = layer.output
    spatial = math.prod(output.shape[1:-1])
    kernels = [getattr(layer, name, None) for name in ("kernel", "depthwise_kernel", "pointwise_kernel")]
    kernels = [k for k in kernels if k is not None]
    if kernels:
        return spatial * sum(math.prod(k.shape) for k in kernels)
    return math.prod(output.shape[1:])


def _producer(tensor):
    return tensor._keras_history.operation  # Keras's record of the operation that made a symbolic tensor


def crossing_tensors(base, cut: int) -> list | None:
    """The tensors made below layer ``cut`` of ``base.layers`` and used at or above it (the base's
    outputs included); None when a layer is called more than once, which this split cannot follow."""
    operations = base._operations  # base.layers is its Layer subset, in the same order
    # The base's own graph: splitting a model adds nodes to the layers above the cut (Keras
    # re-calls them on the top part's input), which are not the base's.
    in_graph = {id(node) for nodes in base._nodes_by_depth.values() for node in nodes}
    node_of = {}
    for op in operations:
        nodes = [node for node in op._inbound_nodes if id(node) in in_graph]
        if len(nodes) != 1:
            return None
        node_of[id(op)] = nodes[0]
    position = len(operations) if cut >= len(base.layers) else operations.index(base.layers[cut])
    below = {id(op) for op in operations[:position]}
    crossing: dict[int, Any] = {}
    for op in operations[position:]:
        for tensor in node_of[id(op)].input_tensors:
            if id(_producer(tensor)) in below:
                crossing[id(tensor)] = tensor
    for tensor in base.outputs:
        if id(_producer(tensor)) in below:
            crossing[id(tensor)] = tensor
    return list(crossing.values())


def single_tensor_cut(base, start: int) -> int | None:
    """The highest cut ≤ ``start`` that one tensor crosses (``start`` itself outside any block);
    None when there is none above the input."""
    for cut in range(start, 0, -1):
        crossing = crossing_tensors(base, cut)
        if crossing is None:
            return None
        if len(crossing) == 1:
            return cut
    return None


@dataclass
class BoundarySplit:
    """A model cut inside its backbone: ``bottom`` (image → boundary tensor) and ``top`` (boundary
    [+ extra inputs] → probabilities, the model's own layers)."""

    cut: int
    requested: int
    bottom: Any
    top: Any
    key: str
    frozen_share: float
    row_shape: tuple[int, ...]
    row_dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        return int(math.prod(self.row_shape) * self.row_dtype.itemsize)


def split_at_boundary(model, base, start: int, image_size: tuple[int, int]) -> BoundarySplit | str:
    """Split ``model`` where its backbone ``base`` starts training (layer ``start``, moved down to a
    single-tensor cut); a sentence saying why not when it cannot be split usefully."""
    import keras

    nodes = base._inbound_nodes
    if len(nodes) != 1:
        return "the backbone is called more than once in the model"
    if start < 1:
        return "the whole backbone trains: there is no frozen part to cache"
    cut = single_tensor_cut(base, start)
    if cut is None:
        return f"no point at or below backbone layer {start} is crossed by a single tensor"
    costs = [multiply_adds(layer) for layer in base.layers]
    frozen_share = sum(costs[:cut]) / max(sum(costs), 1)
    if frozen_share < MIN_FROZEN_SHARE:
        return (f"the cut at backbone layer {cut} is too low to gain: the frozen part below it holds "
                f"{frozen_share:.0%} of the backbone's multiply-adds (less than {MIN_FROZEN_SHARE:.0%})")
    [boundary] = crossing_tensors(base, cut)
    outer = nodes[0]
    call_kwargs = {k: v for k, v in outer.arguments.kwargs.items() if k == "training"}
    inputs = model.inputs
    image = next((t for t in inputs if t.name.split(":")[0] == "image"), inputs[0])
    extras = [t for t in inputs if t is not image]

    inner_bottom = keras.Model(base.inputs[0], boundary, name=f"{base.name}_bottom")
    bottom = keras.Model(image, inner_bottom(outer.input_tensors[0], **call_kwargs), name=f"{model.name}_bottom")
    inner_top = keras.Model(boundary, base.outputs[0], name=f"{base.name}_top")
    after_base = keras.Model([outer.outputs[0], *extras], model.outputs[0], name=f"{model.name}_after_backbone")
    boundary_input = keras.Input(shape=boundary.shape[1:], dtype=boundary.dtype, name="boundary")
    top_inputs = [boundary_input, *extras]
    outputs = after_base([inner_top(boundary_input, **call_kwargs), *extras])
    top = keras.Model(top_inputs if extras else boundary_input, outputs, name=f"{model.name}_top")
    dtype = np.dtype("float16") if boundary.dtype == "float16" else np.dtype("float32")
    return BoundarySplit(
        cut, start, bottom, top, boundary_key(bottom, image_size, cut), frozen_share, tuple(boundary.shape[1:]), dtype
    )


def boundary_key(bottom, image_size: tuple[int, int], cut: int) -> str:
    """``backbone_key`` of the bottom, plus its nested layers' types and precisions, plus the cut."""
    digest = hashlib.sha256(backbone_key(bottom, image_size).encode())

    def walk(layer):
        for inner in getattr(layer, "layers", []):
            policy = getattr(getattr(inner, "dtype_policy", None), "name", "")
            digest.update(f"{inner.__class__.__name__}/{policy}/".encode())
            walk(inner)

    walk(bottom)
    return f"{digest.hexdigest()[:20]}-cut{cut}"


class MappedRows:
    """Rows of one tensor per image, gathered on demand from memory-mapped ``.npy`` files.

    ``rows[index]`` (an integer array or a slice) reads those rows into an array; ``take(index)``
    is the subset as another ``MappedRows``, without reading.
    """

    def __init__(self, arrays: list[np.ndarray], file_of: np.ndarray, row_of: np.ndarray, dtype, row_shape):
        self.arrays, self.file_of, self.row_of = arrays, file_of, row_of
        self.dtype, self.shape = np.dtype(dtype), (len(file_of), *row_shape)

    def __len__(self) -> int:
        return len(self.file_of)

    def take(self, index) -> MappedRows:
        return MappedRows(self.arrays, self.file_of[index], self.row_of[index], self.dtype, self.shape[1:])

    def __getitem__(self, index) -> np.ndarray:
        file_of, row_of = self.file_of[index], self.row_of[index]
        out = np.empty((len(file_of), *self.shape[1:]), self.dtype)
        for f in np.unique(file_of):
            chosen = file_of == f
            out[chosen] = self.arrays[f][row_of[chosen]]
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


class BoundaryCache:
    """Boundary tensors on disk under ``<root>/boundary/<key>/<view>/``, read memory-mapped."""

    def __init__(self, root: Path):
        self.root = Path(root) / "boundary"
        self.computed = 0
        self.loaded = 0
        self._stored: dict[Path, dict[str, tuple[str, int]]] = {}  # folder → id → (file name, row)
        self._listed: set[Path] = set()
        self._mapped: dict[Path, np.ndarray] = {}

    def missing(self, key: str, ids: list[str], view: int = 0) -> int:
        """How many distinct ``ids`` have no stored row yet for ``key`` and ``view``."""
        stored = self._index(self.root / key / str(view))
        return len(set(ids) - stored.keys())

    def rows(self, split: BoundarySplit, images: np.ndarray, ids: list[str], view: int = 0, make_augmenter=None,
             batch_size: int = 64, predict=None) -> MappedRows:
        """The boundary rows of ``images`` (n, h, w, 3 uint8, read a chunk at a time) for ``view``
        (0: the image itself; views 1..V pass through ``make_augmenter()``'s layer first, seeded by
        view, as the feature cache does), computing and storing the missing ones with
        ``predict(bottom, batch, batch_size)``."""
        folder = self.root / split.key / str(view)
        stored = self._index(folder)
        wanted = list(dict.fromkeys(i for i in ids if i not in stored))
        if wanted:
            first = {image_id: position for position, image_id in reversed(list(enumerate(ids)))}
            augmenter = make_augmenter if view > 0 else None
            batches = view_batches(images, [first[i] for i in wanted], augmenter, view, batch_size)
            for start, chunk in zip(range(0, len(wanted), CHUNK_ROWS), rechunk(batches, CHUNK_ROWS)):
                if predict is None:
                    computed = split.bottom.predict(chunk, batch_size=batch_size, verbose=0)
                else:
                    computed = predict(split.bottom, chunk, batch_size)
                save_rows(folder, wanted[start : start + CHUNK_ROWS], np.asarray(computed).astype(split.row_dtype))
            self.computed += len(wanted)
            stored = self._index(folder)
        self.loaded += len(set(ids)) - len(wanted)
        names = sorted({stored[i][0] for i in ids})
        number = {name: n for n, name in enumerate(names)}
        arrays = [self._map(folder / f"{name}.npy") for name in names]
        file_of = np.array([number[stored[i][0]] for i in ids], dtype=np.int64)
        row_of = np.array([stored[i][1] for i in ids], dtype=np.int64)
        return MappedRows(arrays, file_of, row_of, split.row_dtype, split.row_shape)

    def _map(self, path: Path) -> np.ndarray:
        if path not in self._mapped:
            self._mapped[path] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._mapped[path]

    def _index(self, folder: Path) -> dict[str, tuple[str, int]]:
        """Where each stored id's row is (re-reading the folder: other workers add files). A list
        whose rows file is missing or unreadable is skipped: those rows are computed again."""
        return index_listings(
            folder, self._listed, self._stored.setdefault(folder, {}),
            usable=lambda listing, names: len(self._map(listing.with_suffix(".npy"))) == len(names),
        )


def boundary_cache_for(features: FeatureCache) -> BoundaryCache:
    """The boundary cache of fine-tuning phases beside a feature cache (one per feature cache)."""
    if features.boundary is None:
        features.boundary = BoundaryCache(features.root.parent)
    return features.boundary


def say_end_to_end(reason: str, said: set[str]) -> None:
    """Log why a fine-tuning phase runs end to end, unless ``said`` (the reasons already logged,
    one set per ``ModelKeeper``: once per worker process) holds it."""
    if reason not in said:
        said.add(reason)
        log.warning("fine-tuning end to end, not from the boundary cache: %s", reason)
