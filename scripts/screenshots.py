"""The README's two GUI screenshots, made again from the real thing: the form with the toy-world quickstart preset
loaded, and the run page of that quickstart once it has finished (loss chart, samples by step, compare grid).

    source .venv/bin/activate && python scripts/screenshots.py [--steps 100] [--out docs/images]

Starts the GUI on this checkout (relative paths as the presets write them) with a temporary runs root, trains the
quickstart with fewer steps through the form, drives Debian's chromium (`apt-get install -y chromium`) with
Playwright, and writes `gui-form.png` and `gui-run.png`, reduced to a 256-colour palette to stay small. Writes the
generated quickstart dataset first if `datasets/quickstart` is missing, as `quickstart.sh` does.
"""

from __future__ import annotations

import argparse
import io
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from library.atomic_files import write_bytes_atomic  # noqa: E402  (the checkout's package, run as a script)

logger = logging.getLogger("screenshots")
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 860}
DATASET = REPO / "datasets" / "quickstart"
QUICKSTART = REPO / "configs" / "quickstart.toml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(runs_root: Path, port: int, log: Path) -> subprocess.Popen:
    """The GUI on this checkout, its runs in `runs_root`, no TensorBoard child; returns once it answers."""
    command = [sys.executable, "-m", "library.gui", "--port", str(port), "--tensorboard-port", "0",
               "--workdir", str(REPO), "--runs-root", str(runs_root)]
    server = subprocess.Popen(command, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"screenshots: the GUI exited with {server.returncode}; see {log}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"screenshots: the GUI did not answer within 120 s; see {log}")


def stop_runs(port: int) -> None:
    """Stop what is still training (trainers outlive the server in their own sessions), e.g. after a timeout."""
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=30)
    running = api.get("/queue").json()["running"]
    for run_id in running:
        api.post(f"/runs/{run_id}/stop")
    deadline = time.monotonic() + 60
    while running and time.monotonic() < deadline:
        time.sleep(0.5)
        running = api.get("/queue").json()["running"]


def save_png(png: bytes, target: Path) -> None:
    """The screenshot as a 256-colour palette PNG (UI pictures lose nothing visible), written atomically."""
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(target, buffer.getvalue())
    logger.info("wrote %s (%d KB)", target.relative_to(REPO) if target.is_relative_to(REPO) else target,
                len(buffer.getvalue()) // 1024)


def set_option(page: Page, path: str, value: str) -> None:
    """Type into a form option as a user does, its collapsed section opened first."""
    field = page.locator(f"#f-{path.replace('.', '-')}")
    field.evaluate("input => { const section = input.closest('details'); if (section) section.open = true; }")
    field.fill(value)


def form_shot(page: Page, url: str, steps: int, out: Path) -> None:
    """The quickstart preset loaded with a shorter run: essentials, the TOML that will run, the dataset check."""
    page.goto(url)
    page.wait_for_selector("#config-form[data-ready=true]")
    page.select_option("#preset", "quickstart")
    page.click("#load-preset")
    preset_dim = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))["network"]["dim"]
    expect(page.locator("#f-network-dim")).to_have_value(str(preset_dim))   # the preset is in the form
    set_option(page, "training.max_train_steps", str(steps))
    set_option(page, "sample.every_n_steps", str(steps // 2))
    set_option(page, "output.save_every_n_steps", str(steps // 2))
    page.fill("#run-name", "quickstart")
    expect(page.locator("#preview")).to_contain_text(f"max_train_steps = {steps}")
    expect(page.locator("#doctor")).to_contain_text("ready to train", timeout=60_000)
    page.evaluate("window.scrollTo(0, 0); document.activeElement.blur()")
    # The dataset check names files by their full path: the picture ends above the first line that does.
    first_path = page.evaluate("""() => {
        const text = document.getElementById("doctor").firstChild, at = text?.data.search(/(^|\\s)\\//);
        if (!text || at < 0) return null;
        const range = document.createRange();
        range.setStart(text, at);
        range.setEnd(text, at + 1);
        return range.getBoundingClientRect().top; }""")
    height = VIEWPORT["height"] if first_path is None else min(VIEWPORT["height"], int(first_path) - 2)
    save_png(page.screenshot(clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}),
             out / "gui-form.png")


def run_shot(page: Page, out: Path, minutes: float) -> None:
    """Queue the run, wait for it to finish, and picture the run page down to its "download the LoRA" button (the
    long list of files and the log, which names the temporary runs folder, are left out)."""
    page.click("#launch")
    page.wait_for_url("**/#run/*")
    expect(page.locator("#run-status")).to_have_text("done", timeout=minutes * 60_000)
    expect(page.locator("#compare")).to_be_visible()
    page.wait_for_function("[...document.querySelectorAll('#gallery img, #compare-image')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    page.evaluate("window.scrollTo(0, 0)")
    bottom = page.locator("#run-download").bounding_box()
    height = bottom["y"] + bottom["height"] + 12
    save_png(page.screenshot(full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}),
             out / "gui-run.png")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps of the quickstart run (default 100)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder of the two PNGs")
    parser.add_argument("--minutes", type=float, default=15, help="how long the run may take (default 15)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="screenshots: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (previews and saves come at half the steps)")
    if not DATASET.is_dir():
        subprocess.run([sys.executable, "-m", "library.toyworld", "dataset", "--out", str(DATASET)], cwd=REPO,
                       check=True)
    with tempfile.TemporaryDirectory(prefix="furnace-screenshots-") as temporary:
        port = free_port()
        server = start_server(Path(temporary) / "runs", port, Path(temporary) / "server.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
                page = browser.new_page(viewport=VIEWPORT, color_scheme="light")
                page.set_default_timeout(60_000)
                form_shot(page, f"http://127.0.0.1:{port}/", args.steps, args.out)
                logger.info("training the quickstart for %d steps", args.steps)
                run_shot(page, args.out, args.minutes)
                browser.close()
        finally:
            stop_runs(port)
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
