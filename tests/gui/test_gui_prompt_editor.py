"""The sample-prompt editor against one real server for the module (a stand-in process holds the queue's only slot, so
runs queued here stay queued and no trainer starts).

Covers: the check API (each line parsed by the trainers' parser, its settings with the form's defaults filled in, each
kind of bad line named by its number), the form's validation refusing a bad line, a prompt file taken over into the
editor (confined to the configured folders, the file unchanged); in Debian's chromium a bad line typed, its message
shown and the queue refused, the line fixed and the run queued with the editor's text as its prompts.
"""

from __future__ import annotations

import signal
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save_file
from gui_browser import ARTIFACTS, NEEDS_CHROMIUM, expect, field, open_form
from gui_server import TINY_PROMPTS, GuiServer, make_gui_folders, quick_run_values, write_run

from library.config import loads_config
from library.gui.runs import RunStore

pytestmark = pytest.mark.slow   # a server (and in the browser test chromium) and a stand-in trainer process

GOOD = "a frnc circle --n blurry --w 128 --h 96 --s 12 --l 4.5 --d 42 --ss euler_a --g 2"
BAD_LINES = {   # line number -> (text, the start of the parser's message)
    3: ("a dog --x 3", "unknown option --x; expected one of --n, --w, --h, --s, --l, --d, --ss, --g"),
    4: ("a dog --s many", "--s must be a whole number, got 'many'"),
    5: ("a dog --w 100", "--w must be a multiple of 8, got 100"),
    6: ("a dog --l 80", "--l must be between 0 and 50, got '80'"),
    7: ("a dog --d 1 --d 2", "option --d is given twice"),
    8: ("a dog --ss nope", "--ss unknown sampler 'nope'; expected one of ddim, pndm"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_model_factory):
    return make_gui_folders(tmp_path_factory.mktemp("gui-prompts"), tiny_model_factory("sd1").folder)


@pytest.fixture(scope="module")
def server(folders):
    trainer = subprocess.Popen(["sleep", "600"], start_new_session=True)
    write_run(RunStore(folders.runs), "busy", "running", quick_run_values(folders, steps=8, sample_every=4), [],
              pid=trainer.pid)
    running = GuiServer(folders).start()
    yield running
    running.stop()
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()


def editor_values(folders, text: str) -> dict:
    values = quick_run_values(folders, steps=4, sample_every=2)
    del values["sample"]["prompts"]
    values["sample"]["prompt_text"] = text
    return values


def test_each_line_is_checked_with_the_forms_defaults_and_bad_lines_are_named(server, folders):
    client = server.client()
    text = "\n".join(["# comment", "a red square", *(line for line, _ in BAD_LINES.values()), GOOD])
    lines = client.post("/api/prompts/check", json={"values": editor_values(folders, text)}).json()["lines"]

    assert [line["line"] for line in lines] == [2, 3, 4, 5, 6, 7, 8, 9]
    # The form's defaults fill what a line leaves out: sample.width/height/steps, training.seed as the seed.
    assert lines[0] == {"line": 2, "text": "a red square", "problem": None, "settings": {
        "prompt": "a red square", "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "cfg_scale": 7.0,
        "seed": 1, "sampler": "ddim", "guidance_scale": 3.5}}
    assert lines[-1]["settings"] == {"prompt": "a frnc circle", "negative_prompt": "blurry", "width": 128,
                                     "height": 96, "steps": 12, "cfg_scale": 4.5, "seed": 42, "sampler": "euler_a",
                                     "guidance_scale": 2.0}
    for line in lines[1:-1]:
        typed, message = BAD_LINES[line["line"]]
        assert line["text"] == typed and line["settings"] is None
        assert line["problem"].startswith(message), line

    # Queuing refuses the same lines, each message naming the option and the line.
    refused = client.post("/api/validate", json={"values": editor_values(folders, text)}).json()
    assert not refused["ok"]
    assert [item["path"] for item in refused["messages"]] == ["sample.prompt_text"] * len(BAD_LINES)
    assert refused["messages"][0]["message"] == f"form: sample.prompt_text: line 3: {BAD_LINES[3][1]}"
    accepted = client.post("/api/validate", json={"values": editor_values(folders, f"a red square\n{GOOD}")}).json()
    assert accepted["ok"]
    assert loads_config(accepted["toml"], "resolved").sample.prompt_text == f"a red square\n{GOOD}"


def test_a_prompt_file_is_read_for_the_editor_only_inside_the_configured_folders(server, folders, tmp_path):
    client = server.client()
    shipped = client.get("/api/prompts/file", params={"path": str(folders.configs / TINY_PROMPTS)})
    assert shipped.json() == {"text": (folders.configs / TINY_PROMPTS).read_text(encoding="utf-8")}
    outside = tmp_path / "prompts.txt"
    outside.write_text("a secret\n", encoding="utf-8")
    structured = folders.configs / "prompts.toml"
    structured.write_text("[[prompt]]\nprompt = 'a dog'\n", encoding="utf-8")
    for path, problem in [(outside, "inside the configured folders"), (folders.configs / "none.txt", "missing"),
                          (structured, "one-prompt-a-line form")]:
        refused = client.get("/api/prompts/file", params={"path": str(path)})
        assert refused.status_code == 403 and problem in refused.json()["detail"], path


@NEEDS_CHROMIUM
def test_a_bad_line_is_shown_refused_then_fixed_and_the_run_queues(page, server, folders):
    open_form(page, server.url, folders)
    page.click("#prompt-take-file")   # the quickstart's prompt file (the tiny one here) taken into the editor
    editor = field(page, "sample.prompt_text")
    expect(editor).to_have_value((folders.configs / TINY_PROMPTS).read_text(encoding="utf-8"))
    expect(field(page, "sample.prompts")).to_have_value("")
    expect(page.locator("#prompt-lines tbody tr")).to_have_count(1)

    editor.press("Control+End")
    editor.type("<b>a blue</b> square --w 100 --s 3")
    bad = page.locator("#prompt-lines tr.prompt-bad")
    expect(bad.locator("td")).to_have_text("line 2: --w must be a multiple of 8, got 100")
    expect(page.locator("#prompt-lines .prompt-summary")).to_have_text("1 of 2 prompt lines have problems")
    page.click("#launch")
    expect(page.locator("#form-summary")).to_contain_text("not queued: 1 problem")
    expect(page.locator("#form-summary")).to_contain_text("sample.prompt_text: line 2: --w must be a multiple of 8")
    page.click("#form-summary a")   # the summary's link brings the editor into view
    expect(editor).to_be_focused()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "prompt-editor-bad-line.png"))

    editor.fill(editor.input_value().replace("--w 100", "--w 96"))
    expect(bad).to_have_count(0)
    row = page.locator("#prompt-lines tbody tr").nth(1)
    # Escaped: the prompt's markup is shown as typed, never rendered.
    expect(row.locator("td")).to_have_text(["<b>a blue</b> square", "", "96×64", "3", "7", "42", "ddim"])
    page.click("#launch")
    page.wait_for_url("**/#run/*")
    run_id = page.url.rsplit("/", 1)[-1]
    config = loads_config(server.client().get(f"/api/runs/{run_id}").json()["toml"], "queued")
    assert config.sample.prompts is None
    assert config.sample.prompt_text.splitlines()[-1] == "<b>a blue</b> square --w 96 --s 3"
    assert server.client().post(f"/api/runs/{run_id}/stop").json()["status"] == "cancelled"


