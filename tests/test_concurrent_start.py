"""Workers that start at the same instant on an empty PostgreSQL database (as a Slurm job array or a
Kubernetes Job starts them) all join one study, and the budget holds; the deploy recipes under
deploy/ run commands the harness has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from harness.cli.parser import build_parser
from harness.config.study import load_study
from harness.plugins import get_plugins
from harness.results.optuna_storage import open_storage
from harness.results.storage import RUN_STUDY_PREFIX, ResultStore
from harness.search.engine import search_id
from harness.search.recovery import SURPLUS

from conftest import tiny_study_text

#: More workers than trials: two of them find the budget taken at once.
WORKERS, TRIALS, FOLDS = 4, 2, 2
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SLURM, KUBERNETES = DEPLOY / "slurm", DEPLOY / "kubernetes"

#: A `harness worker` held at a barrier right before it opens the storage: each says it is there
#: (a file), and all go on when the go-file appears, so that they open the empty database together.
AT_THE_BARRIER = """
import sys, time
from pathlib import Path
from harness.results import optuna_storage
from harness.cli import main

ready, go = Path(sys.argv[1]), Path(sys.argv[2])
opened = optuna_storage.open_storage

def open_at_the_barrier(*args, **kwargs):
    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    return opened(*args, **kwargs)

