"""The sports study's MobileNetV2: GlobalAveragePooling, Dense 256."""

from __future__ import annotations

from harness import BuildContext, ModelSpec, hookimpl


def build(context: BuildContext):
    import keras

    from harness.toolkit.backbones import build_pretrained

    return build_pretrained(
        context, keras.applications.MobileNetV2, name="mobilenetv2", preprocessing="tf", minimum=32
    )


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="mobilenetv2",
            build=build,
            image_size=(224, 224),
            params={"head": [256], "dropout": 0.0, "pooling": "avg"},
            space={"head": {"choices": [[128], [256], [512]]}, "dropout": {"low": 0.0, "high": 0.5, "step": 0.1}},
            description="MobileNetV2 ([-1, 1] preprocessing), GlobalAveragePooling, Dense 256, softmax",
        )
    ]
