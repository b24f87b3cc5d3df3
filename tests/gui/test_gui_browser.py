"""End to end in Debian's chromium: fill the form from the quickstart preset, train, watch progress and a sample
arrive, queue a second run and stop it, open the run's TensorBoard through the server, run a preprocess job.
Screenshots go to test-artifacts/gui/."""

from __future__ import annotations

import re
import time

import pytest
from gui_browser import (
    ARTIFACTS,
    NEEDS_CHROMIUM,
    expect,
    field,
    fill,
    launch_browser,
    new_context,
    open_form,
    sync_playwright,
)
from gui_server import GuiServer, free_port

STEPS = 60

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]


@pytest.fixture
def browser_context():
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        yield new_context(browser)
        browser.close()


def shown_step(page) -> int | None:
    found = re.match(r"^(\d+) / ", page.locator("#run-step").inner_text())
    return int(found[1]) if found else None


def watch_steps(page, until, timeout: float = 900) -> list[int]:
    """The distinct step numbers the run page shows, polled until `until()` holds."""
    shown: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        assert page.locator("#run-status").inner_text() != "failed", page.locator("#run-message").inner_text()
        step = shown_step(page)
        if step is not None and [step] != shown[-1:]:
            shown.append(step)
        if until(shown):
            return shown
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s; steps shown: {shown}"
        time.sleep(0.2)


