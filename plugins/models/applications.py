"""Every other ``keras.applications`` backbone, from one table: adding a backbone is adding a row.

Each model is Preprocess → base → pooling → Dense head → softmax, with the parameters and default
search space below.
"""

from __future__ import annotations

from functools import partial

from harness import BuildContext, ModelSpec, hookimpl

HEAD_PARAMS = {"head": [256], "dropout": 0.0, "pooling": "avg"}
HEAD_SPACE = {
    "head": {"choices": [[128], [256], [512], [256, 128]]},
    "dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
}

# Preprocessing: "caffe" (VGG, ResNet), "tf" ([-1, 1]), "torch" (DenseNet), "none" (the base
# normalises 0–255 itself). Sizes are Keras's defaults for ImageNet weights; minimum is the
# smallest side the architecture accepts.
#  model name            keras.applications   preprocessing  size  minimum
APPLICATIONS = [
    ("vgg19",              "VGG19",              "caffe", 224, 32),
    ("resnet101",          "ResNet101",          "caffe", 224, 32),
    ("resnet152",          "ResNet152",          "caffe", 224, 32),
    ("resnet50v2",         "ResNet50V2",         "tf",    224, 32),
    ("resnet101v2",        "ResNet101V2",        "tf",    224, 32),
    ("resnet152v2",        "ResNet152V2",        "tf",    224, 32),
    ("inceptionv3",        "InceptionV3",        "tf",    299, 75),
    ("inceptionresnetv2",  "InceptionResNetV2",  "tf",    299, 75),
    ("mobilenet",          "MobileNet",          "tf",    224, 32),
    ("mobilenetv3small",   "MobileNetV3Small",   "none",  224, 32),
    ("mobilenetv3large",   "MobileNetV3Large",   "none",  224, 32),
    ("densenet121",        "DenseNet121",        "torch", 224, 32),
    ("densenet169",        "DenseNet169",        "torch", 224, 32),
    ("densenet201",        "DenseNet201",        "torch", 224, 32),
    ("nasnetmobile",       "NASNetMobile",       "tf",    224, 32),
    ("nasnetlarge",        "NASNetLarge",        "tf",    331, 32),
    ("efficientnetb0",     "EfficientNetB0",     "none",  224, 32),
    ("efficientnetb1",     "EfficientNetB1",     "none",  240, 32),
    ("efficientnetb2",     "EfficientNetB2",     "none",  260, 32),
    ("efficientnetb3",     "EfficientNetB3",     "none",  300, 32),
    ("efficientnetb4",     "EfficientNetB4",     "none",  380, 32),
    ("efficientnetb5",     "EfficientNetB5",     "none",  456, 32),
    ("efficientnetb6",     "EfficientNetB6",     "none",  528, 32),
    ("efficientnetb7",     "EfficientNetB7",     "none",  600, 32),
    ("efficientnetv2b0",   "EfficientNetV2B0",   "none",  224, 32),
    ("efficientnetv2b1",   "EfficientNetV2B1",   "none",  240, 32),
    ("efficientnetv2b2",   "EfficientNetV2B2",   "none",  260, 32),
    ("efficientnetv2b3",   "EfficientNetV2B3",   "none",  300, 32),
    ("efficientnetv2s",    "EfficientNetV2S",    "none",  384, 32),
    ("efficientnetv2m",    "EfficientNetV2M",    "none",  480, 32),
    ("efficientnetv2l",    "EfficientNetV2L",    "none",  480, 32),
    ("convnexttiny",       "ConvNeXtTiny",       "none",  224, 32),
    ("convnextsmall",      "ConvNeXtSmall",      "none",  224, 32),
    ("convnextbase",       "ConvNeXtBase",       "none",  224, 32),
    ("convnextlarge",      "ConvNeXtLarge",      "none",  224, 32),
    ("convnextxlarge",     "ConvNeXtXLarge",     "none",  224, 32),
]


def build(context: BuildContext, *, name: str, application: str, preprocessing: str, minimum: int):
    import keras

    from harness.toolkit.backbones import build_pretrained

    return build_pretrained(
        context, getattr(keras.applications, application), name=name, preprocessing=preprocessing, minimum=minimum
    )


@hookimpl
def register_models() -> list[ModelSpec]:
    return [
        ModelSpec(
            name=name,
            build=partial(build, name=name, application=application, preprocessing=preprocessing, minimum=minimum),
            image_size=(size, size),
            params=HEAD_PARAMS,
            space=HEAD_SPACE,
            description=f"keras.applications.{application} ({preprocessing} preprocessing, >= {minimum} px), "
            "GlobalAveragePooling, Dense 256, softmax",
        )
        for name, application, preprocessing, size, minimum in APPLICATIONS
    ]
