"""The minerals study's Model 2: four Conv2D + MaxPooling blocks, a fifth Conv2D, Flatten, softmax.

``dropout = 0.5`` with ``[train.augment]`` set is the study's Model 2.1. ``padding = "valid"`` is the
study's own (convolutions and poolings): 180 × 180 → 178 … 7 × 7, Flatten 12,544; "same" (the
default) keeps every input size valid, down to 1 × 1.
"""

from __future__ import annotations

from harness import BuildContext, ModelSpec, hookimpl


def build(context: BuildContext):
    import keras
    from keras import layers

    from harness.toolkit.backbones import padding as check_padding, scratch_preprocess

    params = context.params
    inputs = keras.Input(shape=(*context.image_size, 3), name="image")
    x = scratch_preprocess(context)(inputs)
    padding = check_padding("cnn4", params)
    for filters in params["filters"]:
        x = layers.Conv2D(filters, 3, padding=padding, activation="relu")(x)
        x = layers.MaxPooling2D(2, padding=padding)(x)
    x = layers.Conv2D(params["top_filters"], 3, padding=padding, activation="relu")(x)
    x = layers.Flatten()(x)
    if params["dropout"]:
        x = layers.Dropout(params["dropout"])(x)
    outputs = layers.Dense(context.num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="cnn4")


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="cnn4",
            build=build,
            image_size=(128, 128),
            params={"filters": [32, 64, 128, 256], "top_filters": 256, "dropout": 0.0, "padding": "same"},
            space={"dropout": {"choices": [0.0, 0.5]}},
            description="4 × (Conv2D 3×3 ReLU + MaxPool 2), Conv2D 256, Flatten, [Dropout], softmax",
        )
    ]
