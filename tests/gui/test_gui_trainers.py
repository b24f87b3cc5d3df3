"""Runs beyond the basic LoRA queue, against a real server: DreamBooth runs, TensorBoard proxied per run, and
several runs training at once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gui_server import GuiServer, free_port, quick_run_values, run_folders, wait_for


def run_view(client: httpx.Client, run_id: str) -> dict:
    return client.get(f"/api/runs/{run_id}").json()


def until_ended(client: httpx.Client, run_id: str) -> dict:
    return wait_for(lambda: (run := run_view(client, run_id))["status"] not in ("queued", "running") and run,
                    what=f"run {run_id} to end")


def dreambooth_values(client: httpx.Client, gui_folders) -> tuple[dict, str]:
    """The dreambooth_quickstart preset on the test's tiny model: 2 steps, 1 generated class image, no previews."""
    preset = next(item for item in client.get("/api/presets").json() if item["name"] == "dreambooth_quickstart")
    values = preset["values"]
    values["model"]["pretrained_model_name_or_path"] = str(gui_folders.models / "tiny-sd1")
    values["dataset"]["train_data_dir"] = str(gui_folders.datasets / "concept")
    values["dreambooth"].update(class_data_dir=str(gui_folders.datasets / "class"), num_class_images=1,
                                class_generation_steps=1, stop_text_encoder_training=1)
    values["training"]["max_train_steps"] = 2
    del values["sample"]
    return values, preset["trainer"]


@pytest.mark.slow
def test_dreambooth_run_from_its_preset(gui_folders):
    server = GuiServer(gui_folders, token="db").start()
    try:
        client = server.client()
        values, trainer = dreambooth_values(client, gui_folders)
        assert trainer == "dreambooth"
        wrong = client.post("/api/runs", json={"name": "db", "values": values, "trainer": "nope"})
        assert wrong.status_code == 422 and not run_folders(gui_folders.runs)
        queued = client.post("/api/runs", json={"name": "db", "values": values, "trainer": trainer}).json()
        assert queued["trainer"] == "dreambooth"

        done = until_ended(client, queued["id"])
        assert done["status"] == "done", done["message"]
        assert Path(done["command"][1]).name == "train_dreambooth.py" and "--config" in done["command"]
        files = [item["path"] for item in client.get(f"/api/runs/{queued['id']}/files").json()]
        assert "dreambooth_quickstart.safetensors" in files
        assert len(list((gui_folders.datasets / "class").glob("*.png"))) == 1
        server.stop()
        server = GuiServer(gui_folders, token="db", port=server.port).start()
        listed = server.client().get("/api/runs").json()
        assert [(run["id"], run["trainer"]) for run in listed] == [(queued["id"], "dreambooth")]
    finally:
        server.stop()
        server.stop_trainers()


@pytest.mark.slow
def test_hypernetwork_run_from_its_preset(gui_folders):
    """The hypernetwork preset selects train_hypernetwork.py, whose run writes A1111's .pt beside the .safetensors."""
    server = GuiServer(gui_folders, token="hn").start()
    try:
        client = server.client()
        preset = next(item for item in client.get("/api/presets").json() if item["name"] == "hypernetwork_quickstart")
        values, trainer = preset["values"], preset["trainer"]
        assert trainer == "hypernetwork" and not preset["messages"]
        values["model"]["pretrained_model_name_or_path"] = str(gui_folders.models / "tiny-sd1")
        values["dataset"]["train_data_dir"] = str(gui_folders.datasets / "concept")
        values["training"]["max_train_steps"] = 2
        del values["sample"]
        queued = client.post("/api/runs", json={"name": "hn", "values": values, "trainer": trainer}).json()
        done = until_ended(client, queued["id"])
        assert done["status"] == "done", done["message"]
        assert Path(done["command"][1]).name == "train_hypernetwork.py"
        files = {item["path"] for item in client.get(f"/api/runs/{queued['id']}/files").json()}
        assert {"hypernetwork_quickstart.pt", "hypernetwork_quickstart.safetensors"} <= files
    finally:
        server.stop()
        server.stop_trainers()


