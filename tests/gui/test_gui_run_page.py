"""The run page and the queue against one real server for the module, without training: a running run (its process a
stand-in holding the queue's only slot, so runs queued here stay queued) whose folder holds what a DreamBooth run
with prior preservation writes: class-image progress, instance and prior losses, previews at two steps, a compare
grid, and a console log with a progress bar and colour codes.

Covers: the queue's order through the API (moves, refusals, a restart), the log followed by offset, the gallery
API; in Debian's chromium the loss chart (uPlot) with TensorBoard's smoothing, the class images and loss terms, the
gallery by step with a full-size dialog that Escape closes, the compare grid, the log appended line by line, and
the queue reordered by a click and still reordered after a reload. Screenshots go to test-artifacts/gui/.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess

import pytest
from gui_browser import ARTIFACTS, NEEDS_CHROMIUM, expect, serious_violations
from gui_server import GuiServer, make_gui_folders, quick_run_values, write_run
from PIL import Image

from library.gui.events import PROGRESS_NAME
from library.gui.runs import LOG_NAME, RunStore
from library.sampling.files import save_png_atomic, sample_path
from library.sampling.prompts import SamplePrompt
from library.training.progress import SmoothedValue

pytestmark = pytest.mark.slow   # a server (and in the browser tests chromium) and a stand-in trainer process

STEPS = 12
PROMPTS = [SamplePrompt("frnc, red circle", width=64, height=64, steps=2, seed=5),
           SamplePrompt("a blue square", negative_prompt="blurry", width=64, height=64, steps=2, seed=6)]


def losses(step: int) -> tuple[float, float, float]:
    """A falling, wobbling loss and its two terms, as a DreamBooth step reports them."""
    instance = 0.4 / (1 + 0.2 * step) + 0.05 * math.sin(step)
    prior = 0.1 + 0.02 * math.cos(step)
    return (instance + prior) / 2, instance, prior


def busy_events(folder) -> list[dict]:
    events = [{"event": "class_images", "done": done, "total": 6} for done in (0, 2, 4, 6)]
    events.append({"event": "start", "step": 0, "total_steps": STEPS})
    for step in range(1, STEPS + 1):
        loss, instance, prior = losses(step)
        events.append({"event": "step", "step": step, "epoch": 1, "loss": loss, "smoothed_loss": loss,
                       "instance_loss": instance, "prior_loss": prior, "lr": {"lr/unet": 1e-4},
                       "eta_seconds": 100.0, "total_steps": STEPS})
        if step in (5, 10):
            for index, prompt in enumerate(PROMPTS):
                path = save_png_atomic(Image.new("RGB", (64, 64), (200, 40 * index, 30)),
                                       sample_path(folder, "lora", step, index, prompt.seed), prompt)
                events.append({"event": "sample", "step": step, "file": str(path), "prompt": prompt.prompt})
    grid = save_png_atomic(Image.new("RGB", (128, 64), (30, 90, 160)), folder / "compare" / "compare.png")
    events.append({"event": "compare", "file": str(grid)})
    return events


BAR = "train:  {}%|##        | {}/12 [00:02<00:08,  1.00step/s]"


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_factory):
    return make_gui_folders(tmp_path_factory.mktemp("gui-run-page"), tiny_model_factory("sd1").folder)


@pytest.fixture(scope="module")
def server(folders):
    store = RunStore(folders.runs)
    trainer = subprocess.Popen(["sleep", "600"], start_new_session=True)
    write_run(store, "busy", "running", quick_run_values(folders, steps=STEPS, sample_every=5), [], pid=trainer.pid,
              trainer="dreambooth")
    folder = store.folder("busy")   # its events name the previews written into it, so they follow the folder
    (folder / PROGRESS_NAME).write_text("".join(json.dumps(event) + "\n" for event in busy_events(folder)),
                                        encoding="utf-8")
    (folder / LOG_NAME).write_bytes(b"\x1b[1;32mINFO\x1b[0m generating 6 class images\n"
                                    + "".join("\r" + BAR.format(n * 8, n) for n in range(4)).encode())
    write_run(store, "done", "done", quick_run_values(folders, steps=STEPS, sample_every=5), [], trainer="dreambooth")
    done = store.folder("done")   # a finished run: its chart, gallery, compare grid, files and resume state
    (done / PROGRESS_NAME).write_text("".join(json.dumps(event) + "\n" for event in busy_events(done))
                                      + json.dumps({"event": "done", "step": STEPS}) + "\n", encoding="utf-8")
    (done / "lora.safetensors").write_bytes(b"weights")
    (done / "state").mkdir()
    (done / "state" / "optimizer.bin").write_bytes(b"moments")
    (done / LOG_NAME).write_text("INFO done\n", encoding="utf-8")
    running = GuiServer(folders).start()
    yield running
    running.stop()
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()


def queue_runs(server, folders, *names: str) -> list[str]:
    client = server.client()
    return [client.post("/api/runs", json={"name": name, "values": quick_run_values(folders, 4, 2)}).json()["id"]
            for name in names]


def cancel_queued(server) -> None:
    client = server.client()
    for run_id in client.get("/api/queue").json()["queued"]:
        assert client.post(f"/api/runs/{run_id}/stop").json()["status"] == "cancelled"


def test_the_queue_order_moves_through_the_api_and_survives_a_restart(server, folders):
    client = server.client()
    first, second, third = queue_runs(server, folders, "first", "second", "third")
    entries = client.get("/api/queue").json()["entries"]
    assert [(entry["id"], entry["status"], entry["position"]) for entry in entries] == [
        ("busy", "running", 0), (first, "queued", 1), (second, "queued", 2), (third, "queued", 3)]
    assert (entries[0]["step"], entries[0]["total_steps"], entries[0]["eta_seconds"]) == (STEPS, STEPS, 100.0)
    assert [entry["starts_in_seconds"] for entry in entries[1:]] == [100.0, None, None]

    assert client.post(f"/api/runs/{third}/move", json={"direction": "up"}).json()["status"] == "queued"
    client.post(f"/api/runs/{first}/move", json={"direction": "down"})
    assert client.get("/api/queue").json()["queued"] == [third, first, second]
    refused = client.post(f"/api/runs/{third}/move", json={"direction": "up"})
    assert refused.status_code == 409 and "already first" in refused.json()["detail"]
    assert client.post("/api/runs/busy/move", json={"direction": "down"}).status_code == 409
    assert client.post(f"/api/runs/{first}/move", json={"direction": "sideways"}).status_code == 422
    assert client.post("/api/runs/nope/move", json={"direction": "up"}).status_code == 404

    server.stop()
    server.start()
    client = server.client()
    assert client.get("/api/queue").json()["queued"] == [third, first, second]
    assert client.post(f"/api/runs/{first}/stop").json()["status"] == "cancelled"
    assert client.get("/api/queue").json()["queued"] == [third, second]
    cancel_queued(server)


def test_the_log_is_followed_by_offset_and_the_gallery_groups_by_step(server, folders):
    client = server.client()
    start = client.get("/api/runs/busy/log/follow").json()
    assert start["lines"] == ["INFO generating 6 class images"] and start["partial"] == BAR.format(24, 3)
    log = folders.runs / "busy" / LOG_NAME
    with open(log, "ab") as handle:
        handle.write(("\r" + BAR.format(32, 4) + "\nINFO saved\n").encode())
    more = client.get("/api/runs/busy/log/follow", params={"after": start["next"]}).json()
    assert more == {"lines": [BAR.format(32, 4), "INFO saved"], "partial": "", "next": log.stat().st_size}

    pictures = client.get("/api/runs/busy/gallery").json()
    assert [group["step"] for group in pictures["steps"]] == [5, 10]
    assert [(image["prompt"], image["Seed"]) for image in pictures["steps"][0]["images"]] == [
        ("frnc, red circle", "5"), ("a blue square", "6")]
    assert pictures["compare"] == "compare/compare.png"
    progress = client.get("/api/runs/busy").json()["progress"]
    assert progress["class_images"] == {"done": 6, "total": 6}
    assert (progress["instance_loss"], progress["prior_loss"]) == pytest.approx(losses(STEPS)[1:])


@NEEDS_CHROMIUM
def test_the_run_page_charts_the_losses_shows_the_gallery_and_follows_the_log(page, server, folders):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{server.url}/#run/busy")
    expect(page.locator("#run-status")).to_have_text("running")
    expect(page).to_have_title("100% · busy — Furnace")
    expect(page.locator("#run-class-text")).to_have_text("6 / 6")
    expect(page.locator("#run-prior-loss")).to_have_text(f"{losses(STEPS)[2]:.4f}")
    legend = page.locator("#loss-chart .u-legend .u-series .u-label")
    expect(legend).to_have_text(["step", "loss", "smoothed loss", "instance loss", "prior loss"])

    # The smoothed line is TensorBoard's debiased EMA: at the trainer's weight it is the trainer's own smoothed loss.
    page.fill("#loss-smoothing", "0.9")
    expect(page.locator("#loss-smoothing-value")).to_have_text("0.90")
    drawn = page.evaluate("chart.plot.data")
    trainer = SmoothedValue(0.9)
    assert drawn[0] == list(range(1, STEPS + 1))
    assert drawn[1] == pytest.approx([losses(step)[0] for step in drawn[0]])
    assert drawn[2] == pytest.approx([trainer.update(losses(step)[0]) for step in drawn[0]])

    groups = page.locator("#gallery .gallery-step")
    expect(groups.locator("h4")).to_have_text(["Step 5", "Step 10"])
    expect(groups.first.locator(".sample-prompt")).to_have_text(["frnc, red circle", "a blue square"])
    expect(groups.first.locator(".sample-seed")).to_have_text(["seed 5", "seed 6"])
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(img => img.naturalWidth === 64)")
    groups.nth(1).locator("button.thumb").nth(1).click()
    dialog = page.locator("#image-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#dialog-caption")).to_contain_text("a blue square · negative: blurry · seed 6")
    page.wait_for_function("document.getElementById('dialog-image').naturalWidth === 64")
    page.screenshot(path=str(ARTIFACTS / "run-page-dialog.png"))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.click("#compare-open")
    expect(page.locator("#dialog-caption")).to_contain_text("Compare grid")
    page.wait_for_function("document.getElementById('dialog-image').naturalWidth === 128")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # The log: a progress bar is one live line; new lines are appended, the lines already shown stay as they are.
    lines, live = page.locator("#run-log .log-lines"), page.locator("#run-log .log-live")
    expect(lines).to_contain_text("INFO generating 6 class images\n")
    page.evaluate("document.querySelector('#run-log .log-lines').firstChild.shownBefore = true")
    with open(folders.runs / "busy" / LOG_NAME, "ab") as handle:
        handle.write(("\r" + BAR.format(40, 5) + "\n\x1b[33mWARNING\x1b[0m a new line\n\r" + BAR.format(48, 6)).encode())
    expect(lines).to_contain_text(f"{BAR.format(40, 5)}\nWARNING a new line")
    expect(live).to_have_text(BAR.format(48, 6))
    assert page.evaluate("document.querySelector('#run-log .log-lines').firstChild.shownBefore") is True
    assert "\x1b" not in lines.inner_text() and "\r" not in lines.inner_text()
    page.screenshot(path=str(ARTIFACTS / "run-page.png"), full_page=True)


@NEEDS_CHROMIUM
def test_queued_runs_reordered_in_the_page_stay_reordered_after_a_reload(page, server, folders):
    first, second = queue_runs(server, folders, "up", "down")
    try:
        page.goto(f"{server.url}/#runs")
        rows = page.locator("#queue-table tbody tr")
        expect(rows).to_have_count(3)
        expect(rows.locator(".queue-position")).to_have_text(["▶", "1", "2"])
        expect(rows.locator(".queue-eta")).to_have_text(["1m 40s", "starts in ≈ 1m 40s", "after the runs ahead"])
        page.get_by_role("button", name=f"Move {first} down").click()
        expect(rows.nth(1)).to_have_attribute("data-run", second)
        page.reload()
        expect(rows).to_have_count(3)
        assert [rows.nth(index).get_attribute("data-run") for index in range(3)] == ["busy", second, first]
        expect(page.get_by_role("button", name=f"Move {second} up")).to_be_disabled()
        page.screenshot(path=str(ARTIFACTS / "queue.png"), full_page=True)
        page.get_by_role("button", name=f"Cancel {second}").click()
        expect(rows).to_have_count(2)
        expect(page.locator("#runs-table tbody")).to_contain_text("cancelled")
    finally:
        cancel_queued(server)


@NEEDS_CHROMIUM
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_or_critical_violations_on_a_finished_runs_page_and_the_runs_list(browser, server, scheme):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme=scheme)
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/#run/done")
        expect(page.locator("#run-status")).to_have_text("done")
        expect(page.locator("#loss-chart .u-legend .u-series")).to_have_count(5)
        expect(page.locator("#gallery .gallery-step")).to_have_count(2)
        expect(page.locator("#run-download")).to_be_visible()
        page.wait_for_function("[...document.querySelectorAll('#gallery img, #compare-image')]"
                               ".every(img => img.complete && img.naturalWidth > 0)")
        found = {"page": serious_violations(page)}
        page.locator("#gallery button.thumb").first.click()   # the full-size view, a state a user sees
        expect(page.locator("#image-dialog")).to_be_visible()
        found["dialog"] = serious_violations(page)
        page.goto(f"{server.url}/#runs")   # the list of runs and the queue, the other view of this tab
        expect(page.locator("#runs-table tbody")).to_contain_text("done")
        found["runs"] = serious_violations(page)
        assert found == {"page": [], "dialog": [], "runs": []}
    finally:
        context.close()
