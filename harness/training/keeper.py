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

import numpy as np

from harness.config.study import TrainConfig
from harness.specs import BuildContext, ModelSpec
from harness.training.build import compile_kept, head_steps_per_execution, load_keras, model_key, prepare_model
from harness.training.features import backbone_key, reset_head, split_model

#: Keras's counter of this name goes up by one per ``get_uid`` call and starts over at clear_session():
#: a kept model is whole while each check finds it one above the last.
SESSION_UID = "harness_kept_model"


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
            self.template = load_keras().models.clone_model(self.head)
        reset_head(self.head, seed, self.template)

    def restore(self, seed: int) -> None:
        """The model as built, its base frozen, with the head from ``seed``: a kept model that a
        fine-tuning phase changed starts the next fold as a new one would."""
        if self.initial_weights is not None:
            from harness.toolkit.backbones import set_base_trainable

            set_base_trainable(self.base, False)
            self.model.set_weights(self.initial_weights)
        self.reset_head(seed)

    def compile_head(self, train: TrainConfig) -> None:
        """Compile the head once per optimizer setting; later folds restore the optimizer's initial
        state instead, which keeps the traced train function."""
        if compile_kept(self, self.head, train, train.learning_rate, steps_per_execution=head_steps_per_execution()):
            self.loops = None

    def built_weights(self) -> list:
        """The weights of the model as built (kept before any fold changes them)."""
        return [np.array(w) for w in self.model.get_weights()]


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
        load_keras().backend.clear_session(free_memory=False)

    def model_for_fold(self, spec: ModelSpec, context: BuildContext, train: TrainConfig, seed: int, cached: bool):
        """``(model, base, split)`` with the head starting from ``seed``; ``split`` is set (and kept)
        when the first phase trains the head on cached features (``cached``: it may).

        The model of the last such fold is kept and reused while the configuration's model is the
        same (only optimizer settings differ): without fine-tuning only the head changes, and with it
        each fold restores the weights as built. The head's start depends on the seed alone, whether
        the model is new or kept.
        """
        key = model_key(spec, context, train) if cached else ""
        kept = self._whole(key) if cached else None
        if kept is not None:
            if train.fine_tune is not None and kept.initial_weights is None:
                kept.initial_weights = kept.built_weights()
            kept.restore(seed)
            return kept.model, kept.base, kept
        self.forget()
        keras = load_keras()
        # A kept model must not depend on which fold built it; its head is reset per fold anyway.
        keras.utils.set_random_seed(0 if cached else seed)
        model, base = prepare_model(spec, context, train, augment=False)
        parts = split_model(model)
        if not cached or base is None or parts is None:
            reset_head(parts[1] if parts else None, seed)
            return model, base, None
        extractor, head = parts
        split = FrozenSplit(key, model, base, extractor, head, backbone_key(extractor, context.image_size))
        if train.fine_tune is not None:
            split.initial_weights = split.built_weights()
        split.reset_head(seed)
        self.split = split
        split.session = keras.backend.get_uid(SESSION_UID)
        return model, base, split

    def _whole(self, key: str) -> FrozenSplit | None:
        """The kept split model of ``key`` if there is one and no clear_session() happened since."""
        kept = self.split
        if kept is None or kept.key != key:
            return None
        session = load_keras().backend.get_uid(SESSION_UID)
        if session != kept.session + 1:
            return None
        kept.session = session
        return kept
