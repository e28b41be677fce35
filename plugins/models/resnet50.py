"""The rocks study's ResNet50: GlobalAveragePooling, Dense 128, Dropout 0.3."""

from __future__ import annotations

from harness import BuildContext, ModelSpec, hookimpl


def build(context: BuildContext):
    import keras

    from harness.toolkit.backbones import build_pretrained

    return build_pretrained(context, keras.applications.ResNet50, name="resnet50", preprocessing="caffe", minimum=32)


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="resnet50",
            build=build,
            image_size=(224, 224),
            params={"head": [128], "dropout": 0.3, "pooling": "avg"},
            space={"head": {"choices": [[128], [256], [512]]}, "dropout": {"low": 0.0, "high": 0.5, "step": 0.1}},
            description="ResNet50 (caffe preprocessing), GlobalAveragePooling, Dense 128, Dropout 0.3, softmax",
        )
    ]
