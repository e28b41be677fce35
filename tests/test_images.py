"""Decoding by content, odd and broken files, resize policies, and the decode-once cache."""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fixtures.image_layouts import ODD_FILES, noise, odd_files, write_image
from PIL import Image

from harness.core.choices import NEAR_DUPLICATES
from harness.data import hashing, image_store, images, near_pairs, probes
from harness.data.image_store import ImageStore
from harness.data.images import decode_file, is_ignored
from harness.data.near_pairs import hash_distances
from harness.data.probes import probe_file


@pytest.fixture
def odd(tmp_path):
    folder = tmp_path / "odd"
    return folder, odd_files(folder)


def test_every_odd_file_is_decoded_or_skipped_with_its_reason(odd):
    folder, expected = odd
    for name, outcome in expected.items():
        if outcome == "ignored":
            assert is_ignored(name), name
            continue
        probe = probe_file(folder / name)
        if outcome == "ok":
            assert probe.ok, (name, probe.reason)
            array = decode_file(folder / name, (6, 5))
            assert array.shape == (6, 5, 3) and array.dtype == np.uint8, name
        else:
            assert not probe.ok, name
            assert outcome.lower() in probe.reason.lower(), (name, probe.reason)


def test_formats_are_identified_by_content_not_name(odd):
    folder, _ = odd
    assert probe_file(folder / "no_extension").format == "JPEG"
    assert probe_file(folder / "9. bo").format == "JPEG"
    assert probe_file(folder / "png_named.jpg").format == "PNG"
    assert probe_file(folder / "animated.gif").format == "GIF"


def test_sixteen_bit_grey_is_scaled_not_clipped(odd):
    folder, _ = odd
    array = decode_file(folder / "sixteen_bit.png", (8, 8))
    # the ramp runs 0..63000 of 65535: scaled, the brightest pixel is about 245, not clipped to 255
    assert array[..., 0].max() == pytest.approx(63000 / 257, abs=1)
    assert len(np.unique(array[..., 0])) > 32
    assert (array[..., 0] == array[..., 1]).all()


def test_transparent_pixels_are_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert (decode_file(tmp_path / "clear.png", (8, 8)) == 255).all()


def test_gif_gives_its_first_frame(odd):
    folder, _ = odd
    first = np.asarray(Image.open(folder / "animated.gif").convert("RGB"))
    assert np.array_equal(decode_file(folder / "animated.gif", (8, 8)), first)


def test_exif_orientation_is_applied(odd):
    folder, _ = odd
    probe = probe_file(folder / "rotated.jpg")
    assert (probe.width, probe.height) == (8, 16)  # stored 16 wide, shown 8 wide × 16 high
    padded = decode_file(folder / "rotated.jpg", (32, 32), "pad")
    assert padded[:, :4].max() == 0 and padded[:, 12:20].min() > 150  # black bars left and right


def test_resize_policies(tmp_path):
    wide = np.zeros((10, 40, 3), dtype=np.uint8)
    wide[:, 10:30] = 255  # a white middle half
    Image.fromarray(wide).save(tmp_path / "wide.png")
    stretch = decode_file(tmp_path / "wide.png", (20, 20), "stretch")
    crop = decode_file(tmp_path / "wide.png", (20, 20), "crop")
    pad = decode_file(tmp_path / "wide.png", (20, 20), "pad")
    assert stretch.shape == crop.shape == pad.shape == (20, 20, 3)
    assert stretch[:, 0].max() == 0 and stretch[:, 10].min() == 255
    assert crop.min() > 200  # the centre square is all white
    assert pad[:7].max() == 0 and pad[-7:].max() == 0  # black bars above and below


