"""The callbacks that watch a validation metric: keep the best epoch's weights ([train.keep_best])
and stop early, also across a fine-tuning phase that goes on to ``fine_tune.total_epochs``.

Going on to a total, each callback does what Keras 2's did when the studies called ``fit`` twice
with the same callbacks: early stopping starts over at each phase (its patience count and best value
reset, as Keras's EarlyStopping does in ``on_train_begin``), so a phase one that spent its patience
still fine-tunes; keep-best's best epoch is the best of the whole run, restored once, after the last
phase. A restored epoch is restored whole, its BatchNormalization statistics as its validation pass
used them, so the model scored is the kept epoch's (see ``restored_exactly``).
"""

from __future__ import annotations

from harness.training.build import load_keras


def watcher(monitor: str, patience: int | None, restore: bool, owner=None):
    """Early stopping after ``patience`` epochs without improvement of ``monitor`` (never when
    None), restoring the best epoch's weights when training ends if ``restore``, as Keras's
    EarlyStopping does. With ``owner`` (the whole model) it snapshots ``owner``'s variables,
    whichever part of it a phase trains; keep-best (``patience`` None) then goes on from one phase
    to the next, its best epoch restored after the phase that does not ``hold`` it, while early
    stopping starts over each phase."""
    keras = load_keras()
    lower = monitor.endswith("loss")
    spans_run = owner is not None and patience is None

    class Watcher(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.weights, self.wait, self.begun = None, None, 0, False
            #: Set while a phase that another continues trains: the best weights wait for the last.
            self.hold = False
            #: Whether the last phase's end restored a kept epoch that must stay as it was.
            self.restored = False
            self.exact = owner is not None or patience is None

        def on_train_begin(self, logs=None):
            if not (spans_run and self.begun):
                self.best, self.weights, self.wait = None, None, 0
            self.begun, self.restored = True, False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None:
                return
            value = float(value)
            if self.best is None or (value < self.best if lower else value > self.best):
                self.best, self.wait = value, 0
                if restore:  # by variable: Keras's get_weights order changes when a phase unfreezes layers
                    self.weights = [(v, keras.ops.convert_to_numpy(v)) for v in (owner or self.model).weights]
                return
            self.wait += 1
            if patience is not None and self.wait >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if (self.hold and spans_run) or not self.weights:
                return
            for variable, value in self.weights:
                variable.assign(value)
            self.restored = self.exact

    return Watcher()


def restored_exactly(callbacks: list) -> bool:
    """Whether one of ``callbacks`` restored a kept epoch as it was validated (keep-best, or early
    stopping going on to a total): BatchNormalization recalibration must not change it after."""
    return any(getattr(callback, "restored", False) for callback in callbacks)


def watchers(train, owner=None) -> list:
    """The early-stopping and keep-best callbacks of ``train`` for a phase. ``owner``: the whole
    model, when they go on into the next phase (see ``watcher``)."""
    keras = load_keras()
    es, best = train.early_stopping, train.keep_best
    if owner is None and best is None and (es is None or es.monitor != "val_top_k"):
        if es is None:
            return []
        return [keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, restore_best_weights=True)]
    found = []
    if es is not None:
        # With keep_best, keep_best restores; else early stopping restores its own best epoch.
        found.append(watcher(es.monitor, es.patience, best is None, owner))
    if best is not None:
        found.append(watcher(best.monitor, None, True, owner))
    return found
