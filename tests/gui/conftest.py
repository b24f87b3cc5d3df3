"""GUI fixtures: confined folders holding a tiny model, a small generated dataset and the repo's presets; one
chromium per browser-test module and a fresh page per test."""

from __future__ import annotations

import pytest
from gui_server import GuiFolders, GuiServer, make_gui_folders


@pytest.fixture
def gui_folders(tmp_path, tiny_model_factory) -> GuiFolders:
    """runs/ (empty), models/tiny-sd1 (the session's tiny model), datasets/concept, configs/ (presets + prompts)."""
    return make_gui_folders(tmp_path, tiny_model_factory("sd1").folder)


@pytest.fixture(scope="module")
def client(folders):
    """An HTTP client of one GUI server on the module's ``folders`` (each API module defines its own), shared by the
    module's tests."""
    server = GuiServer(folders).start()
    with server.client() as http:
        yield http
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from gui_browser import launch_browser, sync_playwright

    with sync_playwright() as playwright:
        launched = launch_browser(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    from gui_browser import new_context

    context = new_context(browser)
    yield context.new_page()
    context.close()
