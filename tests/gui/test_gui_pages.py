"""The form and the run pages in Debian's chromium, against one server and browser for the module, without training:
runs in each state are written as the server stores them, and a run that holds the queue's only slot (a live
process group standing in for a trainer) keeps every run queued here from starting.

Covers: typed values from the schema (edit and re-run), the "not queued" summary, the confirmation for a dataset
with blocking problems, Resume only for a stopped run (the API refuses the others), a finished run's page drawn once,
the ETA of a stopped run, the preprocess job display (a finished bar is full, a new job starts blank, a refused folder
says how to allow it), `tags --replace` as OLD and NEW inputs, crop keeping an `N_name` folder, and the run page's
download of the trained LoRA with the resume state listed apart.
"""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
from gui_browser import ARTIFACTS, NEEDS_CHROMIUM, expect, field, fill, open_form
from gui_server import GuiServer, make_gui_folders, quick_run_values, run_folders, steps, write_run

from library.config import loads_config
from library.gui.runs import CONFIG_NAME, RECORD_NAME, RunStore

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]   # a server, a browser and a stand-in trainer process


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_factory):
    folders = make_gui_folders(tmp_path_factory.mktemp("gui-pages"), tiny_model_factory("sd1").folder)
    broken = folders.datasets / "broken"
    (broken / "2_frnc").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (broken / "2_frnc" / name).write_bytes(b"not an image")
    return folders


@pytest.fixture(scope="module")
def server(folders):
    """The server over four stored runs: busy (running, its process a stand-in), done, failed and stopped."""
    store = RunStore(folders.runs)
    values = quick_run_values(folders, steps=10, sample_every=5)
    values["dataset"]["max_token_length"] = 225
    values["deepspeed"] = {"zero_stage": 3}
    trainer = subprocess.Popen(["sleep", "600"], start_new_session=True)
    write_run(store, "busy", "running", values, steps(2, 100.0), pid=trainer.pid)
    write_run(store, "done", "done", values, [*steps(10, 0.0), {"event": "done", "step": 10}])
    (store.folder("done") / "lora.safetensors").write_bytes(b"weights")
    (store.folder("done") / "lora-step00000005.safetensors").write_bytes(b"halfway")
    (store.folder("done") / "state").mkdir()
    (store.folder("done") / "state" / "optimizer.bin").write_bytes(b"moments")
    write_run(store, "failed", "failed", values, [*steps(3, 50.0), {"event": "error", "message": "out of memory"}],
              message="out of memory")
    write_run(store, "stopped", "stopped", values, [*steps(4, 60.0), {"event": "stopped", "step": 4}],
              message="stopped; state saved, resume continues from it")
    (store.folder("stopped") / "state").mkdir()
    running = GuiServer(folders).start()
    yield running
    running.stop()
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()


def cancel_queued(server) -> None:
    """Take the runs a test queued out of the queue again (the busy run keeps them from starting)."""
    client = server.client()
    for run in client.get("/api/runs").json():
        if run["status"] == "queued":
            assert client.post(f"/api/runs/{run['id']}/stop").json()["status"] == "cancelled"


def test_every_choice_is_sent_typed_and_an_edited_run_queues(page, server, folders):
    page.goto(f"{server.url}/#run/done")
    expect(page.locator("#run-status")).to_have_text("done")
    page.wait_for_selector("#config-form[data-ready=true]", state="attached")
    # Every choice of every choice field reads back as the schema's value (75, not "75"; false, not "false").
    untyped = page.evaluate("""() => fields.filter(field => field.kind === "enum").flatMap(field =>
        field.choices.filter(choice => { field.input.value = String(choice); return readValue(field) !== choice; })
                     .map(choice => `${field.section}.${field.key}=${JSON.stringify(choice)}`))""")
    assert untyped == []

    page.click("#run-edit")
    expect(page.locator("#f-dataset-max_token_length")).to_have_value("225")
    expect(page.locator("#f-deepspeed-zero_stage")).to_have_value("3")
    field(page, "dataset.max_token_length").select_option("150")
    field(page, "deepspeed.zero_stage").select_option("1")
    expect(page.locator("#preview")).to_contain_text("max_token_length = 150")
    page.fill("#run-name", "edited")
    page.click("#launch")
    page.wait_for_url(re.compile(r"#run/.*-edited$"))
    expect(page.locator("#run-status")).to_have_text("queued")
    edited = next(folder for folder in run_folders(folders.runs) if folder.name.endswith("-edited"))
    text = (edited / CONFIG_NAME).read_text(encoding="utf-8")
    config = loads_config(text, "run.toml")
    assert (config.dataset.max_token_length, config.deepspeed.zero_stage) == (150, 1)
    assert config.output.output_dir == str(edited) and str(folders.runs / "done") not in text
    cancel_queued(server)


