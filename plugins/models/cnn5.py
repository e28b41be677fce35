"""The minerals study's 5-block CNN (Model 1), trained from scratch.

``padding`` applies to the convolutions and poolings, ``pool_padding`` (when set) to the poolings:
the study's Model 1 pads its convolutions "same" and pools "valid" (321 × 400 → … 10 × 12, Flatten
1,440); "same" pooling (the default) keeps every input size valid, down to 1 × 1.
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
    padding = check_padding("cnn5", params)
    pool_padding = check_padding("cnn5", params, "pool_padding") if params.get("pool_padding") else padding
    for filters in params["filters"]:
        x = layers.Conv2D(filters, 3, padding=padding, activation="relu")(x)
        x = layers.BatchNormalization(momentum=params["bn_momentum"])(x)
        x = layers.MaxPooling2D(2, padding=pool_padding)(x)
    x = layers.Flatten()(x)
    for units in params["dense"]:
        x = layers.Dense(units, activation="relu")(x)
        if params["dropout"]:
            x = layers.Dropout(params["dropout"])(x)
    outputs = layers.Dense(context.num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="cnn5")


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="cnn5",
            build=build,
            image_size=(128, 128),
            params={"filters": [12, 6, 12, 6, 12], "dense": [500, 100, 50, 10], "dropout": 0.0, "bn_momentum": 0.99,
                    "padding": "same", "pool_padding": ""},
            description="5 × (Conv2D 3×3 ReLU + BatchNorm + MaxPool 2), Dense 500-100-50-10, softmax",
        )
    ]
