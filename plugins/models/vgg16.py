"""The gems study's VGG16: frozen base, Flatten, Dense 256 [+ Dropout, Dense 128, Dropout]."""

from __future__ import annotations

from harness import BuildContext, ModelSpec, hookimpl


def build(context: BuildContext):
    import keras

    from harness.toolkit.backbones import build_pretrained

    return build_pretrained(context, keras.applications.VGG16, name="vgg16", preprocessing="caffe", minimum=32)


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name="vgg16",
            build=build,
            image_size=(224, 224),
            params={"head": [256], "dropout": 0.0, "pooling": "flatten"},
            space={"head": {"choices": [[256], [256, 128]]}, "dropout": {"choices": [0.0, 0.5]}},
            description="VGG16 (caffe preprocessing), Flatten, Dense 256 [Dropout, Dense 128, Dropout], softmax",
        )
    ]
