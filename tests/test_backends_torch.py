"""The model-training test modules again under PyTorch (see test_backends.py, which runs them under
JAX): in a module of its own so that pytest-xdist's --dist loadfile gives the two long runs to
different workers."""

from __future__ import annotations

from test_backends import model_tests_pass_on


def test_model_tests_pass_on_torch(tmp_path):
    model_tests_pass_on("torch", tmp_path)
