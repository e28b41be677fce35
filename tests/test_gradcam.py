"""Grad-CAM (harness.toolkit.gradcam): heat maps that point at the evidence of a trained model and not
of a randomised one, for models with extra inputs and a nested backbone, the same on JAX and PyTorch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers
from scipy.stats import spearmanr

from harness import BuildContext, HarnessError, ModelSpec
from harness.plugins import get_plugins
from harness.toolkit.gradcam import GradCam, default_layer, grad_cam, overlay

SIZE, SIDE, LOCATIONS = 32, 8, 3
#: Colour of the square of each class (red, blue) on grey noise.
COLOURS = np.array([[230, 30, 30], [30, 30, 230]], dtype=np.uint8)


def squares(n: int, seed: int):
    """``n`` noise images, each with a SIDE×SIDE square whose colour is the class; and where it is."""
    rng = np.random.default_rng(seed)
    images = (rng.integers(0, 128, (n, SIZE, SIZE, 3)) + 64).astype(np.uint8)
    labels = rng.integers(0, 2, n)
    corners = rng.integers(0, SIZE - SIDE + 1, (n, 2))
    for image, label, (row, col) in zip(images, labels, corners):
        image[row:row + SIDE, col:col + SIDE] = COLOURS[label]
    location = np.eye(LOCATIONS, dtype="float32")[rng.integers(0, LOCATIONS, n)]
    return images, labels, corners, location


def tiny_model(seed: int):
    """image → Rescaling → backbone (Conv-Conv, a nested model) → GAP, + one-hot location → softmax."""
    keras.utils.set_random_seed(seed)
    inner = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv_1")(inner)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    backbone = keras.Model(inner, x, name="backbone")
    image = keras.Input((SIZE, SIZE, 3), name="image")
    location = keras.Input((LOCATIONS,), name="location")
    x = layers.GlobalAveragePooling2D(name="pool")(backbone(layers.Rescaling(1 / 255, name="scale")(image)))
    x = layers.Concatenate(name="features")([x, location])
    outputs = layers.Dense(2, activation="softmax", name="probabilities")(x)
    return keras.Model({"image": image, "location": location}, outputs, name="tiny")


def hit_rate(maps: np.ndarray, corners: np.ndarray) -> float:
    """The share of heat maps whose peak lies inside the image's square."""
    peaks = [np.unravel_index(np.argmax(m), m.shape) for m in maps]
    return float(np.mean([r <= pr < r + SIDE and c <= pc < c + SIDE for (pr, pc), (r, c) in zip(peaks, corners)]))


@pytest.fixture(scope="module")
def trained():
    images, labels, _, location = squares(500, seed=0)
    model = tiny_model(seed=1)
    model.compile(keras.optimizers.Adam(0.003), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit({"image": images, "location": location}, labels, epochs=8, batch_size=32, verbose=0)
    test = squares(80, seed=2)
    _, accuracy = model.evaluate({"image": test[0], "location": test[3]}, test[1], verbose=0)
    assert accuracy >= 0.95, "the tiny model did not learn the colours; the Grad-CAM checks would mean nothing"
    return model, test


def test_heat_maps_point_at_the_square(trained):
    model, (images, _, corners, location) = trained
    maps = grad_cam(model, {"image": images, "location": location})
    assert maps.shape == (len(images), SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    assert hit_rate(maps, corners) >= 0.8


def test_randomised_weights_change_the_maps(trained):
    """Adebayo et al. (2018): a map that survives randomising the weights does not explain the model."""
    model, (images, _, corners, location) = trained
    inputs = {"image": images, "location": location}
    maps = grad_cam(model, inputs)
    random_maps = grad_cam(tiny_model(seed=7), inputs)
    assert hit_rate(random_maps, corners) <= hit_rate(maps, corners) - 0.2
    rank_correlation = np.mean([spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(maps, random_maps)])
    assert rank_correlation < 0.5


def test_class_index_explains_the_class_asked_for(trained):
    model, (images, labels, corners, location) = trained
    inputs = {"image": images, "location": location}
    explainer = GradCam(model)
    assert np.allclose(explainer(inputs, class_index=labels), explainer(inputs), atol=1e-5)
    # The other colour's evidence is not in the square: its map peaks elsewhere.
    assert hit_rate(explainer(inputs, class_index=1 - labels), corners) <= 0.3
    assert explainer({k: v[:3] for k, v in inputs.items()}, class_index=0).shape == (3, SIZE, SIZE)
    with pytest.raises(HarnessError, match="class_index must lie in 0..1"):
        explainer(inputs, class_index=2)


def test_a_layer_inside_the_backbone_and_the_reference_recipe_agree(trained, tmp_path):
    """The backbone's output is its last_conv's: naming either gives the same maps, and those of the
    Keras recipe (a model with both outputs, TensorFlow's GradientTape) for a model with an extra input."""
    import tensorflow as tf

    model, (images, labels, _, location) = trained
    assert default_layer(model) == "backbone"
    inputs = {"image": images[:16], "location": location[:16]}
    maps = grad_cam(model, inputs)
    assert np.allclose(grad_cam(model, inputs, layer="last_conv"), maps, atol=1e-4)
    assert not np.allclose(grad_cam(model, inputs, layer="conv_1"), maps, atol=0.05)
    model.save(tmp_path / "after.keras")  # explaining leaves the model's graph as it was
    spec = ModelSpec("tiny", build=lambda context: model, explain_layer="conv_1")
    assert GradCam(model, spec.explain_layer).layer == "conv_1"

    backbone = model.get_layer("backbone")
    image, place = keras.Input((SIZE, SIZE, 3), name="image"), keras.Input((LOCATIONS,), name="location")
    feature = backbone(model.get_layer("scale")(image))
    top = model.get_layer("features")([model.get_layer("pool")(feature), place])
    both = keras.Model({"image": image, "location": place}, [feature, model.get_layer("probabilities")(top)])
    with tf.GradientTape() as tape:
        a, p = both({k: tf.constant(v, tf.float32) for k, v in inputs.items()})
        score = tf.reduce_sum(tf.math.log(tf.gather(p, labels[:16], batch_dims=1)))
    weights = tf.reduce_mean(tape.gradient(score, a), axis=(1, 2))
    cam = np.maximum(np.einsum("nhwc,nc->nhw", a.numpy(), weights.numpy()), 0)
    assert np.allclose(maps, cam / cam.max(axis=(1, 2), keepdims=True), atol=1e-4)


def test_a_harness_backbone_model_and_a_sequential_model():
    keras.backend.clear_session()
    spec = get_plugins().models.get("efficientnet_lite0")
    model = spec.build(BuildContext(3, (SIZE, SIZE), dict(spec.params), weights="none"))
    pixels = squares(2, seed=3)[0]
    maps = grad_cam(model, pixels, class_index=[0, 2])
    assert maps.shape == (2, SIZE, SIZE) and np.all((maps >= 0) & (maps <= 1)) and maps.max() > 0

    keras.utils.set_random_seed(4)
    sequential = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)), layers.Rescaling(1 / 255), layers.Conv2D(4, 3, name="conv"),
        layers.GlobalAveragePooling2D(), layers.Dense(2, activation="softmax"),
    ])
    assert default_layer(sequential) == "conv"
    assert grad_cam(sequential, pixels).shape == (2, SIZE, SIZE)


