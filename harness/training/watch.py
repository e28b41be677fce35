"""The callbacks that watch a validation metric across phases: keep the best epoch's weights
([train.keep_best]) and stop early, their state carried into a fine-tuning phase that continues
to ``fine_tune.total_epochs``."""

from __future__ import annotations

from harness.training.build import load_keras


def watcher(monitor: str, patience: int | None, restore: bool, owner=None):
    """Early stopping after ``patience`` epochs without improvement of ``monitor`` (never when
    None), restoring the best epoch's weights when training ends if ``restore``, as Keras's
    EarlyStopping does; with ``owner`` (the whole model) it snapshots ``owner``'s variables,
    whichever part of it a phase trains, and its best value, weights and patience count go on
    from one phase to the next instead of starting over."""
    keras = load_keras()
    lower = monitor.endswith("loss")

    class Watcher(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.weights, self.wait, self.begun = None, None, 0, False
            #: Set while a phase that another continues trains: the best weights wait for the last.
            self.hold = False

        def on_train_begin(self, logs=None):
            if owner is None or not self.begun:
                self.best, self.weights, self.wait = None, None, 0
            self.begun = True

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
            for variable, value in [] if self.hold else self.weights or []:
                variable.assign(value)

    return Watcher()


def watchers(train, owner=None) -> list:
    """The early-stopping and keep-best callbacks of ``train`` for a phase. ``owner``: the whole
    model, when their state continues into the next phase (see ``watcher``)."""
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