@pytest.mark.slow
def test_tensorboard_is_proxied_per_run(gui_folders):
    server = GuiServer(gui_folders, token="tb", tensorboard_port=free_port()).start()
    direct = f"http://127.0.0.1:{server.tensorboard_port}/tensorboard/"
    try:
        client = server.client()
        run = client.post("/api/runs", json={"name": "board", "values": quick_run_values(gui_folders, 2, 1000)})
        run_id = run.json()["id"]
        assert run.json()["tensorboard"] == f"/tensorboard/?runFilter={run_id}#timeseries"
        assert client.get("/api/queue").json()["tensorboard"] == "/tensorboard/"
        assert until_ended(client, run_id)["status"] == "done"

        tags = wait_for(lambda: _scalar_tags(client, f"{run_id}/logs"), timeout=120, interval=1,
                        what="TensorBoard loading the run's scalars")
        assert any(name.startswith("loss") for name in tags)
        runs = client.get("/tensorboard/data/runs").json()
        assert f"{run_id}/logs" in runs

        browser = httpx.Client(base_url=server.url, timeout=30)
        assert browser.get("/tensorboard/data/runs").status_code == 401
        assert browser.get("/tensorboard/data/runs", params={"token": "wrong"}).status_code == 401
        page = browser.get("/tensorboard", params={"token": "tb"}, follow_redirects=True)
        assert page.status_code == 200 and "<title>TensorBoard</title>" in page.text
        assert browser.get("/tensorboard/data/runs").json() == runs   # the page's own requests: by cookie
        cookie = browser.cookies.get("furnace_token")
        assert cookie == "tb"
        assert browser.get("/api/runs", headers={"Cookie": f"furnace_token={cookie}"}).status_code == 401
    finally:
        server.stop()
        server.stop_trainers()
    wait_for(lambda: _answer(direct) is None, timeout=30, what="TensorBoard stopped with the server")


def _scalar_tags(client: httpx.Client, run: str) -> dict | None:
    """The scalar tags TensorBoard (through the proxy) has loaded for `run`, once it has any."""
    response = client.get("/tensorboard/data/plugin/scalars/tags")
    return response.json().get(run) if response.status_code == 200 else None


def _answer(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


@pytest.mark.slow
def test_max_concurrent_runs_train_together(gui_folders):
    """--max-concurrent 2: two runs step at the same time while a third waits (for 1, see the queue lifecycle)."""
    server = GuiServer(gui_folders, max_concurrent=2).start()
    client = server.client()
    try:
        values = quick_run_values(gui_folders, 5000, 5000)
        ids = [client.post("/api/runs", json={"name": f"r{index}", "values": values}).json()["id"]
               for index in range(3)]
        wait_for(lambda: all(run_view(client, run_id)["progress"].get("step") for run_id in ids[:2]),
                 what="two runs stepping")
        assert [run_view(client, run_id)["status"] for run_id in ids] == ["running", "running", "queued"]
        queue = client.get("/api/queue").json()
        assert (queue["max_concurrent"], queue["running"], queue["queued"]) == (2, ids[:2], ids[2:])
        assert [(entry["id"], entry["position"]) for entry in queue["entries"]] == [(ids[0], 0), (ids[1], 0),
                                                                                   (ids[2], 1)]
        for run_id in reversed(ids):
            client.post(f"/api/runs/{run_id}/stop")
        assert [until_ended(client, run_id)["status"] for run_id in ids] == ["stopped", "stopped", "cancelled"]
    finally:
        server.stop()
        server.stop_trainers()


@pytest.mark.slow
def test_textual_inversion_run_from_its_preset(gui_folders):
    """The textual-inversion preset selects train_textual_inversion.py; the pivotal one, listed too, train_network.py."""
    server = GuiServer(gui_folders, token="ti").start()
    try:
        client = server.client()
        presets = {item["name"]: item for item in client.get("/api/presets").json()}
        pivotal = presets["pivotal_quickstart"]  # a [network] section beside [textual_inversion]: train_network.py
        assert pivotal["trainer"] == "lora" and not pivotal["messages"]
        assert pivotal["values"]["textual_inversion"]["token_string"] == "frnc"
        preset = presets["ti_quickstart"]
        assert preset["trainer"] == "textual_inversion" and not preset["messages"]
        values = preset["values"]
        values["model"]["pretrained_model_name_or_path"] = str(gui_folders.models / "tiny-sd1")
        values["dataset"]["train_data_dir"] = str(gui_folders.datasets / "concept")
        values["training"]["max_train_steps"] = 2
        del values["sample"]
        queued = client.post("/api/runs", json={"name": "ti", "values": values, "trainer": preset["trainer"]}).json()
        done = until_ended(client, queued["id"])
        assert done["status"] == "done", done["message"]
        assert Path(done["command"][1]).name == "train_textual_inversion.py"
        files = [item["path"] for item in client.get(f"/api/runs/{queued['id']}/files").json()]
        assert "ti_quickstart.safetensors" in files
    finally:
        server.stop()
        server.stop_trainers()
