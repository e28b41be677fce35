"""`harness export`, `harness predict` and `harness serve`: a model folder out of a study, the same
decoding as training, and an HTTP service answered by a real client (and a real browser)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.cli import main
from harness.serving.model_folder import ExportedModel
from harness.data.images import decode_file
from harness.results.records import read_predictions, read_records

from conftest import headless_chromium, tiny_study_text
from fixtures.image_layouts import class_folders

ROOT = Path(__file__).resolve().parents[1]

FOLDER_STUDY = """
[study]
name = "folder-shapes"
seed = 7

[dataset]
name = "folder"
root = "shapes"
image_size = [32, 32]

[cv]
folds = 2

[train]
epochs = 2
batch_size = 8

[search]
trials = 1

[[candidates]]
model = "cnn5"
filters = [4, 4, 4, 4, 4]
dense = [8]
bn_momentum = 0.5
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A study over image files, run, and exported both ways: (results, refit folder, ensemble folder, data)."""
    tmp = tmp_path_factory.mktemp("export")
    previous = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(tmp / "cache")  # module-wide: the function fixtures come later
    data = class_folders(tmp / "data" / "shapes", {"a": 8, "b": 8, "c": 8})
    study = tmp / "study.toml"
    study.write_text(FOLDER_STUDY)
    assert main(["run", str(study), "--results", str(tmp / "r"), "--data-root", str(tmp / "data")]) == 0
    results = tmp / "r" / "folder-shapes"
    assert main(["export", str(results)]) == 0
    assert main(["export", str(results), "--ensemble", "--out", str(tmp / "ensemble")]) == 0
    yield results, results / "export" / "cnn5", tmp / "ensemble", data
    if previous is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = previous


def test_the_fold_models_reproduce_the_out_of_fold_predictions_from_the_image_files(exported):
    """Export keeps the study's recipe and seeds; predict decodes files as training did."""
    results, _, ensemble, data = exported
    model = ExportedModel(ensemble)
    assert model.info["kind"] == "ensemble" and len(model.models) == 2
    import pandas as pd

    folds = pd.read_csv(results / "folds.csv", dtype={"id": str}, keep_default_na=False)
    for record in read_records(results / "records.jsonl"):
        stored = read_predictions(results, record.key)
        ids = folds["id"].iloc[stored["rows"]]
        pixels = np.stack([decode_file(data / i, model.image_size, model.resize) for i in ids])
        again = model.models[record.fold].predict(pixels, verbose=0)
        np.testing.assert_allclose(again, stored["probabilities"], atol=1e-4)


def test_refit_folder_holds_model_card_and_predicts_every_file_of_a_folder(exported, capsys):
    results, refit, _, data = exported
    info = json.loads((refit / "model.json").read_text())
    assert info["kind"] == "refit" and info["classes"] == ["a", "b", "c"] and info["models"] == ["model.keras"]
    assert info["inputs"]["image"] == {"size": [32, 32], "resize": "stretch", "channels": 3, "dtype": "uint8 RGB, 0-255"}
    assert info["data"]["images"] == 24 and len(info["study_sha256"]) == 64
    assert info["estimate"]["folds"] == 2 and info["estimate"]["ci_low"] <= info["estimate"]["mean"]
    card = (refit / "MODEL_CARD.md").read_text()
    assert f"{info['estimate']['mean']:.3f}" in card and "| a | 8 |" in card and info["study_sha256"] in card
    capsys.readouterr()
    assert main(["predict", str(refit), str(data), "--json", "--top-k", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 24
    model = ExportedModel(refit)
    first = lines[0]
    expected = model.probabilities(decode_file(first["image"], (32, 32))[None])[0]
    assert [t["label_id"] for t in first["top"]] == list(np.argsort(-expected)[:2])
    assert first["top"][0]["probability"] == pytest.approx(expected.max(), abs=1e-5)
    assert all(t["label"] == "abc"[t["label_id"]] for line in lines for t in line["top"])
    assert main(["predict", str(refit), str(data / "a" / "000.jpg")]) == 0
    assert "probability" in capsys.readouterr().out


def test_predict_refuses_bad_input_in_one_line(exported, tmp_path, capsys):
    _, refit, _, data = exported
    (tmp_path / "notes.txt").write_text("not a picture")
    capsys.readouterr()
    assert main(["predict", str(refit), str(data / "a" / "000.jpg"), str(tmp_path / "notes.txt")]) == 2
    captured = capsys.readouterr()
    assert "notes.txt: not a readable image" in captured.err and "Traceback" not in captured.err
    assert "000.jpg" in captured.out  # the readable one is still answered
    assert main(["predict", str(refit), str(tmp_path / "nowhere.jpg")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(data)]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert main(["predict", str(refit), str(data), "--location", "EASTERN_PACIFIC"]) == 2
    assert "takes no input location" in capsys.readouterr().err
    newer = tmp_path / "newer"
    newer.mkdir()
    info = json.loads((refit / "model.json").read_text()) | {"format": 99}
    (newer / "model.json").write_text(json.dumps(info))
    assert main(["predict", str(newer), str(data)]) == 2
    err = capsys.readouterr().err
    assert "format 99" in err and "upgrade harness" in err


def test_a_location_model_needs_a_known_location(tmp_path, capsys):
    extra = 'head = [8]\ndropout = 0.0\nweights = "none"\nimage_size = [32, 32]'
    text = tiny_study_text(name="located", trials=1, model="efficientnet_lite0_location", extra=extra)
    study = tmp_path / "located.toml"
    study.write_text(text.replace("views = 2", "views = 2\nlocations = 3").replace("epochs = 2", "epochs = 1"))
    assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    assert main(["export", str(tmp_path / "r" / "located"), "--out", str(tmp_path / "m")]) == 0
    model = ExportedModel(tmp_path / "m")
    known = model.extra_inputs["location"]
    image = sorted((tmp_path / "m" / "examples").iterdir())[0]
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m"), str(image)]) == 2
    assert f"needs a location: give one of {', '.join(known)}" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "m"), str(image), "--location", "ATLANTIS"]) == 2
    assert "unknown location 'ATLANTIS'" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "m"), str(image), "--location", known[0], "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["top"]) == 3
    with serving_app(model) as url:
        status, body = post(url, image.read_bytes(), {"location": "ATLANTIS"})
        assert status == 422 and "unknown location" in body["error"]
        status, body = post(url, image.read_bytes(), {})
        assert status == 422 and "needs a location" in body["error"]
        status, body = post(url, image.read_bytes(), {"location": known[-1], "top_k": "2"})
        assert status == 200 and len(body["predictions"]) == 2


