"""One writer per folder: a second trainer on a run's output folder, or a second GUI server on a runs root, is
refused with one line naming the holder's pid, and leaves the holder's output alone; a holder that died (SIGKILL,
no clean-up) blocks nobody."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from cli_checks import ENV, REPO, assert_refused, assert_trained, events, snapshot, train, train_args

from library.data.synthetic import write_dataset
from library.folder_lock import LOCK_FILE

pytestmark = [
    pytest.mark.slow,  # every test starts trainers or servers
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGSTOP/SIGKILL of real processes"),
]


def _wait_for(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _holds_lock(folder, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"process {process.pid} exited {process.returncode}")
    lock = folder / LOCK_FILE
    return lock.is_file() and lock.read_text(encoding="utf-8").startswith(f"pid {process.pid} ")


def _killed(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=60)


def test_a_second_trainer_on_one_output_folder_is_refused(tiny_model_factory, tmp_path):
    write_dataset(tmp_path / "dataset", count=12, repeats=5, seed=3)
    output = tmp_path / "run"
    model = tiny_model_factory("sd1").folder
    first = subprocess.Popen(
        [sys.executable, str(REPO / "train_network.py"),
         *train_args(model, tmp_path / "dataset", output, max_train_steps=100_000)],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: _holds_lock(output, first) and (output / "progress.jsonl").is_file()
                  and any(e["event"] == "step" for e in events(output)), "the first trainer's first step")
        first.send_signal(signal.SIGSTOP)  # its output stands still while the second one tries
        before, events_before, config_before = snapshot(output), events(output), (output / "config.toml").read_bytes()

        second = train(train_args(model, tmp_path / "dataset", output, max_train_steps=2, seed=7))

        assert_refused(second, str(output), f"pid {first.pid} ", "output.output_dir")
        assert snapshot(output) == before and events(output) == events_before
        assert (output / "config.toml").read_bytes() == config_before
    finally:
        _killed(first)  # SIGKILL: no clean-up, its lock file stays behind naming it

    assert (output / LOCK_FILE).read_text(encoding="utf-8").startswith(f"pid {first.pid} ")
    assert_trained(train(train_args(model, tmp_path / "dataset", output, max_train_steps=2)))
    assert [e["event"] for e in events(output)].count("done") == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server(tmp_path, port: int) -> subprocess.Popen:
    roots = {name: tmp_path / name for name in ("runs", "models", "datasets", "configs")}
    for folder in roots.values():
        folder.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "library.gui", "--port", str(port), "--tensorboard-port", "0",
               "--runs-root", str(roots["runs"]), "--models-root", str(roots["models"]),
               "--datasets-root", str(roots["datasets"]), "--configs-dir", str(roots["configs"])]
    with open(tmp_path / f"server-{port}.log", "w", encoding="utf-8") as log:
        return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=log)


def _log(tmp_path, port: int) -> str:
    return (tmp_path / f"server-{port}.log").read_text(encoding="utf-8")


def _answers(port: int, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"GUI server on port {port} exited {process.returncode}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_a_second_gui_server_on_one_runs_root_is_refused(tmp_path):
    runs = tmp_path / "runs"
    first_port = _free_port()
    first = _server(tmp_path, first_port)
    try:
        _wait_for(lambda: _answers(first_port, first), "the first server")
        before = sorted(runs.iterdir())
        second_port = _free_port()
        second = _server(tmp_path, second_port)
        second.wait(timeout=120)
        stderr = _log(tmp_path, second_port)

        assert second.returncode == 1 and "Traceback" not in stderr, stderr
        refusals = [line for line in stderr.splitlines() if line.startswith("run_gui.sh:")]
        assert len(refusals) == 1 and str(runs) in refusals[0] and f"pid {first.pid} " in refusals[0], stderr
        assert sorted(runs.iterdir()) == before
        assert _answers(first_port, first)  # the first server serves on
    finally:
        _killed(first)  # SIGKILL: its lock file stays behind naming it

    assert (runs / LOCK_FILE).read_text(encoding="utf-8").startswith(f"pid {first.pid} ")
    third_port = _free_port()
    third = _server(tmp_path, third_port)
    try:
        _wait_for(lambda: _answers(third_port, third), "a server after the first one died")
    finally:
        third.send_signal(signal.SIGTERM)
        third.wait(timeout=60)
