"""What one process keeps between folds: the split model of the last cached-phase fold.

While the base is frozen, folds and trials of one configuration differ only in the head's weights
and optimizer state, so the model is built and its train function traced once; each fold resets the
head from its seed. A fine-tuning phase from the boundary cache trains the model's top part, whose
weights each fold restores as built (``FrozenSplit.restore``), so the model is kept there too.

A search worker makes one ``ModelKeeper`` and passes it to every ``fit_fold`` it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.training.features import reset_head


def _keras():
    import keras  # imported on first training, so `harness validate` stays fast

    return keras


@dataclass
class FrozenSplit:
    """A built model split for a cached phase: extractor, head, the backbone key, the head's compile."""

    key: str
    model: Any
    base: Any
    extractor: Any
    head: Any
    backbone_key: str
    compiled: tuple | None = None
    optimizer_start: list | None = None
    session: int = 0
    template: Any = None  # an uncompiled clone of the head: cloning a compiled head recompiles it
    loops: Any = None  # the head's traced epoch loops (TensorFlow), made for its compile
    #: With a fine-tuning phase: the model's weights as built, restored before each fold, and the
    #: model's top parts for the boundary cache by first trainable layer (see ``harness.training.phases``).
    initial_weights: list | None = None
    tops: dict = field(default_factory=dict)
    #: The model wrapped in its augmentation layers, by augmentation setting: made once, since each
    #: wrapping calls the kept model again and adds a node to it (memory that grows per fold).
    augmented: dict = field(default_factory=dict)

    def reset_head(self, seed: int) -> None:
        """Fresh head weights and dropout seeds from ``seed`` (see ``harness.training.features.reset_head``)."""
        if self.template is None:
            self.template = _keras().models.clone_model(self.head)
        reset_head(self.head, seed, self.template)

    def restore(self, seed: int) -> None:
        """The model as built, its base frozen, with the head from ``seed``: a kept model that a
        fine-tuning phase changed starts the next fold as a new one would."""
        if self.initial_weights is not None:
            from harness.toolkit.backbones import set_base_trainable

            set_base_trainable(self.base, False)
            self.model.set_weights(self.initial_weights)
        self.reset_head(seed)


@dataclass
class TopPart:
    """A kept model's top part for one fine-tuning cut, and its compile (see ``compile_kept``)."""

    split: Any  # harness.training.boundary.BoundarySplit
    compiled: tuple | None = None
    optimizer_start: list | None = None


@dataclass
class ModelKeeper:
    """The split model kept between folds (``split``, with its top parts), and the reasons a
    fine-tuning phase ran end to end that were already logged (``said``: each is said once)."""

    split: FrozenSplit | None = None
    said: set[str] = field(default_factory=set)

    def forget(self) -> None:
        """Drop the kept split model (if any) and clear the Keras session."""
        self.split = None
        _keras().backend.clear_session(free_memory=False)