def test_pixel_limit_refuses_huge_images_but_jpeg_draft_decodes_them(tmp_path, monkeypatch):
    for fmt in ("PNG", "JPEG"):
        Image.new("RGB", (2048, 2048), (90, 120, 30)).save(tmp_path / f"big.{fmt.lower()}", format=fmt)
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    assert "too large" in probe_file(tmp_path / "big.png").reason
    assert probe_file(tmp_path / "big.jpeg").ok  # draft mode decodes it at 1/8 scale: 256×256 pixels
    assert decode_file(tmp_path / "big.jpeg", (8, 8)).shape == (8, 8, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own bomb check, at open
    assert "too large" in probe_file(tmp_path / "big.png").reason


def test_perceptual_hash_matches_resized_copies_not_other_images():
    original = noise("a", size=32)
    smaller = original.resize((24, 24))
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", quality=60)
    recompressed = Image.open(buffer).convert("RGB")
    hashes = [hashing.perceptual_hash(i) for i in (original, smaller, recompressed, noise("b", size=32))]
    distances = hash_distances(hashes)
    limit = NEAR_DUPLICATES * hashing.HASH_BITS
    assert distances[0, 1] <= limit and distances[0, 2] <= limit
    assert distances[0, 3] > 3 * limit


def _images(folder, n):
    return [str(write_image(folder / f"{i}.jpg", i)) for i in range(n)]


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(image_store, "decode", refuse)
    monkeypatch.setattr(image_store, "probe_bytes", refuse)


def test_store_decodes_once_then_reads_the_cache(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 6)
    store = ImageStore(tmp_path / "cache", workers=2)
    hashes = [p.hash for p in store.probe(paths)]
    cold = store.pixels(paths, hashes, (8, 8))
    assert cold.dtype == np.uint8 and cold.shape == (6, 8, 8, 3)
    assert [p.name for p in (tmp_path / "cache" / "bundles").rglob("*.npy")] == [store.bundle_path(hashes, (8, 8), "stretch").name]

    _no_decoding(monkeypatch)
    again = ImageStore(tmp_path / "cache")
    assert [p.hash for p in again.probe(paths)] == hashes  # unchanged files: answered by the index
    warm = again.pixels(paths, hashes, (8, 8))
    assert np.array_equal(warm, cold)
    assert isinstance(warm, np.memmap) and not warm.flags.writeable  # the stacked bundle, mapped read-only
    # another list of the same images (a subset, reordered) reads the rows of the first bundle
    subset = [4, 1, 1, 3]
    part = again.pixels([paths[i] for i in subset], [hashes[i] for i in subset], (8, 8))
    assert np.array_equal(part, cold[subset])


def test_a_removed_bundle_is_decoded_again(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 3)
    store = ImageStore(tmp_path / "cache", workers=1)
    hashes = [p.hash for p in store.probe(paths)]
    cold = np.array(store.pixels(paths, hashes, (8, 8)))
    store.bundle_path(hashes, (8, 8), "stretch").unlink()
    calls = []
    real = image_store.decode
    monkeypatch.setattr(image_store, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert np.array_equal(store.pixels(paths[:2], hashes[:2], (8, 8)), cold[:2])
    assert len(calls) == 2


def test_probe_with_a_size_decodes_each_file_once(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 4)
    store = ImageStore(tmp_path / "cache", workers=2)
    hashes = [p.hash for p in store.probe(paths, (8, 8))]
    _no_decoding(monkeypatch)
    assert store.pixels(paths, hashes, (8, 8)).shape == (4, 8, 8, 3)


def test_probe_with_a_size_stacks_its_rows_as_they_decode(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 4)
    store = ImageStore(tmp_path / "cache", workers=2)
    hashes = [p.hash for p in store.probe(paths, (8, 8))]
    assert not (tmp_path / "cache" / "pixels").exists()  # no file per image: rows of one stacked file
    assert [p.name for p in (tmp_path / "cache" / "bundles").rglob("*.npy")] == [store.bundle_path(hashes, (8, 8), "stretch").name]
    expected = np.stack([decode_file(p, (8, 8)) for p in paths])
    _no_decoding(monkeypatch)
    assert np.array_equal(store.pixels(paths[::-1], hashes[::-1], (8, 8)), expected[::-1])


def test_one_pass_pixels_equal_a_separate_decode(tmp_path):
    big = tmp_path / "big.jpg"
    noise("big", size=40).resize((900, 700)).save(big, quality=90)
    for size in ((32, 32), (300, 300)):
        store = ImageStore(tmp_path / f"cache{size[0]}", workers=1)
        probe = store.probe([str(big)], size)[0]
        assert np.array_equal(store.pixels([str(big)], [probe.hash], size)[0], decode_file(big, size))
        assert probe.phash == ImageStore(tmp_path / f"other{size[0]}").probe([str(big)])[0].phash


def test_store_keys_by_size_and_policy(tmp_path):
    paths = _images(tmp_path / "img", 2)
    store = ImageStore(tmp_path / "cache", workers=1)
    hashes = [p.hash for p in store.probe(paths)]
    assert store.pixels(paths, hashes, (4, 6)).shape == (2, 4, 6, 3)
    assert store.pixels(paths, hashes, (4, 6), "pad").shape == (2, 4, 6, 3)
    assert len(list((tmp_path / "cache" / "bundles").iterdir())) == 2


def test_store_notices_changed_and_added_files(tmp_path):
    paths = _images(tmp_path / "img", 3)
    store = ImageStore(tmp_path / "cache", workers=1)
    before = store.probe(paths)
    first = store.pixels(paths, [p.hash for p in before], (8, 8))
    write_image(tmp_path / "img" / "1.jpg", "something else")
    added = str(write_image(tmp_path / "img" / "new.jpg", "new"))
    after = store.probe([*paths, added])
    assert after[0].hash == before[0].hash and after[1].hash != before[1].hash and after[3].ok
    second = store.pixels([*paths, added], [p.hash for p in after], (8, 8))
    assert np.array_equal(second[0], first[0]) and not np.array_equal(second[1], first[1])


def test_store_identical_content_is_decoded_once(tmp_path, monkeypatch):
    paths = _images(tmp_path / "img", 1)
    copy = tmp_path / "img" / "copy.jpg"
    copy.write_bytes((tmp_path / "img" / "0.jpg").read_bytes())
    store = ImageStore(tmp_path / "cache", workers=1)
    probes = store.probe([*paths, str(copy)])
    assert probes[0].hash == probes[1].hash
    calls = []
    real = image_store.decode
    monkeypatch.setattr(image_store, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    pixels = store.pixels([*paths, str(copy)], [p.hash for p in probes], (8, 8))
    assert np.array_equal(pixels[0], pixels[1]) and len(calls) == 1


def test_broken_files_probe_without_a_hash_and_are_not_indexed(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "missing.jpg")
    store = ImageStore(tmp_path / "cache", workers=1)
    empty, link = store.probe([str(tmp_path / "empty.jpg"), str(tmp_path / "link.jpg")])
    assert "empty" in empty.reason and "broken link" in link.reason
    assert empty.hash is None and link.hash is None


def test_all_odd_files_are_listed(odd):
    folder, expected = odd
    assert set(expected) == set(ODD_FILES)
    assert (folder / "broken_link.jpg").is_symlink()


# ---------------------------------------------------------------------------------------------
# Rotations and mirror images


def test_orientations_are_pillows_transposes():
    picture = noise("turns", size=6).crop((0, 0, 6, 4))  # not square, no symmetry
    pillow = [None, Image.Transpose.ROTATE_270, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_90,
              Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE,
              Image.Transpose.TRANSVERSE]
    pixels = np.asarray(picture)
    for (name, turn), method in zip(hashing.ORIENTATIONS, pillow):
        expected = pixels if method is None else np.asarray(picture.transpose(method))
        assert np.array_equal(turn(pixels), expected), name
    turns = [turn for _, turn in hashing.ORIENTATIONS]
    for a in range(8):
        for b in range(8):  # a copy turned by relative_orientation(a, b), then by b, is the original turned by a
            assert np.array_equal(turns[b](turns[hashing.relative_orientation(a, b)](pixels)), turns[a](pixels))


@pytest.mark.parametrize("shape", [(5, 7, 3), (6, 6, 3)])
def test_pixel_hash_is_shared_by_every_orientation_and_tells_the_turn(shape):
    pixels = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    digest, canonical = hashing.pixel_hash(pixels)
    for k, (name, turn) in enumerate(hashing.ORIENTATIONS):
        turned = np.ascontiguousarray(turn(pixels))
        other, other_canonical = hashing.pixel_hash(turned)
        assert other == digest, name
        assert hashing.relative_orientation(canonical, other_canonical) == k, name
    changed = pixels.copy()
    changed[-1, -1, -1] ^= 1
    assert hashing.pixel_hash(changed)[0] != digest
    assert hashing.pixel_hash(pixels[:, :-1])[0] != digest


def test_pixel_hash_of_a_symmetric_image_names_no_turn_between_equal_copies():
    flat = np.full((4, 4, 3), 7, dtype=np.uint8)
    (a, turn_a), (b, turn_b) = hashing.pixel_hash(flat), hashing.pixel_hash(flat.copy())
    assert a == b and hashing.relative_orientation(turn_a, turn_b) == 0


def _brute_force_pairs(oriented, max_bits):
    """Every pair's least distance over both directions and all turns, and the turn from first to second."""
    words = near_pairs._hash_words([h for row in oriented for h in row]).reshape(len(oriented), len(oriented[0]), -1)
    found = {}
    for a in range(len(oriented)):
        for b in range(a + 1, len(oriented)):
            # b upright = a turned k: b is a turned k; a upright = b turned k: b is a turned back
            tries = [(int(np.bitwise_count(words[b, 0] ^ words[a, k]).sum()), k) for k in range(len(oriented[0]))]
            tries += [(int(np.bitwise_count(words[a, 0] ^ words[b, k]).sum()), int(hashing._INVERSE[k]))
                      for k in range(len(oriented[0]))]
            bits, turn = min(tries)
            if bits <= max_bits:
                found[(a, b)] = (bits, turn)
    return found


def _flipped(hex_hash, rng, share):
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_hash), np.uint8))
    return np.packbits(bits ^ (rng.random(bits.size) < share)).tobytes().hex()


