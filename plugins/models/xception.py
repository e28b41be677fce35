"""The Conus study's Xception: GlobalAveragePooling, Dense 1024 (head variants 600, 2000, 1024+600)."""

from __future__ import annotations

from harness import BuildContext, ModelSpec, hookimpl

#: The Conus study's heads; xception_location shares them.
CONUS_HEADS = [[600], [1024], [2000], [1024, 600]]
MIN_SIZE = 71


def build(context: BuildContext):
    import keras

    from harness.toolkit.backbones import build_pretrained

    return build_pretrained(
        context, keras.applications.Xception, name="xception", preprocessing="tf", minimum=MIN_SIZE
    )


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="xception",
            build=build,
            image_size=(299, 299),
            params={"head": [1024], "dropout": 0.0, "pooling": "avg"},
            space={"head": {"choices": CONUS_HEADS}},
            description="Xception ([-1, 1] preprocessing, >= 71 px), GlobalAveragePooling, Dense 1024, softmax",
        )
    ]
