"""The stacked pixel file is written as images decode (never the whole array in memory), renamed
into place only when complete, and mapped read-only; rows are gathered from it with plain reads."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from fixtures.image_layouts import class_folders, write_image

from harness.config.study import DatasetConfig
from harness.data import image_store
from harness.data.dataset import load_dataset
from harness.data.image_store import ImageStore
from harness.data.images import decode_file
from harness.data.stacked import StackWriter, blocks, open_stack, read_rows
from harness.errors import HarnessError
from harness.plugins import get_plugins
from harness.specs import DatasetContext

SIZE = (48, 48)


def _images(folder: Path, n: int) -> list[str]:
    return [str(write_image(folder / f"{i}.jpg", i)) for i in range(n)]


def _decoded(paths, size=SIZE) -> np.ndarray:
    return np.stack([decode_file(p, size) for p in paths])


def test_pixels_never_hold_the_whole_array_and_equal_a_decode_per_file(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 120)
    size = (64, 64)
    expected = _decoded(paths, size)
    store = ImageStore(tmp_path / "cache", workers=2, progress=False)
    hashes = [p.hash for p in store.probe(paths)]
    monkeypatch.setattr(image_store, "BLOCK_ROWS", 8)
    tracemalloc.start()
    try:
        cold = store.pixels(paths, hashes, size)
        order = np.random.default_rng(0).permutation(120)[:100]  # another list: rows copied from the first file
        part = store.pixels([paths[i] for i in order], [hashes[i] for i in order], size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < expected.nbytes / 3  # numpy's allocations are traced: no (n, h, w, 3) array was made
    assert isinstance(cold, np.memmap) and not cold.flags.writeable
    assert np.array_equal(cold, expected) and np.array_equal(part, expected[order])


def test_probing_at_the_study_size_stacks_rows_without_holding_them(tmp_path):
    paths = _images(tmp_path / "img", 120)
    size = (128, 128)  # hashing an image takes about a megabyte of its own, whatever the study size
    store = ImageStore(tmp_path / "cache", workers=2, progress=False)
    tracemalloc.start()
    try:
        hashes = [p.hash for p in store.probe(paths, size)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * 128 * 128 * 3 / 3
    assert np.array_equal(store.pixels(paths, hashes, size), _decoded(paths, size))


def test_a_failed_assembly_leaves_no_file_and_a_torn_one_is_not_trusted(tmp_path):
    paths = _images(tmp_path / "img", 5)
    store = ImageStore(tmp_path / "cache", workers=1, progress=False)
    hashes = [p.hash for p in store.probe(paths)]
    Path(paths[3]).write_bytes(b"")  # vanished after loading: the assembly stops part-way
    with pytest.raises(HarnessError, match=r"3\.jpg.*run again"):
        store.pixels(paths, hashes, SIZE)
    assert not any(p.is_file() for p in (tmp_path / "cache" / "bundles").rglob("*"))  # neither bundle nor temporary
    write_image(Path(paths[3]), 3)
    good = np.array(store.pixels(paths, hashes, SIZE))
    bundle = store.bundle_path(hashes, SIZE, "stretch")
    with open(bundle, "r+b") as fh:  # a file torn by a killed writer of an older version
        fh.truncate(bundle.stat().st_size // 2)
    again = ImageStore(tmp_path / "cache", workers=1, progress=False)
    assert np.array_equal(again.pixels(paths, hashes, SIZE), good)
    assert np.array_equal(good, _decoded(paths))


def test_a_writer_left_without_commit_removes_its_temporary_file(tmp_path):
    target = tmp_path / "stack.npy"
    with pytest.raises(RuntimeError), StackWriter(target, (3, 2, 2, 3)) as writer:
        writer.write(0, np.ones((2, 2, 3), np.uint8))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with StackWriter(target, (3, 2, 2, 3)) as writer:
        writer.write_rows([2, 0], np.stack([np.full((2, 2, 3), 7, np.uint8), np.ones((2, 2, 3), np.uint8)]))
        writer.commit()
    stacked = open_stack(target, (3, 2, 2, 3))
    assert [int(stacked[i, 0, 0, 0]) for i in range(3)] == [1, 0, 7] and open_stack(target, (4, 2, 2, 3)) is None


def test_read_rows_equals_indexing(tmp_path):
    array = np.random.default_rng(1).integers(0, 256, (50, 4, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    rows = np.array([7, 3, 3, 49, -1, 8, 9, 10, 0])
    assert np.array_equal(read_rows(mapped, rows), array[rows])
    assert np.array_equal(read_rows(mapped[10:], [0, 5]), array[[10, 15]])  # a slice of the map: by indexing
    assert np.array_equal(read_rows(array, rows), array[rows]) and read_rows(mapped, []).shape == (0, 4, 5, 3)
    assert np.array_equal(np.concatenate([b for _, b in blocks(mapped, 16)]), array)
    with pytest.raises(IndexError):
        read_rows(mapped, [50])


def test_dataset_images_are_the_read_only_map(tmp_path):
    root = class_folders(tmp_path / "data" / "set", {"a": 4, "b": 3})
    config = DatasetConfig("folder", (24, 24), {"root": root.name})
    data = load_dataset(config, get_plugins(), DatasetContext(tmp_path / "data", tmp_path / "cache", seed=0))
    pixels = data.images((24, 24))
    assert isinstance(pixels, np.memmap) and not pixels.flags.writeable
    assert np.array_equal(pixels, _decoded(data.table["path"], (24, 24)))


def test_a_first_run_whose_list_differs_from_the_probed_one_keeps_its_pixels_once(tmp_path):
    paths = _images(tmp_path / "img", 30)
    broken = tmp_path / "img" / "broken.jpg"
    broken.write_bytes(b"not an image")
    store = ImageStore(tmp_path / "cache", workers=2, progress=False)
    probes = store.probe([*paths, str(broken)], SIZE)  # probed at the study size: one stacked file
    assert not probes[-1].ok
    kept = list(reversed(paths[:25]))  # the dataset's list: no broken file, five left out, another order
    stacked = store.pixels(kept, [probes[paths.index(p)].hash for p in kept], SIZE)
    assert np.array_equal(stacked, _decoded(kept))
    probed = store.bundle_path([p.hash or "" for p in probes], SIZE, "stretch")
    # the probe's file still holds the five images the dataset left out: kept for them
    assert probed.exists() and len(list(probed.parent.glob("*.npy"))) == 2
    store.close()
    store = ImageStore(tmp_path / "cache", workers=2, progress=False)  # another process (a training worker)
    everything = store.pixels(paths, [p.hash for p in probes[:-1]], SIZE)  # now a list of all 30
    assert np.array_equal(everything, _decoded(paths))
    assert not probed.exists()  # every row of it lives in another file now: gone
    assert np.array_equal(store.pixels(kept, [probes[paths.index(p)].hash for p in kept], SIZE), _decoded(kept))