@pytest.mark.parametrize("block", [1, 50, 1 << 18])
@pytest.mark.parametrize("sparse", [1, 10**9])  # pairs left after the first words: always / never few enough
def test_near_pairs_find_what_a_brute_force_search_finds_in_any_orientation(monkeypatch, block, sparse):
    monkeypatch.setattr(near_pairs, "_BLOCK", block)
    monkeypatch.setattr(near_pairs, "_SPARSE", sparse)
    rng = np.random.default_rng(5)
    oriented = [tuple(rng.bytes(48).hex() for _ in range(8)) for _ in range(30)]
    for source, copy, turn in ((0, 3, 1), (4, 9, 6), (10, 11, 0), (12, 20, 3)):  # copies at some turn, a few bits off
        oriented[copy] = (_flipped(oriented[source][turn], rng, 0.03), *oriented[copy][1:])
    base = oriented[25][0]
    for i in range(25, 30):  # five alike hashes: most pairs pass the first words, some are close
        oriented[i] = tuple(_flipped(base, rng, 0.05) for _ in range(8))
    pairs = near_pairs.near_pairs(oriented, 30)
    found = {(int(a), int(b)): (int(bits), int(turn)) for a, b, bits, turn in zip(*pairs)}
    expected = _brute_force_pairs(oriented, 30)
    assert found == expected
    assert {(0, 3), (4, 9), (10, 11), (12, 20)} <= set(found) and len(found) > 4
    upright = [row[:1] for row in oriented]  # compared as is only
    as_is = near_pairs.near_pairs(upright, 30)
    assert {(int(a), int(b)): (int(bits), int(turn)) for a, b, bits, turn in zip(*as_is)} == _brute_force_pairs(upright, 30)
    assert (10, 11) in zip(as_is.first.tolist(), as_is.second.tolist())


def test_an_old_probe_cache_is_probed_again_not_misread(tmp_path):
    path = _images(tmp_path / "img", 1)[0]
    digest = hashing.content_hash(Path(path).read_bytes())
    stat = os.stat(path)
    (tmp_path / "cache").mkdir()
    old = sqlite3.connect(tmp_path / "cache" / f"index-v{images.DECODER_VERSION}.sqlite3")
    old.executescript("""
        CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, hash TEXT);
        CREATE TABLE probes (hash TEXT PRIMARY KEY, reason TEXT, width INTEGER, height INTEGER,
                             format TEXT, mode TEXT, phash TEXT);
    """)
    old.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (path, stat.st_size, stat.st_mtime_ns, digest))
    old.execute("INSERT INTO probes VALUES (?, NULL, 8, 8, 'JPEG', 'RGB', 'ab')", (digest,))
    old.commit()
    old.close()
    probe = ImageStore(tmp_path / "cache", workers=1).probe([path])[0]
    assert probe == probes.probe_file(path)
    assert probe.pixel_hash and len(probe.oriented_phashes) == 8 and probe.phash == probe.oriented_phashes[0]
    again = ImageStore(tmp_path / "cache", workers=1).cached([digest])[digest]  # the new probe, stored
    assert again == probe
