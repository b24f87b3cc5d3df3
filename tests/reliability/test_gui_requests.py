"""Hostile or malformed requests against the real GUI server over HTTP: bodies the schema refuses answer 422 with
the form's messages, oversized bodies 413, a Host header naming another site 421 (400 without one), and a blank
token stops the server before it starts. Nothing a refused request names is written or run."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import pytest
from gui_server import REPO, GuiServer, free_port, run_folders
from outcome import assert_one_line_user_error, assert_unchanged, snapshot

from library.gui.guards import MAX_BODY_BYTES

pytestmark = pytest.mark.slow  # every test starts the server

TOKEN = "s3cret"


@pytest.fixture
def server(gui_folders):
    running = GuiServer(gui_folders, token=TOKEN).start()
    yield running
    running.stop()


def _server_log(server: GuiServer) -> str:
    return (server.folders.runs.parent / f"server-{server.port}.log").read_text(errors="replace")


# case -> (endpoint, body, the key the message names, how the message goes on)
BAD_BODIES = {
    "resolution not a size": ("doctor", {"dataset": {"resolution": 0}}, "dataset.resolution",
                              "each side must be a multiple of 8 from 64 to 4096"),
    "resolution outside the buckets": ("doctor", {"dataset": {"resolution": 64, "enable_bucket": True}},
                                       "dataset.resolution", "must lie within min_bucket_reso..max_bucket_reso"),
    "caption extension a path": ("doctor", {"dataset": {"caption_extension": "../x/y"}}, "dataset.caption_extension",
                                 "must be a file extension like '.txt'"),
    "key the doctor does not take": ("doctor", {"resolution": 64}, "resolution", "is not a known option"),
    "unknown trainer": ("runs", {"name": "x", "trainer": "sdxl-full"}, "trainer", "must be one of"),
    "toml not text": ("import", {"toml": 5}, "toml", "must be a string"),
    "preprocess args not a list": ("preprocess", {"command": "doctor", "args": "x"}, "args", "must be a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_body_is_422_with_the_forms_message(server, gui_folders, case):
    endpoint, body, key, expectation = BAD_BODIES[case]
    if endpoint == "doctor":
        body = {"path": str(gui_folders.datasets / "concept"), **body}
    before = snapshot(gui_folders.datasets)

    answer = server.client().post(f"/api/{endpoint}", json=body)

    assert answer.status_code == 422, answer.text
    data = answer.json()
    line = assert_one_line_user_error(data["detail"], f"request: {key}: {expectation}")
    assert line.startswith(f"request: {key}: ")
    assert data["messages"] == [{"path": key if "." in key else None, "message": line}]
    assert "Traceback" not in _server_log(server)
    assert server.client().get("/api/runs").json() == [] and not run_folders(gui_folders.runs)
    assert_unchanged(before, gui_folders.datasets)


def test_broken_json_is_422_naming_the_body(server):
    answer = server.client().post("/api/validate", content=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert_one_line_user_error(answer.json()["detail"], "request: body: is not valid JSON")


def test_doctor_reads_the_forms_dataset_settings(server, gui_folders):
    """The settings the doctor takes are the run config's: its caption extension and bucket options apply."""
    concept = next((gui_folders.datasets / "concept").glob("*_frnc"))
    for caption in concept.glob("*.txt"):
        caption.rename(caption.with_suffix(".caption"))
    body = {"path": str(gui_folders.datasets / "concept"),
            "dataset": {"resolution": 64, "caption_extension": "caption", "enable_bucket": True,
                        "min_bucket_reso": 64, "max_bucket_reso": 128, "bucket_reso_steps": 32}}
    report = server.client().post("/api/doctor", json=body).json()["report"]
    assert report["totals"]["missing_captions"] == 0 and report["ok"]
    assert report["buckets"]["steps"] == 32 and report["buckets"]["max_reso"] == 128


def test_body_over_the_limit_is_413(server):
    client = server.client()
    small = client.post("/api/import", json={"toml": "# " + "x" * 1000 + "\nnetwork_dim = 8\n"})
    assert small.status_code == 200 and small.json()["values"]["network"]["dim"] == 8
    declared = client.post("/api/import", json={"toml": "#" + "x" * MAX_BODY_BYTES})
    streamed = client.post("/api/import", content=(b"x" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 1)),
                           headers={"Content-Type": "application/json"})  # chunked: no Content-Length
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert_one_line_user_error(answer.json()["detail"], f"request body over {MAX_BODY_BYTES} bytes")
    assert "Traceback" not in _server_log(server)


@pytest.mark.parametrize(("flag", "environment", "named"), [
    (["--token", ""], {}, "--token"),
    (["--token", "   "], {}, "--token"),
    ([], {"FURNACE_GUI_TOKEN": ""}, "$FURNACE_GUI_TOKEN"),
])
def test_blank_token_refuses_to_start(tmp_path, flag, environment, named):
    command = [sys.executable, "-m", "library.gui", "--port", str(free_port()), "--tensorboard-port", "0",
               "--runs-root", str(tmp_path / "runs"), *flag]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60,
                            env={"PATH": "/usr/bin:/bin", **environment})
    assert result.returncode == 2
    assert_one_line_user_error(result.stderr, named, "blank")
    assert not (tmp_path / "runs").exists()


def _raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_host_header_must_name_this_server(gui_folders, server, tmp_path):
    own_runs = dataclasses.replace(gui_folders, runs=tmp_path / "exposed-runs")  # one server per runs root
    own_runs.runs.mkdir()
    exposed = GuiServer(own_runs, token=TOKEN, options=("--listen", "--allowed-host", "furnace.example")).start()
    try:
        for running in (exposed, server):  # listening on every address, and on loopback only
            client = running.client()
            port = running.port
            assert client.get("/api/runs").status_code == 200
            refused = client.get("/api/runs", headers={"Host": f"rebound.example:{port}"})
            assert refused.status_code == 421
            assert_one_line_user_error(refused.json()["detail"], "rebound.example", "--allowed-host")
            assert client.get("/", headers={"Host": f"localhost:{port}"}).status_code == 200
            no_host = _raw_request(port, b"GET / HTTP/1.0\r\n\r\n")
            assert no_host.startswith(b"HTTP/1.1 400"), no_host[:200]
        assert exposed.client().get("/api/runs", headers={"Host": f"FURNACE.example:{exposed.port}"}).status_code == 200
        assert server.client().get("/api/runs", headers={"Host": "furnace.example"}).status_code == 421
        assert "Traceback" not in _server_log(exposed) + _server_log(server)
    finally:
        exposed.stop()
