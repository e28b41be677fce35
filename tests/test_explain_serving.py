"""Grad-CAM heat maps where a model is used: `harness predict --explain OUT_DIR` writes overlays, and
`harness serve` answers ``explain=true`` and shows the overlay on its upload page."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import harness_cache, headless_chromium
from fixtures.image_layouts import class_folders
from PIL import Image
from test_serve import FOLDER_STUDY, post, serving_app

from harness.cli import main
from harness.serving.model_folder import ExportedModel


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """test_serve's tiny folder study (2 folds, 24 images of 32×32), exported as an ensemble of its
    2 fold models (the averaged heat maps): (model folder, data)."""
    tmp = tmp_path_factory.mktemp("explain")
    data = class_folders(tmp / "data" / "shapes", {"a": 8, "b": 8, "c": 8})
    study = tmp / "study.toml"
    study.write_text(FOLDER_STUDY.replace("epochs = 2", "epochs = 1"))
    with harness_cache(tmp / "cache"):
        assert main(["run", str(study), "--results", str(tmp / "r"), "--data-root", str(tmp / "data")]) == 0
        assert main(["export", str(tmp / "r" / "folder-shapes"), "--ensemble", "--out", str(tmp / "m")]) == 0
    return tmp / "m", data


def test_predict_explain_writes_one_overlay_per_image_without_clashes(ensemble, tmp_path, capsys):
    folder, data = ensemble
    images = [data / "a" / "000.jpg", data / "b" / "000.jpg", data / "c" / "001.jpg"]
    out = tmp_path / "maps"
    capsys.readouterr()
    assert main(["predict", str(folder), *map(str, images), "--json", "--explain", str(out)]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    written = [Path(line["explanation"]) for line in lines]
    assert [line["image"] for line in lines] == list(map(str, images))
    assert [p.name for p in written] == ["a-000.gradcam.png", "b-000.gradcam.png", "001.gradcam.png"]  # no clash
    assert all(p.parent == out for p in written)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert "mean of the 2 fold models' maps" in captured.err
    model = ExportedModel(folder)
    for image, path in zip(images, written):
        plain = model.decode(image.read_bytes())
        drawn = np.asarray(Image.open(path).convert("RGB"))
        assert drawn.shape == plain.shape == (32, 32, 3)
        assert np.abs(drawn.astype(int) - plain).mean() > 5  # the heat map is blended on
    assert main(["predict", str(folder), str(images[0]), "--explain", str(out)]) == 0
    assert f"heat map of {lines[0]['top'][0]['label']}: {out / '000.gradcam.png'}" in capsys.readouterr().out


def test_predict_explain_refuses_a_folder_it_cannot_write_in_one_line(ensemble, tmp_path, capsys):
    folder, data = ensemble
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    for where in (tmp_path / "notes.txt", tmp_path / "notes.txt" / "maps"):
        capsys.readouterr()
        assert main(["predict", str(folder), str(data / "a" / "000.jpg"), "--explain", str(where)]) == 2
        captured = capsys.readouterr()
        assert f"--explain {where}: " in captured.err and "folder" in captured.err
        assert "Traceback" not in captured.err and captured.out == ""


def test_the_api_returns_the_overlay_only_when_asked(ensemble):
    folder, data = ensemble
    image = (data / "b" / "002.jpg").read_bytes()
    with serving_app(ExportedModel(folder)) as url:
        status, plain = post(url, image, {"top_k": "2"})
        assert status == 200 and "explanation" not in plain
        status, body = post(url, image, {"top_k": "2", "explain": "true"})
        assert status == 200 and body["predictions"] == plain["predictions"]
        explanation = body["explanation"]
        assert explanation["class"] == plain["predictions"][0]["label"] and "2 fold models" in explanation["method"]
        drawn = Image.open(io.BytesIO(base64.b64decode(explanation["png_base64"])))
        assert drawn.format == "PNG" and drawn.size == (32, 32)
        for bad in ("maybe", "2"):
            status, body = post(url, image, {"explain": bad})
            assert status == 422 and "explain must be true or false" in body["error"], body
        status, body = post(url, image, {"explain": "false"})
        assert status == 200 and "explanation" not in body


def test_the_upload_page_shows_the_heat_map_beside_the_bars(ensemble):
    folder, data = ensemble
    browser = headless_chromium()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        with serving_app(ExportedModel(folder)) as url:
            browser.get(f"{url}/")
            browser.find_element(By.ID, "file").send_keys(str(data / "c" / "003.jpg"))
            browser.find_element(By.ID, "submit").click()
            loaded = "const i = document.getElementById('heatmap'); return i !== null && i.complete && i.naturalWidth"
            assert WebDriverWait(browser, 30).until(lambda b: b.execute_script(loaded)) == 32
            assert len(browser.find_elements(By.CSS_SELECTOR, ".prediction")) == 3
            caption = browser.find_element(By.ID, "heatmap-caption").text
            assert "Grad-CAM" in caption and "2 fold models" in caption
            errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, errors
    finally:
        browser.quit()