def test_a_refused_queue_lists_its_problems_at_the_top_with_links(page, server, folders):
    before = len(run_folders(folders.runs))
    open_form(page, server.url, folders)
    fill(page, "dataset.train_data_dir", str(folders.datasets / "missing"))
    fill(page, "network.dim", "0")
    page.click("#launch")
    summary = page.locator("#form-summary")
    expect(summary).to_be_visible()
    expect(summary.locator("strong")).to_have_text("not queued: 2 problems")
    expect(summary.locator("a")).to_have_count(2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "6-not-queued-summary.png"))
    expect(page.locator('.field[data-path="dataset.train_data_dir"] .error')).to_contain_text("missing not found")

    page.click('#form-summary a[data-path="dataset.train_data_dir"]')
    field = page.locator("#f-dataset-train_data_dir")
    expect(field).to_be_focused()
    expect(field).to_be_in_viewport()
    assert len(run_folders(folders.runs)) == before

    fill(page, "network.dim", "4")   # the summary follows the fixes and goes once nothing is left
    expect(summary.locator("strong")).to_have_text("not queued: 1 problem")
    fill(page, "dataset.train_data_dir", str(folders.datasets / "concept"))
    expect(summary).to_be_hidden()


def test_a_dataset_with_blocking_problems_is_queued_only_when_confirmed(page, server, folders):
    open_form(page, server.url, folders)
    fill(page, "dataset.train_data_dir", str(folders.datasets / "broken"))
    expect(page.locator("#doctor")).to_contain_text("blocking problems found")
    before = len(run_folders(folders.runs))
    asked: list[str] = []

    def answer(accept: bool):
        def handle(dialog):
            asked.append(dialog.message)
            dialog.accept() if accept else dialog.dismiss()
        return handle

    page.once("dialog", answer(False))
    page.click("#launch")
    expect(page.locator("#form-status")).to_contain_text("not queued: the dataset check found blocking problems")
    assert "2 unreadable" in asked[0] and "Queue it anyway?" in asked[0], asked
    assert len(run_folders(folders.runs)) == before

    page.fill("#run-name", "confirmed")
    page.once("dialog", answer(True))
    page.click("#launch")
    page.wait_for_url(re.compile(r"#run/.*-confirmed$"))
    assert len(asked) == 2 and len(run_folders(folders.runs)) == before + 1
    cancel_queued(server)


def test_only_a_stopped_run_resumes_and_the_api_refuses_the_others(page, server, folders):
    for run_id, resumable in (("done", False), ("failed", False), ("stopped", True), ("busy", False)):
        page.goto(f"{server.url}/#run/{run_id}")
        expect(page.locator("#run-status")).to_have_text("stopped" if run_id == "stopped" else
                                                         "running" if run_id == "busy" else run_id)
        expect(page.locator("#run-resume")).to_be_enabled() if resumable else \
            expect(page.locator("#run-resume")).to_be_disabled()
    client = server.client()
    for run_id in ("done", "failed"):
        record = (folders.runs / run_id / RECORD_NAME).read_bytes()
        refused = client.post(f"/api/runs/{run_id}/resume")
        assert refused.status_code == 409
        assert refused.json()["detail"].startswith(f"run {run_id} is {run_id}; only a stopped run can be resumed")
        assert (folders.runs / run_id / RECORD_NAME).read_bytes() == record


def test_the_eta_shows_only_while_a_run_trains(page, server):
    page.goto(f"{server.url}/#run/busy")
    expect(page.locator("#run-eta")).to_have_text("1m 40s")
    page.goto(f"{server.url}/#run/stopped")
    expect(page.locator("#run-step")).to_have_text("4 / 10")
    expect(page.locator("#run-eta")).to_have_text("-")


