"""The mlflow reporter against a real tracking server (``mlflow server``, SQLite, a loopback port),
read back with MlflowClient: runs nested study > candidate > trial, parameters, fold scores, each
epoch as a step, the study's files; a rerun with more trials adds to the same runs; an unreachable
server is one warning line, the study still ends with its leaderboard, and the next run sends
what the server missed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.config.study import load_study
from harness.errors import HarnessError
from harness.plugins import get_plugins
from harness.results.records import read_records

from conftest import tiny_study_text

pytest.importorskip("mlflow", reason="needs mlflow: pip install -e '.[mlflow]' (.ci/run does)")

def _holdout(text: str) -> str:
    """One validation split per trial: the logging is the same per fold, and the test trains half as much."""
    return text.replace("folds = 2\n", 'scheme = "holdout"\n')


SECOND_CANDIDATE = '\n[[candidates]]\nmodel = "cnn5"\nname = "narrow"\nfilters = [2, 2, 2, 2, 2]\ndense = [4]\n'


class Server:
    """An ``mlflow server`` started in the background; ``url()`` waits until it answers /health."""

    def __init__(self, folder: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = (folder / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
             "--default-artifact-root", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def url(self) -> str:
        url, deadline = f"http://127.0.0.1:{self.port}", time.time() + 180
        while time.time() < deadline:
            assert self.process.poll() is None, f"mlflow server stopped: see {self.log.name}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer in 180 s: see {self.log.name}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # the server and the uvicorn process it started
        self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture(autouse=True)
def _client_settings_restored(monkeypatch):
    """The reporter sets MLflow's client settings in the environment: undone after each test."""
    from harness_plugins.reports.mlflow import _CLIENT_ENV

    for name in (*_CLIENT_ENV, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = Server(tmp_path_factory.mktemp("mlflow"))
    yield started
    started.stop()


def test_settings_come_from_the_study_file_or_the_environment():
    from harness_plugins.reports.mlflow import mlflow_settings

    env = {"MLFLOW_TRACKING_URI": "http://env:5000"}
    assert mlflow_settings(None, "s", {}) is None
    assert mlflow_settings({}, "s", env) == ("http://env:5000", "s")
    assert mlflow_settings({"mlflow": False}, "s", env) is None
    assert mlflow_settings({"mlflow": True}, "s", {}) == ("", "s")
    table = {"mlflow": {"tracking_uri": "http://file:5000", "experiment": "e"}}
    assert mlflow_settings(table, "s", env) == ("http://file:5000", "e")


def test_a_mistake_in_report_mlflow_is_one_line(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text(tiny_study_text() + '\n[report]\nmlflow = { tracking_uri = "http://x", experimnt = "e" }\n')
    with pytest.raises(HarnessError, match=r"report\.mlflow\.experimnt: unknown key .*Did you mean 'experiment'") as err:
        load_study(path, get_plugins())
    assert "\n" not in str(err.value)


def test_an_unreachable_server_is_one_warning_and_the_study_goes_on(server, tmp_path, monkeypatch, capsys):
    # The server boots while the study runs against a closed port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed}")
    study = tmp_path / "down.toml"
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "html-report")  # its page is checked elsewhere
    study.write_text(_holdout(tiny_study_text(name="down", trials=1)))
    assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "mlflow" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: mlflow:"), err
    assert (tmp_path / "r" / "down" / "leaderboard.csv").is_file()
    records = read_records(tmp_path / "r" / "down" / "records.jsonl")
    assert len(records) == 1

    # Nothing was lost: the next run (nothing left to train) sends what the server lacks when it ends.
    from mlflow.tracking import MlflowClient

    url = server.url()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    client = MlflowClient(url)
    runs = _runs(client, client.get_experiment_by_name("down").experiment_id)  # the study's name
    assert Counter(r.data.tags["harness.kind"] for r in runs) == {"study": 1, "candidate": 1, "trial": 1}
    trial = next(r for r in runs if r.data.tags["harness.kind"] == "trial")
    assert {trial.data.metrics[f"fold_{r.fold}/accuracy"] for r in records} == {r.metrics["accuracy"] for r in records}


def test_a_study_shows_up_nested_and_a_rerun_adds_to_the_same_runs(server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    url = server.url()
    study = tmp_path / "tracked.toml"
    study.write_text(_holdout(tiny_study_text(name="tracked", trials=2)) + SECOND_CANDIDATE
                     + f'\n[report]\nmlflow = {{ tracking_uri = "{url}", experiment = "cmp" }}\n')
    assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("cmp").experiment_id
    runs = _runs(client, experiment)
    assert Counter(r.data.tags["harness.kind"] for r in runs) == {"study": 1, "candidate": 2, "trial": 4}
    top = next(r for r in runs if r.data.tags["harness.kind"] == "study")
    by_candidate = {r.info.run_name: r for r in runs if r.data.tags["harness.kind"] == "candidate"}
    assert set(by_candidate) == {"cnn5", "narrow"}
    assert {r.data.tags["mlflow.parentRunId"] for r in by_candidate.values()} == {top.info.run_id}
    artifacts = {a.path for a in client.list_artifacts(top.info.run_id)}
    assert {"leaderboard.csv", "report.html", "report.md", "study.toml"} <= artifacts
    records = read_records(tmp_path / "r" / "tracked" / "records.jsonl")
    trials = {(r.data.tags["harness.search_id"], r.data.tags["harness.config_id"]): r
              for r in runs if r.data.tags["harness.kind"] == "trial"}
    for record in records:
        trial = trials[(record.search_id, record.config_id)]
        assert trial.data.tags["mlflow.parentRunId"] == by_candidate[record.candidate].info.run_id
        assert float(trial.data.params["learning_rate"]) == pytest.approx(record.tuned["learning_rate"])
        assert trial.data.metrics[f"fold_{record.fold}/accuracy"] == pytest.approx(record.metrics["accuracy"])
        steps = client.get_metric_history(trial.info.run_id, f"fold_{record.fold}/epoch/loss")
        assert [(m.step, m.value) for m in sorted(steps, key=lambda m: m.step)] == [
            (step, pytest.approx(value)) for step, value in enumerate(record.history["loss"])
        ]

    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "html-report")  # its page went up already
    assert main(["run", str(study), "--results", str(tmp_path / "r"), "--trials", "3"]) == 0
    again = _runs(client, experiment)
    assert Counter(r.data.tags["harness.kind"] for r in again) == {"study": 1, "candidate": 2, "trial": 6}
    for trial in (r for r in again if r.data.tags["harness.kind"] == "trial"):
        assert len(client.get_metric_history(trial.info.run_id, "fold_0/accuracy")) == 1
        assert len(client.get_metric_history(trial.info.run_id, "fold_0/epoch/loss")) == 2  # two epochs, once


def _runs(client, experiment: str) -> list:
    return list(client.search_runs([experiment], max_results=1000))


def test_a_password_in_the_tracking_uri_is_refused_in_one_line(tmp_path):
    """The study file is copied into the results folder and sent as an artifact: no secret may ride in it."""
    path = tmp_path / "secret.toml"
    path.write_text(tiny_study_text() + '\n[report]\nmlflow = { tracking_uri = "http://me:hunter2@host:5000" }\n')
    with pytest.raises(HarnessError, match=r"report\.mlflow\.tracking_uri: .*MLFLOW_TRACKING_PASSWORD") as err:
        load_study(path, get_plugins())
    assert "\n" not in str(err.value)
    path.write_text(tiny_study_text() + '\n[report]\nmlflow = { tracking_uri = "http://me@host:5000" }\n')
    load_study(path, get_plugins())


def test_the_study_file_sent_as_an_artifact_holds_no_password():
    pytest.importorskip("mlflow", reason="pip install -e '.[mlflow]' (.ci/run does)")
    from harness_plugins.reports.mlflow_runs import without_passwords

    text = '[search]\nstorage = "postgresql+psycopg://harness:s3cr:et@db:5432/studies"\nnote = "http://user@host"\n'
    assert without_passwords(text) == (
        '[search]\nstorage = "postgresql+psycopg://harness:***@db:5432/studies"\nnote = "http://user@host"\n')
