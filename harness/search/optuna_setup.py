"""Optuna's parts for one candidate's search: its sampler, pruner and study."""

from __future__ import annotations

import optuna

from harness.config.study import Study
from harness.errors import HarnessError
from harness.plugins import Plugins
from harness.search.ids import direction, sampler_seed
from harness.search.recovery import RETRY_OF, SURPLUS, retry_cut_off


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``search.sampler`` names ("tpe" unless another)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def configuration_number(trials: list[optuna.trial.FrozenTrial], number: int) -> int:
    """How many configurations were proposed before trial ``number``: its earlier trials less
    those a retry replaced (cut off by a crash) and those never run (over the budget). A resumed
    search numbers its configurations as an uninterrupted one does."""
    replaced = {t.user_attrs.get(RETRY_OF) for t in trials}
    return sum(
        t.number < number and t.number not in replaced and not t.user_attrs.get(SURPLUS) for t in trials
    )


class SeededPerTrial(optuna.samplers.BaseSampler):
    """A sampler made afresh for each trial, seeded from the candidate's seed and the trial's
    configuration number: what it proposes depends on the seed, the candidate and the trial
    history alone, never on what a process sampled before (so kill -9 and resume, or several
    workers, propose what one uninterrupted run would)."""

    def __init__(self, name: str, seed: int):
        self._name, self._seed = name, seed
        self._current = make_sampler(name, seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        index = configuration_number(study.get_trials(deepcopy=False), trial.number)
        self._current = make_sampler(self._name, sampler_seed(self._seed, str(index)))
        self._current.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._current.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._current.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._current.after_trial(study, trial, state, values)


def study_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of one candidate's search. QMC keeps one seed: its points come from one
    scrambled sequence, indexed by the study's count of trials."""
    return make_sampler(name, seed) if name == "qmc" else SeededPerTrial(name, seed)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``search.pruner`` names (none unless one is named)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def open_candidate_study(study: Study, sid: str, storage, plugins: Plugins, candidate: str) -> optuna.Study:
    """A candidate's Optuna study (created on first use), its cut-off trials queued again."""
    try:
        optuna_study = optuna.create_study(
            study_name=sid,
            storage=storage,
            load_if_exists=True,
            direction=direction(study, plugins),
            pruner=make_pruner(study.search.pruner),
        )
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as exc:
        raise HarnessError(f"cannot open the Optuna storage '{storage}': {exc}") from exc
    retry_cut_off(optuna_study)
    optuna_study.sampler = study_sampler(study.search.sampler, sampler_seed(study.seed, candidate))
    return optuna_study
