"""Nested cross-validation (``[cv] outer = K``): each candidate's whole search run again inside
each outer training part, its selected configuration refit there and scored on the outer part.

Every image the study may tune on is scored once, by a model whose search and selection never saw
it: an unbiased estimate of "search, then pick", against which the ordinary CV score of the
selected configuration shows its optimism. Each outer fold's search is an Optuna study of its own
(``<search id>.outer<k>``) in the study's storage, so it resumes like the main search; the feature
caches are shared, so with a frozen backbone the cost is the heads' training.
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from harness.core.memory import MemoryGuard
from harness.core.stop import StopToken
from harness.data.folds import cv_indices, test_indices
from harness.data.nested_folds import outer_assignment, outer_fold_table
from harness.plugins import Plugins
from harness.results.storage import ResultStore
from harness.search.context import RunContext
from harness.search.engine import CandidateSearch, SearchSession
from harness.search.final_score import FinalScore, final_score
from harness.search.ids import search_id
from harness.search.progress import SearchProgress
from harness.training.keeper import ModelKeeper


def outer_search_id(search: str, outer: int) -> str:
    """The Optuna study name of a candidate's search inside outer fold ``outer``."""
    return f"{search}.outer{outer}"


def outer_search_ids(run: RunContext, candidate) -> list[str]:
    """Every outer fold's search id of one candidate (none without nested CV)."""
    sid = search_id(run.study, candidate)
    return [outer_search_id(sid, k) for k in range(run.study.cv.outer)]


def run_nested(run: RunContext, plugins: Plugins, storage, store: ResultStore, console: Console,
               stop: StopToken, memory: MemoryGuard | None = None) -> None:
    """Run (or resume) every candidate's search in every outer fold, then score each outer part once."""
    cv = run.study.cv
    if not cv.outer:
        return
    outer = outer_assignment(run.dataset, cv, run.folds)
    keeper = ModelKeeper()
    for k in range(cv.outer):
        folds = outer_fold_table(run.dataset, cv, run.folds, outer, k)
        inner = replace(run, folds=folds)
        console.print(f"[bold]nested CV, outer fold {k + 1} of {cv.outer}[/]: {len(cv_indices(folds))} images "
                      f"searched with {cv.folds * cv.repeats} inner fold(s), {len(test_indices(folds))} held out")
        # The outer searches' records stay out of records.jsonl (the main search's view): no mirror.
        records = ResultStore(storage, run.study.name)
        with SearchProgress(console) as progress:
            session = SearchSession(inner, plugins, storage, records, progress, stop, keeper, "", memory)
            for candidate in run.study.candidates:
                search = CandidateSearch(session, candidate)
                search.sid = outer_search_id(search.sid, k)
                search.search()
        for candidate in run.study.candidates:
            target = FinalScore(inner, plugins, store, candidate, outer_search_id(search_id(run.study, candidate), k),
                                cv_indices(folds), test_indices(folds), folds, outer=k)
            final_score(target, console, stop)
