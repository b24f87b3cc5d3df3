"""Driving the GUI in Debian's chromium: the browser, and filling the form as a user does."""

from __future__ import annotations

from pathlib import Path

import pytest
from gui_server import QUICKSTART_DIM, REPO, TINY_PROMPTS

playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")
expect, sync_playwright = playwright_api.expect, playwright_api.sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "gui"
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
NEEDS_CHROMIUM = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="needs Debian's chromium: apt-get install -y chromium")


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)


def new_context(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    return context


def field(page, path: str):
    """The input of a form option, its collapsed "Advanced" section opened first as a user would."""
    locator = page.locator(f"#f-{path.replace('.', '-')}")
    locator.evaluate("input => { const section = input.closest('details'); if (section) section.open = true; }")
    return locator


def fill(page, path: str, value: str) -> None:
    field(page, path).fill(value)


def open_form(page, url: str, folders) -> None:
    """The train page with the quickstart preset loaded and pointed at the test's tiny model and dataset."""
    page.goto(url)
    page.wait_for_selector("#config-form[data-ready=true]")
    page.select_option("#preset", "quickstart")
    page.click("#load-preset")
    expect(page.locator("#f-network-dim")).to_have_value(str(QUICKSTART_DIM))
    fill(page, "model.pretrained_model_name_or_path", str(folders.models / "tiny-sd1"))
    fill(page, "dataset.train_data_dir", str(folders.datasets / "concept"))
    fill(page, "sample.prompts", str(folders.configs / TINY_PROMPTS))


def serious_violations(page) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now (run in the page), each with up to three
    of the elements it found."""
    axe = pytest.importorskip("axe_playwright_python.sync_playwright", reason="needs axe-playwright-python").Axe()
    return [f"{v['id']} ({v['impact']}): {[node['target'] for node in v['nodes'][:3]]}"
            for v in axe.run(page).response["violations"] if v["impact"] in ("serious", "critical")]