def test_mistakes_are_one_line_errors(trained):
    model, (images, _, _, location) = trained
    with pytest.raises(HarnessError, match="no layer 'last_cnv', nested ones included. Did you mean 'last_conv'"):
        grad_cam(model, {"image": images, "location": location}, layer="last_cnv")
    with pytest.raises(HarnessError, match="takes 2 input"):
        grad_cam(model, images)
    with pytest.raises(HarnessError, match="needs the input\\(s\\) location"):
        grad_cam(model, {"image": images, "place": location})
    with pytest.raises(HarnessError, match="one per image"):
        grad_cam(model, {"image": images[:3], "location": location[:3]}, class_index=[0, 1])
    with pytest.raises(HarnessError, match="4-D"):
        grad_cam(model, {"image": images, "location": location}, layer="pool")


def test_overlay_blends_the_coloured_map_onto_the_image():
    image = np.full((SIZE, SIZE, 3), 100, dtype=np.uint8)
    heat = np.zeros((8, 8), dtype="float32")
    heat[:4, :4] = 1.0
    blended = overlay(image, heat, alpha=0.5)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert np.array_equal(overlay(image, heat, alpha=0.0), image)
    hot, cold = blended[2, 2].astype(int), blended[-2, -2].astype(int)
    assert hot[0] > cold[0] and hot[2] < cold[2]  # jet: red where the map is 1, blue where it is 0
    with pytest.raises(HarnessError, match="one RGB image"):
        overlay(image[..., 0], heat)


OTHER_BACKEND = textwrap.dedent("""
    import sys, keras, numpy as np
    from harness.toolkit.gradcam import grad_cam
    assert keras.backend.backend() == sys.argv[1]
    model = keras.saving.load_model(sys.argv[2], safe_mode=True)
    data = np.load(sys.argv[3])
    inputs = {"image": data["image"], "location": data["location"]}
    np.savez(sys.argv[4], default=grad_cam(model, inputs), inner=grad_cam(model, inputs, layer="last_conv"),
             other=grad_cam(model, inputs, class_index=1 - data["labels"]))
""")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_same_maps_on_jax_and_torch(trained, backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]'; .ci/run installs it): the maps "
                    "are compared with TensorFlow's under each backend")
    model, (images, labels, _, location) = trained
    inputs = {"image": images[:24], "location": location[:24]}
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "data.npz", labels=labels[:24], **inputs)
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", OTHER_BACKEND, backend, str(tmp_path / "model.keras"), str(tmp_path / "data.npz"),
         str(tmp_path / "maps.npz")],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = np.load(tmp_path / "maps.npz")
    assert np.allclose(theirs["default"], grad_cam(model, inputs), atol=1e-3)
    assert np.allclose(theirs["inner"], theirs["default"], atol=1e-3)
    assert np.allclose(theirs["other"], grad_cam(model, inputs, class_index=1 - labels[:24]), atol=1e-3)
