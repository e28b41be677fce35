"""The Conus study's best model: Xception image features joined by the one-hot region, then the head."""

from __future__ import annotations

from harness import BuildContext, ModelSpec, hookimpl
from harness_plugins.models.xception import CONUS_HEADS, MIN_SIZE


def build(context: BuildContext):
    import keras

    from harness.toolkit.backbones import build_pretrained

    return build_pretrained(
        context,
        keras.applications.Xception,
        name="xception_location",
        preprocessing="tf",
        minimum=MIN_SIZE,
        extra_inputs=("location",),
    )


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="xception_location",
            build=build,
            inputs=("image", "location"),
            image_size=(299, 299),
            params={"head": [1024], "dropout": 0.0, "pooling": "avg"},
            space={"head": {"choices": CONUS_HEADS}},
            description="Xception GlobalAveragePooling features + one-hot location, Dense 1024, softmax",
        )
    ]
