"""Train and score one configuration on one fold: the same way for every model.

The public names of ``harness.training``, where callers import them from; each job lives in a
module of its own:

- ``build``: build, freeze and compile a model; optimizers, targets, class weights, inputs;
- ``keeper``: the model kept between folds (``ModelKeeper``, ``FrozenSplit``, ``TopPart``);
- ``fold``: one fold's plan (its rows, targets, early-stopping share, how its phases fit);
- ``epochs``: the epoch loop (batches in a seeded order, ``fit``, the head's traced loop, callbacks);
- ``phases``: the cached phases' inputs, from the feature and the boundary caches;
- ``inference``: forward passes and predictions;
- ``fit``: ``fit_fold``, with its retry out of accelerator memory.

Early stopping and ReduceLROnPlateau watch a share of the training fold held out for that
purpose; the scored fold never steers training.
"""

from __future__ import annotations

from harness.training.build import (
    balanced_class_weight,
    build_model,
    compile_model,
    extra_input_widths,
    head_steps_per_execution,
    inner_split,
    make_optimizer,
    model_inputs,
    prepare_model,
    targets,
)
from harness.training.epochs import epoch_history, epoch_order, fit_head, fit_in_order, shuffled_batches
from harness.training.fit import FoldResult, fit_fold, is_out_of_memory, release_device_memory
from harness.training.inference import forward_pass, predict_once
from harness.training.keeper import FrozenSplit, ModelKeeper, TopPart

__all__ = [
    "FoldResult", "FrozenSplit", "ModelKeeper", "TopPart", "balanced_class_weight", "build_model", "compile_model",
    "epoch_history", "epoch_order", "extra_input_widths", "fit_fold", "fit_head", "fit_in_order", "forward_pass",
    "head_steps_per_execution", "inner_split", "is_out_of_memory", "make_optimizer", "model_inputs",
    "predict_once", "prepare_model", "release_device_memory", "shuffled_batches", "targets",
]