optuna_storage.open_storage = open_at_the_barrier
sys.exit(main(sys.argv[3:]))
"""


def _workers_at_once(tmp_path: Path, study: Path, url: str) -> list[subprocess.Popen]:
    go = tmp_path / "go"
    procs, ready = [], []
    for index in range(WORKERS):
        home = tmp_path / f"machine{index}"
        ready.append(home / "ready")
        home.mkdir()
        command = ["worker", str(study), "--storage", url, "--results", str(home / "results")]
        procs.append(subprocess.Popen(
            [sys.executable, "-c", AT_THE_BARRIER, str(ready[-1]), str(go), *command],
            env=dict(os.environ, HARNESS_CACHE=str(home / "cache"), HARNESS_BLOCK_PLUGINS="html-report"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    deadline = time.time() + 240
    while not all(r.exists() for r in ready):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the workers never reached the storage"
        time.sleep(0.01)
    go.touch()
    return procs


@pytest.mark.run_machinery
def test_workers_starting_at_once_on_an_empty_database_join_one_study(tmp_path, postgres):
    url = postgres()  # a fresh database: no tables yet
    study = tmp_path / "race.toml"
    study.write_text(tiny_study_text(name="race", trials=TRIALS).replace("epochs = 2", "epochs = 1"))
    procs = _workers_at_once(tmp_path, study, url)
    for index, proc in enumerate(procs):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"worker {index}: {err[-3000:]}"
        assert "Traceback" not in err and "joined race" in err, err[-3000:]

    loaded = load_study(study, get_plugins())
    sid = search_id(loaded, loaded.candidates[0])
    backend = open_storage(url, tmp_path)
    names = sorted(optuna.get_all_study_names(storage=backend))
    assert names == sorted([RUN_STUDY_PREFIX + "race", sid]), "one study, one search: nobody made a second"
    trials = optuna.load_study(study_name=sid, storage=backend).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS, Counter(t.state.name for t in trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs.get(SURPLUS) for t in trials if t.state == TrialState.FAIL), "only surplus trials, never run"
    records = ResultStore(backend, "race").records([sid])
    assert max(Counter(r.key for r in records).values()) == 1, "no fold twice"
    assert Counter(r.config_id for r in records) == {t.user_attrs["config_id"]: FOLDS for t in complete}
    for index in range(WORKERS):  # each machine's leaderboard is the whole study's
        board = (tmp_path / f"machine{index}" / "results" / "race" / "leaderboard.csv").read_text().splitlines()
        assert board[1].split(",")[board[0].split(",").index("complete")] == str(TRIALS)


@pytest.mark.run_machinery
def test_prepare_only_creates_the_study_and_trains_nothing(tmp_path, postgres, capsys):
    from harness.cli import main

    url = postgres()
    study = tmp_path / "prep.toml"
    study.write_text(tiny_study_text(name="prep", trials=TRIALS))
    code = main(["worker", str(study), "--storage", url, "--results", str(tmp_path / "r"), "--prepare-only"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "prepared prep" in err

    loaded = load_study(study, get_plugins())
    sid = search_id(loaded, loaded.candidates[0])
    backend = open_storage(url, tmp_path)
    store = ResultStore(backend, "prep")
    assert store.folds() is not None and store.run() is not None
    assert optuna.load_study(study_name=sid, storage=backend).get_trials() == []
    assert not (tmp_path / "r" / "prep" / "leaderboard.csv").exists()


def _parses(command: list[str]) -> None:
    try:
        build_parser().parse_args(command)
    except SystemExit as exc:
        pytest.fail(f"`harness {' '.join(command)}` is not a harness command line (exit {exc.code})")


def test_the_slurm_recipe_prepares_once_then_starts_an_array_of_workers(tmp_path):
    """submit.sh and the job scripts run with stand-ins for sbatch and srun that log their arguments."""
    for script in (SLURM / "submit.sh", SLURM / "prepare.sbatch", SLURM / "worker.sbatch"):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    fake, log = tmp_path / "bin", tmp_path / "log"
    fake.mkdir()
    for name, reply in (("sbatch", "echo '41;cluster'"), ("srun", ":"), ("harness", ":")):
        (fake / name).write_text(f'#!/bin/sh\nprintf "{name}" >> {log}; printf " %s" "$@" >> {log}; echo >> {log}; {reply}\n')
        (fake / name).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    study = tmp_path / "sports.toml"
    study.write_text("")
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", HARNESS_STORAGE="postgresql://u@db/h",
               HARNESS_VENV=str(venv), HARNESS_STUDY=str(study), SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_JOB_ID="7")
    for command in (["submit.sh", str(study), "3"], ["prepare.sbatch"], ["worker.sbatch"]):
        done = subprocess.run(["bash", str(SLURM / command[0]), *command[1:]], env=env, cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    lines = [line.split() for line in log.read_text().splitlines()]
    assert lines[0] == ["sbatch", "--parsable", str(SLURM / "prepare.sbatch")]
    assert lines[1] == ["sbatch", "--parsable", "--dependency=afterok:41", "--array=0-2", str(SLURM / "worker.sbatch")]
    prepare, worker = (line[2:] for line in lines if line[:2] == ["srun", "harness"])
    assert prepare[-1] == "--prepare-only" and "--prepare-only" not in worker
    assert worker[worker.index("--results") + 1] == "results/task-2", "each task its own results folder"
    for command in (prepare, worker):
        _parses(command)
    missing = subprocess.run(["bash", str(SLURM / "worker.sbatch")], env=dict(env, HARNESS_STORAGE=""),
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "HARNESS_STORAGE" in missing.stderr


def _documents() -> dict[str, dict]:
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["metadata"]["name"]] = document
    return found


def test_the_kubernetes_recipe_is_a_prepare_job_then_a_parallel_job_of_workers():
    documents = _documents()
    secret = next(d for d in documents.values() if d["kind"] == "Secret")
    assert {"url", "password"} <= set(secret["stringData"]) and "@" in secret["stringData"]["url"]
    jobs = {name: d["spec"] for name, d in documents.items() if d["kind"] == "Job"}
    assert set(jobs) == {"harness-prepare", "harness-workers"}
    workers = jobs["harness-workers"]
    assert workers["parallelism"] == workers["completions"] > 1
    commands = {}
    for name, job in jobs.items():
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] in ("Never", "OnFailure")
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        for variable, key in (("HARNESS_STORAGE", "url"), ("PGPASSWORD", "password")):
            assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": key}
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        volumes = {v["name"] for v in pod["volumes"]}
        assert {m["name"] for m in container["volumeMounts"]} <= volumes
        args = [a.replace("$(HARNESS_STORAGE)", "postgresql://u@db/h") for a in container["args"]]
        assert container["command"] == ["harness"]
        assert set(re.findall(r"\$\((\w+)\)", " ".join(container["args"]))) <= set(env), "Kubernetes expands only these"
        _parses(args)
        commands[name] = args
    assert commands["harness-prepare"][-1] == "--prepare-only"
    assert "--prepare-only" not in commands["harness-workers"]
    assert "nvidia.com/gpu" in workers["template"]["spec"]["containers"][0]["resources"]["limits"]
