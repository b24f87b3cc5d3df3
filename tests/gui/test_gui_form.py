"""The guided form, user presets, the looks and accessibility in Debian's chromium, against one server for the module.

Covers: each trainer's essential options first with the schema's titles and sd-scripts flags, the other sections
collapsed under "Advanced" and the other trainers' sections hidden (from the server's trainer table), no error before
the user types; saving, loading and deleting a user preset in the page; a 390 px phone screen with no overlapping
boxes and nothing scrolling sideways; dark mode; the tab title following the active run; an axe-core scan with no
serious or critical violations on the train and preprocess pages.
"""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from gui_browser import NEEDS_CHROMIUM, expect, fill, open_form, serious_violations
from gui_server import GuiServer, make_gui_folders, quick_run_values

from library.config import dump_toml, loads_config
from library.gui.forms import values_to_toml
from library.gui.runs import CONFIG_NAME, RunRecord, RunStore

pytestmark = [pytest.mark.slow, NEEDS_CHROMIUM]   # a server, a browser and a stand-in trainer process


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_factory):
    return make_gui_folders(tmp_path_factory.mktemp("gui-form"), tiny_model_factory("sd1").folder)


@pytest.fixture(scope="module")
def server(folders):
    """The server, with one run training (a stand-in process holds its slot) at step 2 of 8."""
    store = RunStore(folders.runs)
    trainer = subprocess.Popen(["sleep", "600"], start_new_session=True)
    folder = store.folder("busy")
    folder.mkdir()
    config = loads_config(values_to_toml(quick_run_values(folders, steps=8, sample_every=4)), "test",
                          ("--output.output_dir", str(folder)))
    (folder / CONFIG_NAME).write_text(dump_toml(config), encoding="utf-8")
    events = [{"event": "start", "step": 0, "total_steps": 8}, {"event": "step", "step": 2, "total_steps": 8}]
    (folder / "progress.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    store.save(RunRecord(id="busy", name="circle", status="running", pid=trainer.pid))
    running = GuiServer(folders).start()
    yield running
    running.stop()
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()


def new_page(browser, width: int = 1400, height: int = 1000, scheme: str = "light"):
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
    context.set_default_timeout(60_000)
    return context.new_page()


@pytest.fixture
def page(browser):
    page = new_page(browser)
    yield page
    page.context.close()


def ready(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#config-form[data-ready=true]")


def test_each_trainer_shows_its_essentials_first_and_hides_the_other_trainers_sections(page, server):
    layout, schema = server.client().get("/api/form").json(), server.client().get("/api/schema").json()
    ready(page, server.url)
    assert page.evaluate("refreshPreview()")["ok"] is False   # the empty form is invalid...
    expect(page.locator(".field.invalid")).to_have_count(0)   # ...but nothing is shown before the user types
    expect(page.locator("#form-status")).to_have_text("")

    for name, trainer in layout["trainers"].items():
        page.select_option("#trainer", name)
        rows = page.locator("#essentials .field")
        expect(rows).to_have_count(len(trainer["essentials"]))
        assert rows.evaluate_all("rows => rows.map(row => row.dataset.path)") == trainer["essentials"]
        others = {section for other in layout["trainers"].values() for section in other["sections"]}
        for section in schema["properties"]:
            details = page.locator(f"#section-{section}")
            hidden = section in others and section not in trainer["sections"]
            expect(details).to_be_hidden() if hidden else expect(details).to_be_visible()
            assert details.evaluate("details => details.open") is False
    page.select_option("#trainer", "lora")
    dim = page.locator('.field[data-path="network.dim"]')
    expect(dim.locator("label .title")).to_have_text("Rank (dim)")
    expect(dim.locator("label .flag")).to_have_text("--network_dim")
    expect(page.get_by_label("Base model")).to_be_visible()

    fill(page, "network.dim", "0")   # a typed value is checked at once; untouched fields stay quiet
    expect(dim.locator(".error")).to_contain_text("must be >= 1")
    expect(page.locator(".field.invalid")).to_have_count(1)
    fill(page, "logging.log_every_n_steps", "1")   # an advanced option: its section counts what is set
    expect(page.locator("#section-logging summary .count")).to_have_text("1 set")


def test_the_values_of_a_hidden_section_are_not_sent(page, server, folders):
    open_form(page, server.url, folders)
    page.select_option("#trainer", "dreambooth")
    fill(page, "dreambooth.instance_prompt", "a frnc circle")
    expect(page.locator("#preview")).to_contain_text('instance_prompt = "a frnc circle"')
    page.select_option("#trainer", "lora")
    expect(page.locator("#f-dreambooth-instance_prompt")).to_be_hidden()
    expect(page.locator("#preview")).not_to_contain_text("[dreambooth]")
    page.select_option("#trainer", "dreambooth")   # kept in the page, sent again once the section applies
    expect(page.locator("#preview")).to_contain_text('instance_prompt = "a frnc circle"')


def test_a_user_preset_is_saved_listed_after_the_shipped_ones_loaded_and_deleted(page, server, folders):
    open_form(page, server.url, folders)
    page.select_option("#trainer", "textual_inversion")
    fill(page, "textual_inversion.token_string", "frnc")
    fill(page, "textual_inversion.init_word", "circle")
    fill(page, "training.max_train_steps", "7")
    page.once("dialog", lambda dialog: dialog.accept("my-ti"))
    page.click("#save-preset")
    expect(page.locator("#preset")).to_have_value("my-ti")
    expect(page.locator("#delete-preset")).to_be_enabled()
    options = page.locator("#preset option").evaluate_all("options => options.map(option => option.value)")
    assert options[-1] == "my-ti" and "quickstart" in options[:-1]
    assert (folders.runs / "presets" / "my-ti.toml").is_file()

    page.select_option("#preset", "quickstart")
    expect(page.locator("#delete-preset")).to_be_disabled()
    page.click("#load-preset")
    expect(page.locator("#trainer")).to_have_value("lora")
    page.select_option("#preset", "my-ti")
    page.click("#load-preset")
    expect(page.locator("#trainer")).to_have_value("textual_inversion")
    expect(page.locator("#f-textual_inversion-token_string")).to_have_value("frnc")
    expect(page.locator("#f-training-max_train_steps")).to_have_value("7")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-preset")
    expect(page.locator('#preset option[value="my-ti"]')).to_have_count(0)
    assert not (folders.runs / "presets" / "my-ti.toml").exists()


OVERLAPS = """() => {
  const boxes = [...document.querySelectorAll(
      "#view-train .toolbar > *, #essentials .field > *, #view-train details.section > summary, aside > *, nav > *")]
    .filter(node => node.getClientRects().length)
    .map(node => [node, node.getBoundingClientRect()]);
  const found = [];
  for (const [i, [a, ra]] of boxes.entries()) for (const [b, rb] of boxes.slice(i + 1)) {
    if (a.contains(b) || b.contains(a)) continue;
    const x = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
    const y = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
    if (x > 1 && y > 1) found.push(`${a.id || a.className || a.tagName} / ${b.id || b.className || b.tagName}`);
  }
  return found;
}"""


def test_a_phone_screen_has_no_overlapping_panels_and_no_sideways_scroll(browser, server, folders, tmp_path):
    page = new_page(browser, 390, 844)
    try:
        open_form(page, server.url, folders)
        fill(page, "network.dim", "0")
        page.locator("#section-optimizer summary").click()
        expect(page.locator("#f-optimizer-lr_scheduler")).to_be_visible()
        assert page.evaluate(OVERLAPS) == []
        for view, shown in (("#train", "#view-train"), ("#runs", "#runs-table tbody tr"), ("#run/busy", "#run-step"),
                            ("#preprocess", "#ppo-dirs")):
            page.goto(f"{server.url}/{view}")
            expect(page.locator(shown).first).to_be_visible()
            width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert width[0] <= width[1], (view, width)
        page.goto(f"{server.url}/#train")
        page.screenshot(path=str(tmp_path / "form-390px.png"), full_page=True)
    finally:
        page.context.close()


def test_dark_mode_follows_the_system_setting(browser, server, tmp_path):
    colours = {}
    for scheme in ("light", "dark"):
        page = new_page(browser, scheme=scheme)
        ready(page, server.url)
        colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.screenshot(path=str(tmp_path / f"form-{scheme}.png"))
        page.context.close()
    assert colours == {"light": "rgb(255, 255, 255)", "dark": "rgb(23, 24, 26)"}


def test_the_tab_title_shows_the_active_runs_progress(page, server):
    ready(page, server.url)
    expect(page).to_have_title("25% · circle — Furnace")
    assert page.evaluate("progressTitle(undefined)") == "Furnace"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_or_critical_violations(browser, server, folders, scheme):
    page = new_page(browser, scheme=scheme)
    try:
        open_form(page, server.url, folders)
        fill(page, "network.dim", "0")   # an error shown, a section opened: the states a user sees
        page.locator("#section-dataset summary").click()
        fill(page, "sample.prompts", "")   # the prompt editor with a good and a bad line
        fill(page, "sample.prompt_text", "a red circle\na dog --w 100")
        expect(page.locator("#prompt-lines tbody tr")).to_have_count(2)
        found = {}
        for view in ("train", "preprocess"):
            page.goto(f"{server.url}/#{view}")
            expect(page.locator(f"#view-{view}")).to_be_visible()
            found[view] = serious_violations(page)
        assert found == {"train": [], "preprocess": []}
    finally:
        page.context.close()