# --- the service over real HTTP -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(file: bytes, fields: dict[str, str], filename: str = "photo.jpg") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + file + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, file: bytes, fields: dict[str, str], filename: str = "photo.jpg") -> tuple[int, dict]:
    body, content_type = multipart(file, fields, filename)
    request = urllib.request.Request(f"{url}/predict", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def wait_until_up(url: str, process=None, log: Path | None = None, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text() if log else ''}")
        try:
            if get(f"{url}/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up in {seconds} s")


@contextmanager
def serving_app(model: ExportedModel, **limits):
    """The app of `harness serve` on uvicorn in a thread, on a free loopback port."""
    uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]'")

    from harness.serving.http import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model, **limits), host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def service(exported, tmp_path_factory):
    """`harness serve` as its own process, with a small upload limit: (url, log file, data)."""
    pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
    _, refit, _, data = exported
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "harness", "serve", str(refit), "--port", str(port), "--max-upload-mb", "0.5"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, log)
        yield url, log, data
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_service_answers_good_and_bad_requests_over_http_without_a_500(service):
    url, log, data = service
    image = (data / "b" / "003.jpg").read_bytes()
    status, body = post(url, image, {"top_k": "2"})
    assert status == 200 and body["model"] == "folder-shapes/cnn5" and body["version"]
    assert [sorted(p) for p in body["predictions"]] == [["label", "label_id", "probability"]] * 2
    assert sum(p["probability"] for p in body["predictions"]) <= 1 + 1e-6
    status, info = get(f"{url}/model")
    info = json.loads(info)
    assert info["classes"] == ["a", "b", "c"] and info["inputs"]["image"]["size"] == [32, 32]
    assert info["estimate"]["objective"] == "accuracy"
    assert json.loads(get(f"{url}/openapi.json")[1])["paths"]["/predict"]
    huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(huge, format="PNG")  # 48 megapixels in a small file
    cases = [
        (b"", {}, 400, "empty upload"),
        (b"just some text", {}, 415, "not an image"),
        (image[: len(image) // 3], {}, 415, "photo.jpg: not"),
        (image, {"top_k": "zero"}, 422, "top_k"),
        (image, {"top_k": "0"}, 422, "top_k"),
        (image, {"location": "EASTERN_PACIFIC"}, 422, "takes no location"),
        (os.urandom(600 * 1024), {}, 413, "too large"),
        (huge.getvalue(), {}, 413, "too large"),
    ]
    for payload, fields, code, words in cases:
        status, body = post(url, payload, fields)
        assert (status, words in body["error"]) == (code, True), (words, status, body)
    text = log.read_text()
    assert "Traceback" not in text and " 500 " not in text


def same(answer: list[dict], expected: list[dict]) -> bool:
    return [a["label_id"] for a in answer] == [e["label_id"] for e in expected] and all(
        abs(a["probability"] - e["probability"]) < 1e-5 for a, e in zip(answer, expected))


def test_service_serves_concurrent_requests_with_the_same_answers(service):
    url, _, data = service
    files = sorted((data / "a").iterdir())[:4] + sorted((data / "c").iterdir())[:4]
    expected = {f: post(url, f.read_bytes(), {})[1]["predictions"] for f in files}
    failures, answers = [], []

    def client(k: int) -> None:
        for i in range(12):
            f = files[(k + i) % len(files)]
            status, body = post(url, f.read_bytes(), {})
            if status != 200:
                failures.append((status, body))
            else:
                answers.append(same(body["predictions"], expected[f]))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and len(answers) == 72 and all(answers)


def test_the_upload_page_classifies_a_photo_in_headless_chromium(service, tmp_path):
    url, _, data = service
    status, page = get(f"{url}/")
    assert status == 200 and b"http" not in page.replace(b"http-equiv", b"")  # no external asset
    browser = headless_chromium()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        browser.get(f"{url}/")
        assert browser.title == "folder-shapes/cnn5"
        browser.find_element(By.ID, "file").send_keys(str(data / "a" / "001.jpg"))
        browser.find_element(By.ID, "submit").click()
        bars = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".prediction"))
        assert len(bars) == 3 and all("%" in bar.text for bar in bars)
        (tmp_path / "notes.txt").write_text("not a picture")
        browser.find_element(By.ID, "file").send_keys(str(tmp_path / "notes.txt"))
        browser.find_element(By.ID, "submit").click()
        error = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "error"))
        assert "not an image" in error[0].text
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "/predict" not in e["message"]]
        assert not errors, errors
    finally:
        browser.quit()
