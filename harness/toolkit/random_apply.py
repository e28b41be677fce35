"""``RandomApply``: a training-time layer applied to each image with a probability (Keras 3 has
no such wrapper), for [train.augment] probability."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="harness")
class RandomApply(layers.Layer):
    """``layer`` applied to each image of a batch with probability ``probability``, the image
    unchanged otherwise; identity at inference."""

    def __init__(self, layer, probability: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be between 0 and 1, got {probability}")
        self.layer = layer if isinstance(layer, layers.Layer) else keras.saving.deserialize_keras_object(layer)
        self.probability = float(probability)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.layer.build(input_shape)

    def call(self, x, training=None):
        if not training:
            return x
        changed = ops.cast(self.layer(x, training=training), x.dtype)
        draw = keras.random.uniform((ops.shape(x)[0],) + (1,) * (len(x.shape) - 1), seed=self.seed_generator)
        return ops.where(draw < self.probability, changed, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "layer": keras.saving.serialize_keras_object(self.layer),
                "probability": self.probability, "seed": self.seed}
