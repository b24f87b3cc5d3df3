"""The JSON API against a real server: auth, the form's validation, confinement, and the run queue end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gui_server import QUICKSTART_DIM, REPO, GuiFolders, GuiServer, quick_run_values, run_folders, wait_for

pytestmark = pytest.mark.slow  # these tests start processes or trainers


@pytest.fixture
def server(gui_folders):
    running = GuiServer(gui_folders, token="s3cret").start()
    yield running
    running.stop()
    running.stop_trainers()


def test_every_api_call_needs_the_token(server):
    plain = server.client()
    plain.headers.pop("Authorization")
    assert plain.get("/api/runs").status_code == 401
    assert plain.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert plain.post("/api/validate", json={"values": {}}).status_code == 401
    assert plain.get("/api/runs", params={"token": "s3cret"}).status_code == 200
    assert server.client().get("/api/runs").json() == []
    page = plain.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_listen_without_token_refuses_to_start():
    result = subprocess.run([sys.executable, "-m", "library.gui", "--listen", "--tensorboard-port", "0"],
                            capture_output=True, text=True, cwd=REPO, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "--token" in result.stderr and "Traceback" not in result.stderr


def test_form_validation_uses_the_cli_messages(server, gui_folders):
    client = server.client()
    schema = client.get("/api/schema").json()
    assert {"model", "dataset", "network", "training"} <= set(schema["properties"])

    presets = {preset["name"]: preset for preset in client.get("/api/presets").json()}
    assert presets["quickstart"]["values"]["network"]["dim"] == QUICKSTART_DIM and not presets["quickstart"]["messages"]

    values = quick_run_values(gui_folders, steps=4, sample_every=2)
    good = client.post("/api/validate", json={"values": values}).json()
    assert good["ok"] and "[network]" in good["toml"]

    values["network"]["dim"] = 0
    values["model"]["pretrained_model_name_or_path"] = "/etc"
    bad = client.post("/api/validate", json={"values": values}).json()
    assert not bad["ok"]
    by_path = {item["path"]: item["message"] for item in bad["messages"]}
    assert by_path["network.dim"].startswith("form: network.dim: must be >= 1")

    values["network"]["dim"] = 4
    outside = client.post("/api/validate", json={"values": values}).json()
    assert [item["path"] for item in outside["messages"]] == ["model.pretrained_model_name_or_path"]
    values["model"]["pretrained_model_name_or_path"] = str(gui_folders.models / "tiny-sd1")
    values["logging"] = {"log_dir": str(gui_folders.datasets)}
    values["sample"]["prompts"] = "/etc/hostname"
    escaping = client.post("/api/validate", json={"values": values}).json()["messages"]
    assert sorted(item["path"] for item in escaping) == ["logging.log_dir", "sample.prompts"]
    refused = client.post("/api/runs", json={"name": "x", "values": values})
    assert refused.status_code == 422 and client.get("/api/runs").json() == []
    assert run_folders(gui_folders.runs) == []


def test_toml_preview_and_import_round_trip(server):
    client = server.client()
    flat = "network_dim = 8\nlearning_rate = 0.0002\nmax_train_steps = 30\n"
    values = client.post("/api/import", json={"toml": flat}).json()["values"]
    assert values["network"]["dim"] == 8 and values["training"]["max_train_steps"] == 30
    preview = client.post("/api/toml", json={"values": values}).json()["toml"]
    assert client.post("/api/import", json={"toml": preview}).json()["values"] == values
    unknown = client.post("/api/import", json={"toml": "netwrk_dim = 8\n"})
    assert unknown.status_code == 422 and "did you mean 'network_dim'" in unknown.json()["detail"]
    broken = client.post("/api/import", json={"toml": "[network\n"})
    assert broken.status_code == 422 and "invalid TOML" in broken.json()["detail"]


def test_browsing_is_confined_to_the_roots(server, gui_folders, tmp_path):
    client = server.client()
    roots = client.get("/api/roots").json()
    assert roots["models"] == [str(gui_folders.models / "tiny-sd1")]
    assert roots["datasets"] == [str(gui_folders.datasets / "concept")]
    secret = tmp_path / "secret"
    secret.mkdir()
    doctor = client.post("/api/doctor", json={"path": str(secret)})
    assert doctor.status_code == 403


def test_dataset_doctor_reports_the_folder(server, gui_folders):
    client = server.client()
    result = client.post("/api/doctor", json={"path": str(gui_folders.datasets / "concept"),
                                              "dataset": {"resolution": 64}}).json()
    assert result["report"]["totals"]["images"] == 6 and result["report"]["ok"]
    assert "2_frnc" in result["text"] and "ready to train" in result["text"]

    def buckets(**model) -> dict[str, int]:
        body = {"path": str(gui_folders.datasets / "concept"), "dataset": {"resolution": 72}, **model}
        return client.post("/api/doctor", json=body).json()["report"]["totals"]["buckets"]

    # the form's base model sets the multiple sizes are fitted to, as the run fits them: FLUX.1 floors 72 to 64
    assert buckets(family="flux1-dev") == {"64x64": 6}
    assert buckets(model_path=str(gui_folders.models / "tiny-sd1")) == {"72x72": 6}  # detected: SD1, 8 px
    assert client.post("/api/doctor", json={"path": "x", "family": "flux2"}).status_code == 422


def test_queue_runs_stops_resumes_and_survives_a_restart(gui_folders, tmp_path):
    servers = [GuiServer(gui_folders, token="t", max_concurrent=1).start()]
    try:
        check_queue_lifecycle(servers, gui_folders, tmp_path)
    finally:
        servers[-1].stop()
        servers[-1].stop_trainers()


def check_queue_lifecycle(servers: list[GuiServer], gui_folders, tmp_path) -> None:
    client = servers[-1].client()
    first = client.post("/api/runs", json={"name": "first", "values": quick_run_values(gui_folders, 4, 2)})
    assert first.status_code == 201, first.text
    first = first.json()
    second = client.post("/api/runs", json={"name": "second", "values": quick_run_values(gui_folders, 5000, 5000)})
    second = second.json()
    queue = client.get("/api/queue").json()
    assert (queue["running"], queue["queued"]) == ([first["id"]], [second["id"]])

    # A restart while the first trains: it is adopted by pid, the second stays queued.
    servers[-1].stop()
    servers.append(GuiServer(gui_folders, token="t", max_concurrent=1, port=servers[-1].port).start())
    client = servers[-1].client()
    assert [run["id"] for run in client.get("/api/runs").json()] == [first["id"], second["id"]]

    done = wait_for(lambda: (run := client.get(f"/api/runs/{first['id']}").json())["status"] == "done" and run,
                    what="first run done")
    assert done["progress"]["step"] == 4 and done["progress"]["samples"]
    assert done["trainer"] == "lora" and Path(done["command"][1]).name == "train_network.py"
    refused = client.post(f"/api/runs/{first['id']}/resume")  # a finished run is never changed
    assert refused.status_code == 409 and "only a stopped run can be resumed" in refused.json()["detail"]
    assert client.get(f"/api/runs/{first['id']}").json() == done
    log = client.get(f"/api/runs/{first['id']}/log/follow", params={"lines": 20}).json()["lines"]
    assert not any("\r" in line for line in log) and any("done:" in line for line in log) and len(log) <= 20
    files = [item["path"] for item in client.get(f"/api/runs/{first['id']}/files").json()]
    assert "lora.safetensors" in files and "progress.jsonl" in files
    sample = next(path for path in files if path.startswith("sample/") and path.endswith(".png"))
    image = client.get(f"/api/runs/{first['id']}/file", params={"path": sample})
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    (gui_folders.runs / first["id"] / "link.txt").symlink_to(outside)
    for path in ("../" + second["id"] + "/run.json", "link.txt", "/etc/passwd"):
        assert client.get(f"/api/runs/{first['id']}/file", params={"path": path}).status_code == 403, path
    assert client.get("/api/runs/nope/file", params={"path": "run.json"}).status_code == 404

    def stepping(starts_needed: int) -> bool:
        """Whether the second run has started `starts_needed` times and stepped since the last start."""
        events = client.get(f"/api/runs/{second['id']}/events").json()["events"]
        starts = [index for index, event in enumerate(events) if event["event"] == "start"]
        return len(starts) >= starts_needed and any(event["event"] == "step" for event in events[starts[-1]:])

    wait_for(lambda: stepping(1), what="second run stepping")
    assert client.post(f"/api/runs/{second['id']}/stop").status_code == 200
    stopped = wait_for(lambda: (run := client.get(f"/api/runs/{second['id']}").json())["status"] == "stopped"
                       and run, what="second run stopped")
    assert (gui_folders.runs / second["id"] / "state").is_dir() and stopped["progress"]["last"] == "stopped"
    assert client.post(f"/api/runs/{second['id']}/stop").status_code == 409

    resumed = client.post(f"/api/runs/{second['id']}/resume").json()
    assert resumed["resume"] is True and resumed["status"] == "running"
    wait_for(lambda: stepping(2), what="resumed run stepping")
    starts = [e for e in client.get(f"/api/runs/{second['id']}/events").json()["events"] if e["event"] == "start"]
    assert starts[-1]["resumed"] is True and starts[-1]["step"] == stopped["progress"]["step"]
    client.post(f"/api/runs/{second['id']}/stop")
    wait_for(lambda: client.get(f"/api/runs/{second['id']}").json()["status"] == "stopped", what="stopped again")


def test_accelerate_launched_run_stops_with_its_state_saved(gui_folders):
    server = GuiServer(gui_folders, launcher="accelerate").start()
    try:
        client = server.client()
        run = client.post("/api/runs", json={"name": "accel", "values": quick_run_values(gui_folders, 5000, 5000)})
        run_id = run.json()["id"]
        wait_for(lambda: client.get(f"/api/runs/{run_id}").json()["progress"].get("step"), what="a step")
        launcher = Path(f"/proc/{client.get(f'/api/runs/{run_id}').json()['pid']}/cmdline").read_bytes()
        assert b"accelerate\0launch" in launcher.replace(b"/", b"\0")
        client.post(f"/api/runs/{run_id}/stop")
        stopped = wait_for(lambda: (view := client.get(f"/api/runs/{run_id}").json())["status"] != "running"
                           and view, what="the run to end")
        assert stopped["status"] == "stopped", stopped["message"]
        assert (gui_folders.runs / run_id / "state").is_dir()
    finally:
        server.stop()
        server.stop_trainers()


def test_the_toy_world_model_is_offered_and_the_quickstart_preset_is_accepted(tmp_path):
    """With the default models folder, the picker offers the shipped toy-world model and the quickstart preset (which
    names it by a relative path) validates, its dataset once written where quickstart.sh writes it."""
    from library.toyworld.base_model import base_model_file
    from library.toyworld.datasets import write_concept_dataset
    from library.toyworld.world import QUICKSTART_CONCEPT

    folders = GuiFolders(tmp_path / "runs", REPO / "models", tmp_path / "datasets", REPO / "configs")
    folders.runs.mkdir()
    running = GuiServer(folders).start()
    try:
        client = running.client()
        assert str(base_model_file()) in client.get("/api/roots").json()["models"]
        preset = next(item for item in client.get("/api/presets").json() if item["name"] == "quickstart")
        values = preset["values"]
        assert values["model"]["pretrained_model_name_or_path"] == "models/toyworld-sd1.safetensors"
        write_concept_dataset(folders.datasets / "quickstart", QUICKSTART_CONCEPT, count=2)
        values["dataset"]["train_data_dir"] = str(folders.datasets / "quickstart")
        values["sample"]["prompts"] = str(REPO / "configs" / "quickstart_prompts.txt")
        answer = client.post("/api/validate", json={"values": values}).json()
        assert answer["ok"], answer["messages"]
    finally:
        running.stop()