def test_sizes_are_checked_against_the_base_models_family(server, folders):
    """FLUX.1 sides are multiples of 16, Stable Diffusion's of 8: the family named in the form, or detected from the
    model's header (a file whose keys are FLUX.1's, no tensor read), or SD's for the tiny SD1 model."""
    flux_file = folders.models / "flux-like.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": np.zeros(1, np.float32)}, str(flux_file))
    client = server.client()
    text = "a dog --w 72 --h 64\na cat --w 88 --h 96"

    def values(model: dict) -> dict:
        return {**editor_values(folders, text), "model": {
            "pretrained_model_name_or_path": str(folders.models / "tiny-sd1"), **model}}

    def problems(model: dict) -> list:
        return [line["problem"] for line in client.post("/api/prompts/check", json={"values": values(model)}).json()[
            "lines"]]

    flux_problems = ["--w must be a multiple of 16, got 72", "--w must be a multiple of 16, got 88"]
    assert problems({"family": "flux1-dev"}) == flux_problems
    assert problems({"pretrained_model_name_or_path": str(flux_file)}) == flux_problems
    assert problems({}) == [None, None]   # the tiny SD1 model, detected
    assert problems({"family": "sd1", "pretrained_model_name_or_path": str(flux_file)}) == [None, None]
    refused = client.post("/api/validate", json={"values": values({"family": "flux1-dev"})}).json()
    assert [item["message"] for item in refused["messages"]] == [
        f"form: sample.prompt_text: line {number}: {problem}" for number, problem in enumerate(flux_problems, 1)]
