"""Preprocess jobs against a real server: started at once, polled to the end with progress, confined, failures
reported with the command's own message."""

from __future__ import annotations

import pytest
from gui_server import GuiServer, wait_for

from library.data.synthetic import write_dataset

pytestmark = pytest.mark.slow  # these tests start processes or trainers


@pytest.fixture
def server(gui_folders):
    running = GuiServer(gui_folders, token="jobs").start()
    yield running
    running.stop()


def finished(client, job_id: str) -> dict:
    """Poll the job until it is no longer running; its final view."""
    return wait_for(lambda: (job := client.get(f"/api/preprocess/jobs/{job_id}").json())["status"] != "running"
                    and job, timeout=120, interval=0.2, what=f"job {job_id} to end")


def test_crop_job_runs_in_the_background_with_progress(server, gui_folders):
    client = server.client()
    source = write_dataset(gui_folders.datasets / "twenty", count=20, repeats=1, seed=5)
    cropped = gui_folders.datasets / "twenty-64"
    started = client.post("/api/preprocess", json={"command": "crop",
                                                   "args": [str(source), "--out", str(cropped), "--size", "64"]})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status"] == "running" and job["returncode"] is None and job["id"]
    assert job["id"] in [listed["id"] for listed in client.get("/api/preprocess/jobs").json()]

    done = finished(client, job["id"])
    assert done["status"] == "done" and done["returncode"] == 0, done
    assert done["progress"] == {"current": 20, "total": 20, "percent": 100.0, "label": "crop"}
    assert "images written: 20" in done["stdout"] and "20/20" in done["log"] and "\r" not in done["log"]
    assert len(list(cropped.rglob("*.png"))) == 20 and len(list(cropped.rglob("*.txt"))) == 20


def test_failing_job_reports_the_command_message(server, gui_folders):
    client = server.client()
    missing = gui_folders.datasets / "not-there"
    job = client.post("/api/preprocess", json={"command": "crop", "args": [str(missing), "--size", "64", "--out",
                                                                           str(gui_folders.datasets / "out")]})
    failed = finished(client, job.json()["id"])
    assert failed["status"] == "failed" and failed["returncode"] == 2
    assert failed["message"] == f"error: {missing}: folder not found"
    assert client.get("/api/preprocess/jobs/nope").status_code == 404


def test_jobs_are_confined_and_checked_before_they_start(server, gui_folders, tmp_path):
    client = server.client()
    commands = client.get("/api/preprocess").json()
    assert set(commands) == {"crop", "tag", "caption", "tags", "doctor"}
    assert any(option["flag"] == "--prepend" for option in commands["tags"]["options"])
    dataset = gui_folders.datasets / "concept"
    listed = finished(client, client.post("/api/preprocess", json={"command": "tags",
                                                                   "args": [str(dataset), "--list"]}).json()["id"])
    assert listed["status"] == "done" and "frnc" in listed["stdout"]

    outside = tmp_path / "elsewhere"
    refused = [["tags", [str(dataset), "--out", str(outside)]], ["doctor", [str(tmp_path)]],
               ["crop", [str(dataset / ".." / ".." / "runs"), "--size", "64", "--out", str(gui_folders.datasets)]]]
    for command, args in refused:
        response = client.post("/api/preprocess", json={"command": command, "args": args})
        assert response.status_code == 403, (command, args, response.text)
    assert not outside.exists()
    unknown = client.post("/api/preprocess", json={"command": "rm", "args": []})
    assert unknown.status_code == 422 and "not a preprocess command" in unknown.json()["detail"]
    bad = client.post("/api/preprocess", json={"command": "tags", "args": [str(dataset), "--no-such-option"]})
    assert bad.status_code == 422 and "--no-such-option" in bad.json()["detail"]
    assert [job["id"] for job in client.get("/api/preprocess/jobs").json()] == [listed["id"]]
    plain = server.client()
    plain.headers.pop("Authorization")
    assert plain.get("/api/preprocess/jobs").status_code == 401


def test_a_running_job_can_be_cancelled(server, gui_folders):
    client = server.client()
    source = write_dataset(gui_folders.datasets / "many", count=40, repeats=1, seed=7)
    job = client.post("/api/preprocess", json={"command": "crop", "args": [str(source), "--size", "64", "--flip",
                                                                           "--out", str(gui_folders.datasets / "c")]})
    cancelled = client.post(f"/api/preprocess/jobs/{job.json()['id']}/cancel").json()
    assert cancelled["status"] == "running"   # until the command has exited
    ended = finished(client, cancelled["id"])
    assert (ended["status"], ended["message"]) == ("cancelled", "cancelled") and ended["returncode"] != 0
    again = client.post(f"/api/preprocess/jobs/{ended['id']}/cancel").json()
    assert again["status"] == "cancelled"