def test_train_from_the_quickstart_preset_and_stop_a_queued_run(browser_context, gui_folders):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = GuiServer(gui_folders, token="browser-token", tensorboard_port=free_port()).start()
    home = f"{server.url}/?token=browser-token"
    page = browser_context.new_page()
    try:
        open_form(page, home, gui_folders)
        fill(page, "network.dim", "0")
        expect(page.locator('.field[data-path="network.dim"] .error')).to_contain_text("must be >= 1")
        fill(page, "network.dim", "4")
        fill(page, "training.max_train_steps", str(STEPS))
        fill(page, "sample.every_n_steps", str(STEPS // 2))
        expect(page.locator("#preview")).to_contain_text(f"max_train_steps = {STEPS}")
        expect(page.locator('.field[data-path="network.dim"] .error')).to_have_text("")
        expect(page.locator("#doctor")).to_contain_text("ready to train")   # checked as the dataset was picked
        expect(page.locator("#doctor")).to_contain_text("2_frnc")
        page.screenshot(path=str(ARTIFACTS / "1-form.png"), full_page=True)

        page.fill("#run-name", "first")
        page.click("#launch")
        page.wait_for_url(re.compile(r"#run/.*-first$"))
        watch_steps(page, lambda shown: shown and shown[-1] < STEPS)

        # While the first run trains, a second one waits in the queue; stopping it takes it out.
        other = browser_context.new_page()
        open_form(other, home, gui_folders)
        other.fill("#run-name", "second")
        other.click("#launch")
        other.wait_for_url(re.compile(r"#run/.*-second$"))
        expect(other.locator("#run-status")).to_have_text("queued")
        other.click("#run-stop")
        expect(other.locator("#run-status")).to_have_text("cancelled")
        other.screenshot(path=str(ARTIFACTS / "2-second-cancelled.png"), full_page=True)
        other.close()

        shown = watch_steps(page, lambda shown: page.locator("#run-status").inner_text() == "done"
                            and shown and shown[-1] == STEPS)
        assert len(shown) >= 2 and shown == sorted(shown), shown
        expect(page.locator("#gallery img").first).to_be_visible()
        page.wait_for_function("document.querySelector('#gallery img').naturalWidth > 0")
        expect(page.locator("#run-files")).to_contain_text("quickstart.safetensors")
        expect(page.locator("#loss-chart canvas")).to_have_count(1)   # the uPlot chart, drawn from the step events
        assert page.evaluate("chart.plot.data[0].length") == STEPS
        expect(page.locator("#gallery .gallery-step h4")).to_have_text([f"Step {STEPS // 2}", f"Step {STEPS}"])
        expect(page.locator("#gallery .sample-seed").first).to_have_text("seed 1")   # from the PNG's parameters
        expect(page.locator("#compare-image")).to_be_visible()   # the preset's compare_at_end grid
        expect(page.locator("#run-class-images")).to_be_hidden()   # a LoRA run generates no class images
        page.screenshot(path=str(ARTIFACTS / "3-first-done.png"), full_page=True)

        run_id = page.locator("#run-title").inner_text()
        board = page.locator("#run-tensorboard")
        expect(board).to_be_visible()
        assert board.get_attribute("href") == f"/tensorboard/?runFilter={run_id}&token=browser-token#timeseries"
        tensorboard = browser_context.new_page()
        tensorboard.goto(f"{server.url}{board.get_attribute('href')}")
        expect(tensorboard).to_have_title("TensorBoard")
        expect(tensorboard.get_by_text(f"{run_id}/logs").first).to_be_visible(timeout=120_000)
        tensorboard.screenshot(path=str(ARTIFACTS / "4-tensorboard.png"))
        tensorboard.close()

        page.click("#run-edit")
        expect(page.locator("#f-training-max_train_steps")).to_have_value(str(STEPS))
        expect(page.locator("#f-output-output_dir")).to_have_value("")
        expect(page.locator("#preview")).to_contain_text(str(gui_folders.datasets / "concept"))
        expect(page.locator("#trainer")).to_have_value("lora")
        page.select_option("#preset", "dreambooth_quickstart")
        page.click("#load-preset")
        expect(page.locator("#trainer")).to_have_value("dreambooth")
        expect(page.locator("#f-dreambooth-train_method")).to_have_value("full")

        page.goto(home + "#preprocess")
        expect(page.locator("#pp-command")).to_have_value("doctor")
        page.select_option("#pp-command", "crop")
        page.fill("#ppo-src", str(gui_folders.datasets / "concept"))
        page.fill("#ppo-out", str(gui_folders.datasets / "cropped"))
        page.fill("#ppo-size", "64")
        page.click("#pp-run")
        expect(page.locator("#pp-status")).to_have_text("done", timeout=120_000)  # a subprocess job: seconds on a busy machine
        expect(page.locator("#pp-progress-text")).to_have_text("crop 6 / 6")
        assert page.locator("#pp-progress").evaluate("bar => [bar.value, bar.max]") == [6, 6]
        expect(page.locator("#pp-output")).to_contain_text("images written: 6")
        expect(page.locator("#pp-output")).to_contain_text("exit code 0")
        page.screenshot(path=str(ARTIFACTS / "5-preprocess.png"), full_page=True)

        page.goto(home + "#runs")
        expect(page.locator("#runs-table tbody tr")).to_have_count(2)
        expect(page.locator("#runs-table tbody")).to_contain_text("cancelled")
    finally:
        server.stop()


def test_ema_options_come_from_the_schema_and_use_ema_has_three_states(browser_context, gui_folders):
    """The form shows the EMA options without being told about them; sample.use_ema, whose unset state means
    "what the files hold", offers unset, true and false, and false reaches the TOML as a boolean."""
    server = GuiServer(gui_folders, tensorboard_port=free_port()).start()
    page = browser_context.new_page()
    try:
        open_form(page, server.url, gui_folders)
        fill(page, "network.ema_decay", "0.999")
        field(page, "network.ema_save").select_option("both")
        expect(page.locator("#preview")).to_contain_text('ema_save = "both"')
        use_ema = page.locator("#f-sample-use_ema")
        assert use_ema.evaluate("select => [...select.options].map(option => option.value)") == ["", "true", "false"]
        field(page, "sample.use_ema").select_option("false")
        expect(page.locator("#preview")).to_contain_text("use_ema = false")
        field(page, "sample.use_ema").select_option("")
        expect(page.locator("#preview")).not_to_contain_text("use_ema")
        fill(page, "network.ema_decay", "1")
        expect(page.locator('.field[data-path="network.ema_decay"] .error')).to_contain_text("must be < 1")
    finally:
        page.close()
        server.stop()
