"""The minerals study's 5-block CNN, trained from scratch."""

from __future__ import annotations

from harness import BuildContext, ModelSpec, hookimpl


def build(context: BuildContext):
    import keras
    from keras import layers

    params = context.params
    inputs = keras.Input(shape=(*context.image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    for filters in params["filters"]:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.BatchNormalization(momentum=params["bn_momentum"])(x)
        # "same" pooling keeps every input size valid, down to 1×1 after five blocks.
        x = layers.MaxPooling2D(2, padding="same")(x)
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
            params={"filters": [12, 6, 12, 6, 12], "dense": [500, 100, 50, 10], "dropout": 0.0, "bn_momentum": 0.99},
            description="5 × (Conv2D 3×3 ReLU + BatchNorm + MaxPool 2), Dense 500-100-50-10, softmax",
        )
    ]
