"""A new user's first run, end to end in Debian's chromium on the real server and trainer: open the page, load the
quickstart preset (the toy-world base, datasets/quickstart as quickstart.sh writes it), edit one caption in the
Datasets view, shorten the run in the form, queue it, watch previews arrive in the gallery, open one full size, view
the compare grid and download the LoRA. A screenshot of each stage goes to $FURNACE_SCREENSHOTS/journey if that is
set, else to the test's tmp folder."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from gui_browser import NEEDS_CHROMIUM, expect, field, fill
from gui_server import QUICKSTART_DIM, REPO, GuiFolders, GuiServer
from safetensors import safe_open

from library.data.captions import read_caption_for
from library.toyworld.base_model import base_model_file
from library.toyworld.datasets import write_concept_dataset
from library.toyworld.world import QUICKSTART_CONCEPT

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]   # a server, a trainer and a browser

STEPS, SAMPLE_EVERY, SAVE_EVERY = 6, 3, 3
EDITED = "a frnc circle on a white background, centred"
QUICK_PROMPTS = "quick_prompts.txt"   # the quickstart's prompts, fewer and with fewer denoising steps


@pytest.fixture
def folders(tmp_path) -> GuiFolders:
    """A checkout as quickstart.sh leaves it, under tmp_path: models/ with the toy-world base, datasets/quickstart,
    configs/ (the shipped presets and prompts); the server's working folder is tmp_path, so the preset's relative
    paths resolve there."""
    folders = GuiFolders(tmp_path / "runs", tmp_path / "models", tmp_path / "datasets", tmp_path / "configs")
    folders.runs.mkdir()
    folders.models.mkdir()
    shutil.copy(base_model_file(), folders.models / base_model_file().name)
    write_concept_dataset(folders.datasets / "quickstart", QUICKSTART_CONCEPT, count=4)
    shutil.copytree(REPO / "configs", folders.configs)
    (folders.configs / QUICK_PROMPTS).write_text(
        "a frnc circle on a white background --w 64 --h 64 --s 4 --l 5 --d 1\n"
        "a red square on a white background --w 64 --h 64 --s 4 --l 5 --d 3\n", encoding="utf-8")
    return folders


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ["FURNACE_SCREENSHOTS"]) / "journey" if os.environ.get("FURNACE_SCREENSHOTS") \
        else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_first_run_from_the_quickstart_preset_to_a_downloaded_lora(page, folders, shots, tmp_path):
    started = time.monotonic()
    server = GuiServer(folders, token="journey", options=("--workdir", str(tmp_path))).start()
    try:
        # 1. The page, and the quickstart preset.
        page.goto(f"{server.url}/?token=journey")
        page.wait_for_selector("#config-form[data-ready=true]")
        page.select_option("#preset", "quickstart")
        page.click("#load-preset")
        expect(field(page, "model.pretrained_model_name_or_path")).to_have_value("models/toyworld-sd1.safetensors")
        expect(field(page, "dataset.train_data_dir")).to_have_value("datasets/quickstart")
        expect(page.locator("#doctor")).to_contain_text("ready to train", timeout=30_000)
        page.screenshot(path=str(shots / "1-quickstart-preset.png"), full_page=True)

        # 2. The Datasets view: one caption edited in the page lands on disk.
        page.click("nav a[data-view=datasets]")
        page.locator("#ds-select").select_option(label="datasets/quickstart")
        page.fill("#ds-resolution", "64")
        page.click("#ds-open")
        expect(page.locator("#ds-status")).to_have_text("4 images in 1 folder(s).")
        card = page.locator(".ds-card", has=page.locator("figcaption", has_text="frnc_000.png"))
        card.locator("textarea").fill(EDITED)
        card.get_by_role("button", name="Save the caption of frnc_000.png").click()
        expect(card.locator(".ds-saved")).to_have_text("saved")
        assert read_caption_for(folders.datasets / "quickstart/10_frnc/frnc_000.png") == EDITED
        page.screenshot(path=str(shots / "2-caption-edited.png"), full_page=True)

        # 3. Back to the form: a short run with previews and saves along the way, then queued.
        page.click("nav a[data-view=train]")
        expect(field(page, "dataset.train_data_dir")).to_have_value("datasets/quickstart")   # the form kept it
        fill(page, "training.max_train_steps", str(STEPS))
        fill(page, "sample.every_n_steps", str(SAMPLE_EVERY))
        fill(page, "output.save_every_n_steps", str(SAVE_EVERY))
        fill(page, "sample.prompts", f"configs/{QUICK_PROMPTS}")
        fill(page, "sample.compare_strengths", "[0, 1]")
        expect(page.locator("#preview")).to_contain_text(f"max_train_steps = {STEPS}")
        expect(page.locator("#preview")).to_contain_text(f"prompts = \"configs/{QUICK_PROMPTS}\"")
        page.screenshot(path=str(shots / "3-form-shortened.png"), full_page=True)
        page.fill("#run-name", "first")
        page.click("#launch")
        page.wait_for_url(re.compile(r"#run/.*-first$"))

        # 4. Previews appear in the gallery while the run trains; one opens full size.
        expect(page.locator(f"#gallery .gallery-step[data-step='{SAMPLE_EVERY}'] img").first).to_be_visible(
            timeout=300_000)
        page.screenshot(path=str(shots / "4-first-previews.png"), full_page=True)
        expect(page.locator("#run-status")).to_have_text("done", timeout=300_000)
        expect(page.locator("#gallery .gallery-step h4")).to_have_text([f"Step {SAMPLE_EVERY}", f"Step {STEPS}"])
        page.locator("#gallery .gallery-step").last.locator("button.thumb").first.click()
        dialog = page.locator("#image-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#dialog-caption")).to_contain_text("frnc circle")
        page.wait_for_function("document.getElementById('dialog-image').naturalWidth >= 64")
        page.screenshot(path=str(shots / "5-preview-full-size.png"))
        page.click("#dialog-close")
        expect(dialog).to_be_hidden()

        # 5. The compare grid (base vs each saved file) is shown in the page and opens full size.
        expect(page.locator("#compare-image")).to_be_visible()
        page.wait_for_function("document.getElementById('compare-image').naturalWidth > 0")
        page.click("#compare-open")
        expect(dialog).to_be_visible()
        page.wait_for_function("document.getElementById('dialog-image').naturalHeight > 64")
        page.screenshot(path=str(shots / "6-compare-grid.png"))
        page.click("#dialog-close")

        # 6. "Download the LoRA" hands over a real kohya LoRA file.
        download_link = page.locator("#run-download")
        expect(download_link).to_contain_text("Download the LoRA: quickstart.safetensors")
        page.screenshot(path=str(shots / "7-run-done.png"), full_page=True)
        with page.expect_download() as downloaded:
            download_link.click()
        saved = tmp_path / downloaded.value.suggested_filename
        downloaded.value.save_as(saved)
        with safe_open(str(saved), "pt") as lora:
            keys, metadata = list(lora.keys()), lora.metadata()
        assert metadata["ss_network_dim"] == str(QUICKSTART_DIM) and metadata["ss_steps"] == str(STEPS)
        assert json.loads(metadata["ss_tag_frequency"])["10_frnc"]["centred"] == 1   # the caption edited in the page
        assert keys and all(key.startswith("lora_") for key in keys), keys[:5]
        assert any(key.startswith("lora_unet_") for key in keys) and any(key.startswith("lora_te_") for key in keys)
    finally:
        server.stop()
        server.stop_trainers()
    print(f"journey took {time.monotonic() - started:.1f} s")