def test_a_finished_runs_page_is_drawn_once_and_its_files_download(page, server):
    page.clock.install()
    page.goto(f"{server.url}/#run/done")
    expect(page.locator("#view-run")).to_have_attribute("data-following", "false")
    link = page.get_by_role("link", name="lora.safetensors", exact=True)
    expect(link).to_be_visible()
    page.evaluate("window.drawn = document.querySelector('#run-files a')")
    polled: list[str] = []
    page.on("request", lambda request: "/api/runs/" in request.url and polled.append(request.url))
    page.clock.run_for(10_000)   # ten polling periods of the page's own clock
    page.wait_for_load_state("networkidle")
    assert polled == [] and page.evaluate("window.drawn === document.querySelector('#run-files a')")
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "lora.safetensors"


def test_the_doctors_bar_fills_when_done_and_a_new_job_starts_blank(page, server, folders):
    page.goto(f"{server.url}/#preprocess")
    expect(page.locator("#pp-command")).to_have_value("doctor")
    page.fill("#ppo-dirs", str(folders.datasets / "concept"))
    page.click("#pp-run")
    expect(page.locator("#pp-status")).to_have_text("done", timeout=120_000)
    expect(page.locator("#pp-progress-text")).to_have_text("2_frnc 6 / 6")
    assert page.locator("#pp-progress").evaluate("bar => [bar.value, bar.max]") == [6, 6]

    page.fill("#ppo-dirs", "/etc")   # refused before it starts: nothing of the finished job may stay
    page.click("#pp-run")
    expect(page.locator("#pp-status")).to_have_text("failed")
    expect(page.locator("#pp-output")).to_contain_text("/etc")
    expect(page.locator("#pp-output")).to_contain_text("restart run_gui.sh with --datasets-root FOLDER")
    expect(page.locator("#pp-progress-text")).to_have_text("")
    assert page.locator("#pp-progress").evaluate("bar => [bar.value, bar.max]") == [0, 100]


def test_the_lora_download_stands_out_and_the_state_is_listed_apart(page, server):
    page.goto(f"{server.url}/#run/done")
    download = page.locator("#run-download")
    expect(download).to_have_text("Download the LoRA: lora.safetensors (7 B)")
    expect(page.locator("#run-files")).to_contain_text("lora-step00000005.safetensors")
    expect(page.locator("#run-files")).not_to_contain_text("optimizer.bin")
    expect(page.locator("#run-state")).to_be_visible()
    expect(page.locator("#run-state-files")).to_have_text("state/optimizer.bin (7 B)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "run-download.png"))
    with page.expect_download() as saved:
        download.click()
    assert saved.value.suggested_filename == "lora.safetensors"
    assert saved.value.path().read_bytes() == b"weights"
    page.goto(f"{server.url}/#run/failed")   # nothing trained: no download, no state
    expect(page.locator("#view-run")).to_have_attribute("data-following", "false")
    expect(download).to_be_hidden()
    expect(page.locator("#run-state")).to_be_hidden()


def finish_preprocess(page) -> None:
    page.click("#pp-run")
    expect(page.locator("#pp-status")).to_have_text("done", timeout=120_000)


def test_tags_replace_takes_old_and_new_tags_in_their_own_inputs(page, server, folders):
    page.goto(f"{server.url}/#preprocess")
    page.select_option("#pp-command", "tags")
    page.fill("#ppo-src", str(folders.datasets / "concept"))
    page.fill("#ppo-out", str(folders.datasets / "renamed"))
    page.get_by_label("--replace OLD").fill("red circle")
    page.click("text=add another --replace")
    page.get_by_label("--replace OLD").nth(1).fill("frnc")
    page.click("#pp-run")   # a pair with one half missing is refused in the page
    expect(page.locator("#pp-output")).to_have_text("--replace: fill in NEW too")
    page.get_by_label("--replace NEW").nth(0).fill("round thing")
    page.get_by_label("--replace NEW").nth(1).fill("sks")
    finish_preprocess(page)
    captions = sorted((folders.datasets / "renamed").rglob("*.txt"))
    assert len(captions) == 6
    assert all(path.read_text(encoding="utf-8").startswith("sks, round thing, ") for path in captions)


def test_crop_from_the_page_can_keep_the_repeats_folder(page, server, folders):
    page.goto(f"{server.url}/#preprocess")
    page.select_option("#pp-command", "crop")
    page.fill("#ppo-src", str(folders.datasets / "concept" / "2_frnc"))
    page.fill("#ppo-out", str(folders.datasets / "cropped"))
    page.fill("#ppo-size", "64")
    page.check("#ppo-keep_folder_name")
    finish_preprocess(page)
    assert sorted(path.parent.name for path in (folders.datasets / "cropped").rglob("*.png")) == ["2_frnc"] * 6
