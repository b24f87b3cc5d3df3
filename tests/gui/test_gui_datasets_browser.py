"""The dataset browser in Debian's chromium: a caption edited in the page lands on disk and Undo puts it back; a bulk
prepend of the trigger word; a caption that is markup shown as text; the doctor's findings on the thumbnails; an
axe-core scan of the view with no serious or critical violations (light at desktop width, dark at a phone's 390 px,
where nothing scrolls sideways either)."""

from __future__ import annotations

import pytest
from gui_browser import NEEDS_CHROMIUM, expect
from gui_datasets import XSS_CAPTION, caption_files, dataset_gui_folders, fresh_dataset
from gui_server import GuiServer

from library.data.captions import read_caption_for

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]   # a server and a browser
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright", reason="needs axe-playwright-python")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return dataset_gui_folders(tmp_path_factory.mktemp("gui-datasets-browser"))


@pytest.fixture(scope="module")
def server(folders):
    running = GuiServer(folders, token="s3cret").start()
    yield running
    running.stop()


def open_dataset(page, server, name: str) -> None:
    """The Datasets view with ``name`` opened and the doctor's findings shown."""
    page.goto(f"{server.url}/?token=s3cret#datasets")
    page.locator("#ds-select").select_option(label=f"datasets/{name}")
    page.fill("#ds-resolution", "80")
    page.click("#ds-open")
    expect(page.locator("#ds-status")).to_have_text("5 images in 2 folder(s).")
    expect(page.locator(".ds-group h3").first).to_have_text("10_sks dog (10 repeats, class 'sks dog', 4 images)")
    expect(page.locator(".finding-unreadable")).to_have_count(1)


def card(page, name: str):
    return page.locator(".ds-card", has=page.locator("figcaption", has_text=name))


def test_a_caption_edited_in_the_page_is_on_disk_and_undo_puts_it_back(page, server, folders):
    dataset = fresh_dataset(folders, "edit")
    original = caption_files(dataset)
    open_dataset(page, server, "edit")
    a = card(page, "a.png")
    expect(a.locator("img")).to_have_js_property("complete", True)
    assert a.locator("img").evaluate("img => img.naturalWidth") > 0   # the thumbnail came with the token
    a.locator("textarea").fill("dog, jumping\noutdoors")
    expect(a.locator(".ds-saved")).to_have_text("unsaved")
    a.get_by_role("button", name="Save the caption of a.png").click()
    expect(a.locator(".ds-saved")).to_have_text("saved")
    expect(a.locator("textarea")).to_have_value("dog, jumping, outdoors")
    assert read_caption_for(dataset / "10_sks dog/a.png") == "dog, jumping, outdoors"
    expect(page.locator("#ds-tags tbody")).to_contain_text("jumping")

    page.click("#ds-undo")
    expect(page.locator("#ds-status")).to_have_text("Undone: caption of a.png (1 file(s) restored).")
    expect(card(page, "a.png").locator("textarea")).to_have_value("dog, running")
    expect(page.locator("#ds-undo")).to_be_disabled()
    assert caption_files(dataset) == original


def test_a_bulk_prepend_puts_the_trigger_first_in_every_caption(page, server, folders):
    dataset = fresh_dataset(folders, "bulk")
    open_dataset(page, server, "bulk")
    page.select_option("#ds-action", "prepend")
    expect(page.locator("#ds-new-label")).to_be_hidden()
    page.fill("#ds-tag", "frnc")
    page.click("#ds-apply")
    expect(page.locator("#ds-status")).to_contain_text("prepend 'frnc': 5 caption(s) changed")
    expect(page.locator("#ds-tags tbody tr").first).to_have_text("frnc5")
    expect(card(page, "d.jpg").locator("textarea")).to_have_value("frnc, cat, sitting")
    expect(card(page, "c.png").locator(".finding-no_caption")).to_have_count(0)   # the doctor ran again
    images = [path for path in dataset.rglob("*") if path.suffix in (".png", ".jpg")]
    assert all(read_caption_for(image).split(", ")[0] == "frnc" for image in images)


def test_a_caption_that_is_markup_shows_as_text_with_the_doctors_findings(page, server):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    open_dataset(page, server, "pets")
    expect(card(page, "b.png").locator("textarea")).to_have_value(XSS_CAPTION)
    expect(page.locator("#ds-tags")).to_contain_text("<img src=x onerror=alert(1)>")
    assert page.locator("img[src='x']").count() == 0 and dialogs == []
    expect(card(page, "b.png").locator(".ds-findings")).to_contain_text("near-duplicate of a.png")
    expect(card(page, "a.png").locator(".finding-small")).to_have_text("smaller than 80x80")
    expect(card(page, "c.png").locator(".finding-no_caption")).to_have_text("no caption file")
    expect(card(page, "bad.png").locator(".finding-unreadable")).to_contain_text("not an image")
    expect(page.locator("#ds-problems")).to_contain_text("error: 10_sks dog: 1 unreadable image(s): 10_sks dog/bad.png")


@pytest.mark.parametrize(("scheme", "width"), [("light", 1400), ("dark", 390)])
def test_axe_finds_no_serious_or_critical_violations_and_nothing_scrolls_sideways(browser, server, tmp_path, scheme,
                                                                                 width):
    context = browser.new_context(viewport={"width": width, "height": 1000}, color_scheme=scheme)
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        open_dataset(page, server, "pets")
        card(page, "a.png").locator("textarea").fill("dog, edited")   # an unsaved card, as a user leaves one
        results = axe_playwright.Axe().run(page).response
        page.screenshot(path=str(tmp_path / f"datasets-{scheme}-{width}px.png"), full_page=True)
        found = [f"{v['id']} ({v['impact']}): {[node['target'] for node in v['nodes'][:3]]}"
                 for v in results["violations"] if v["impact"] in ("serious", "critical")]
        assert found == []
        sizes = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert sizes[0] <= sizes[1], sizes
    finally:
        context.close()
