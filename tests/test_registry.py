import pytest

from harness import HarnessError, ModelSpec
from harness.registry import Registry


def _spec(name):
    return ModelSpec(name=name, build=lambda ctx: None)


def test_duplicate_name_names_both_plugins():
    registry = Registry("model")
    registry.add(_spec("resnet"), "plugin-a")
    with pytest.raises(HarnessError) as err:
        registry.add(_spec("resnet"), "plugin-b")
    assert "plugin-a" in str(err.value) and "plugin-b" in str(err.value) and "'resnet'" in str(err.value)


def test_unknown_name_suggests_and_lists():
    registry = Registry("model")
    for name in ("resnet50", "xception", "cnn5"):
        registry.add(_spec(name), "builtin")
    with pytest.raises(HarnessError) as err:
        registry.get("resnet5")
    message = str(err.value)
    assert "Did you mean 'resnet50'?" in message
    assert "Available: cnn5, resnet50, xception" in message


def test_unknown_name_without_close_match_still_lists():
    registry = Registry("dataset")
    registry.add(_spec("synthetic"), "builtin")
    message = registry.unknown_message("zzz")
    assert "Did you mean" not in message and "Available: synthetic" in message
