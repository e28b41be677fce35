"""Data augmentation from the study file: Keras preprocessing layers in front of the model.

The layers act only in training (Keras runs them as identity at inference), on the raw 0–255
pixels before the model's own preprocessing, and on the accelerator with the rest of the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

FLIPS = ("horizontal", "vertical", "horizontal_and_vertical")
FILL_MODES = ("reflect", "wrap", "constant", "nearest")


@dataclass
class Augment:
    """``[train.augment]``: each setting off at 0 (or "" for flip)."""

    #: "horizontal", "vertical" or "horizontal_and_vertical".
    flip: str = ""
    #: Largest rotation, a fraction of a full turn (0.1 = ±36°).
    rotation: float = 0.0
    #: Largest zoom in or out, a fraction of the image side.
    zoom: float = 0.0
    #: Largest shift, a fraction of the image side.
    translation: float = 0.0
    #: Largest brightness change, a fraction of the 0–255 range.
    brightness: float = 0.0
    #: Largest contrast change: factors from 1 - contrast to 1 + contrast.
    contrast: float = 0.0
    #: Saturation spread around unchanged: 1.0 ranges from grey to fully saturated.
    saturation: float = 0.0
    #: Probability-like strength (0–1) of a Gaussian blur of up to ``blur_sigma`` pixels.
    blur: float = 0.0
    blur_sigma: float = 1.0
    #: Standard deviation of added Gaussian noise, a fraction of the 0–255 range (0.02 ≈ 5 levels).
    noise: float = 0.0
    #: How rotation, zoom and translation fill the border.
    fill_mode: str = "reflect"
    #: Per transform, the probability it is applied to an image (1 where not given).
    probability: dict = field(default_factory=dict)

    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name not in ("blur_sigma", "fill_mode", "probability"))


def augmentation_layers(augment: Augment) -> list:
    """The Keras layers for the settings, geometric first, then colour, blur and noise; a transform
    given a probability below 1 is wrapped in ``RandomApply``."""
    from keras import layers

    a, out = augment, []

    def add(name: str, *made):
        p = a.probability.get(name, 1.0)
        if p < 1:
            from harness.toolkit.random_apply import RandomApply

            made = (RandomApply(made[0] if len(made) == 1 else _sequential(made), p),)
        out.extend(made)

    if a.flip:
        add("flip", layers.RandomFlip(a.flip))
    if a.rotation:
        add("rotation", layers.RandomRotation(a.rotation, fill_mode=a.fill_mode))
    if a.zoom:
        add("zoom", layers.RandomZoom(a.zoom, fill_mode=a.fill_mode))
    if a.translation:
        add("translation", layers.RandomTranslation(a.translation, a.translation, fill_mode=a.fill_mode))
    if a.brightness:
        add("brightness", layers.RandomBrightness(a.brightness, value_range=(0, 255)))
    if a.contrast:
        add("contrast", layers.RandomContrast(a.contrast, value_range=(0, 255)))
    if a.saturation:
        half = min(a.saturation, 1.0) / 2
        add("saturation", layers.RandomSaturation((0.5 - half, 0.5 + half), value_range=(0, 255)))
    if a.blur:
        kernel = 2 * max(1, round(2 * a.blur_sigma)) + 1
        add("blur", layers.RandomGaussianBlur(a.blur, kernel_size=kernel, sigma=a.blur_sigma, value_range=(0, 255)))
    if a.noise:
        # Keras's GaussianNoise takes a standard deviation up to 1: add it on the 0–1 scale.
        add("noise", layers.Rescaling(1 / 255), layers.GaussianNoise(a.noise), layers.Rescaling(255))
    return out


def _sequential(made):
    import keras

    return keras.Sequential(list(made))


def with_augmentation(model, augment: Augment | None):
    """``model`` with the augmentation layers applied to its ``image`` input; ``model`` when none."""
    if augment is None or not augment.active():
        return model
    import keras

    pipeline = keras.Sequential(augmentation_layers(augment), name="augmentation")
    inputs = keras.tree.map_structure(
        lambda t: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name), model.input
    )
    if isinstance(inputs, dict):
        fed = {**inputs, "image": pipeline(inputs["image"])}
    elif isinstance(inputs, (list, tuple)):
        fed = [pipeline(t) if t.name == "image" else t for t in inputs]
    else:
        fed = pipeline(inputs)
    return keras.Model(inputs, model(fed), name=f"{model.name}_augmented")
