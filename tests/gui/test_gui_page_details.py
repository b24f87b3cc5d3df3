"""Page details in Debian's chromium, against one server for the module (a stand-in process holds a run "training" at
step 2 of 10): the page's one top heading (axe's page-has-heading-one), the tab title read from the queue endpoint
rather than every run's files, the dataset browser saying how long undo lasts, the doctor's text naming files inside
the dataset, the prompt editor checking sizes against the chosen model family, and a preprocess job's result scrolled
into view with thumbnails of what it wrote, and shown again after a reload.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from urllib.parse import urlparse

import pytest
from gui_browser import NEEDS_CHROMIUM, expect, field, fill, open_form
from gui_server import GuiServer, make_gui_folders, quick_run_values, steps, write_run

from library.gui.runs import RunStore

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]   # a server, a browser and a stand-in trainer process


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_factory):
    folders = make_gui_folders(tmp_path_factory.mktemp("gui-details"), tiny_model_factory("sd1").folder)
    plain = folders.datasets / "plain"   # no `N_name` folder, and one file that is no image
    plain.mkdir()
    for image in sorted((folders.datasets / "concept").rglob("*.png"))[:3]:
        shutil.copy(image, plain / image.name)
    (plain / "bad.png").write_bytes(b"not an image")
    return folders


@pytest.fixture(scope="module")
def server(folders):
    trainer = subprocess.Popen(["sleep", "600"], start_new_session=True)
    write_run(RunStore(folders.runs), "busy", "running", quick_run_values(folders, steps=10, sample_every=5),
              steps(2, 100.0), pid=trainer.pid)
    running = GuiServer(folders).start()
    yield running
    running.stop()
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()


def test_each_view_has_the_pages_one_top_heading(page, server):
    axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="needs axe-playwright-python").Axe()
    page.goto(f"{server.url}/#train")
    expect(page.locator("#view-train")).to_be_visible()
    assert "page-has-heading-one" not in [violation["id"] for violation in axe.run(page).response["violations"]]
    for view in ("runs", "datasets", "preprocess"):   # the heading is the page's, above every view
        page.goto(f"{server.url}/#{view}")
        expect(page.locator(f"#view-{view}")).to_be_visible()
        expect(page.locator("h1")).to_be_visible()
        expect(page.locator("h1")).to_have_text("Furnace")


def test_the_tab_title_comes_from_the_queue_not_from_every_runs_files(page, server):
    asked = []
    page.on("request", lambda request: asked.append(urlparse(request.url).path))
    page.goto(f"{server.url}/#train")
    expect(page).to_have_title("20% · busy — Furnace")
    assert "/api/queue" in asked and "/api/runs" not in asked
    page.goto(f"{server.url}/#runs")   # the queue view's own polls keep the title
    expect(page.locator("#queue-table tr[data-run=busy]")).to_be_visible()
    expect(page).to_have_title("20% · busy — Furnace")


def test_the_dataset_browser_says_undo_lasts_until_the_server_restarts(page, server):
    page.goto(f"{server.url}/#datasets")
    note = page.locator("#ds-undo-note")
    expect(note).to_be_visible()
    expect(note).to_contain_text("the server forgets them when it restarts")
    expect(page.locator("#ds-undo")).to_have_attribute("aria-describedby", "ds-undo-note")


def test_the_doctors_text_names_files_inside_the_dataset(page, server, folders):
    open_form(page, server.url, folders)
    fill(page, "dataset.train_data_dir", str(folders.datasets / "plain"))
    page.click("#check-dataset")
    doctor = page.locator("#doctor")
    expect(doctor).to_contain_text("WARNING: plain: no 'N_' repeat prefix")
    expect(doctor).to_contain_text("bad.png")
    assert str(folders.datasets) not in doctor.inner_text()


def test_the_prompt_editor_checks_sizes_for_the_chosen_family(page, server, folders):
    open_form(page, server.url, folders)
    fill(page, "sample.prompts", "")
    fill(page, "sample.prompt_text", "a dog --w 72 --h 64")
    field(page, "model.family").select_option("flux1-dev")
    bad = page.locator("#prompt-lines tr.prompt-bad td")
    expect(bad).to_have_text("line 1: --w must be a multiple of 16, got 72")
    field(page, "model.family").select_option("sd1")
    expect(bad).to_have_count(0)
    expect(page.locator("#prompt-lines tbody tr td").nth(2)).to_have_text("72×64")


def test_a_finished_jobs_result_scrolls_into_view_with_thumbnails_and_stays_after_a_reload(page, server, folders):
    page.set_viewport_size({"width": 1400, "height": 600})
    page.goto(f"{server.url}/#preprocess")
    page.select_option("#pp-command", "crop")
    page.fill("#ppo-src", str(folders.datasets / "concept" / "2_frnc"))
    page.fill("#ppo-out", str(folders.datasets / "cropped"))
    page.fill("#ppo-size", "64")
    result = page.locator("#pp-result-title")
    expect(result).not_to_be_in_viewport()
    page.click("#pp-run")
    expect(page.locator("#pp-status")).to_have_text(re.compile("^done"), timeout=120_000)
    thumbs = page.locator("#pp-thumbs img")
    expect(thumbs).to_have_count(6)
    expect(result).to_be_in_viewport()
    expect(page.locator("#pp-thumbs figcaption").first).to_contain_text(".png")
    page.wait_for_function("[...document.querySelectorAll('#pp-thumbs img')].every(img => img.naturalWidth > 0)")
    page.reload()   # the page asks the server for its jobs: the last one is shown again, where it was
    expect(page.locator("#pp-status")).to_have_text(re.compile("^done"))
    expect(thumbs).to_have_count(6)
