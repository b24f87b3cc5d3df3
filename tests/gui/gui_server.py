"""A real Furnace GUI server (uvicorn in a subprocess on a free loopback port) over test-time folders."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from library.config import dump_toml, loads_config
from library.data.synthetic import write_dataset
from library.gui.events import PROGRESS_NAME
from library.gui.forms import values_to_toml
from library.gui.runs import CONFIG_NAME, RunRecord, RunStore

REPO = Path(__file__).resolve().parents[2]
TINY_PROMPTS = "tiny_prompts.txt"
# The shipped quickstart preset's rank: what the form shows, and a run queued from it writes, once it is loaded.
QUICKSTART_DIM = tomllib.loads((REPO / "configs" / "quickstart.toml").read_text(encoding="utf-8"))["network"]["dim"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class GuiFolders:
    """The roots a test server is confined to."""

    runs: Path
    models: Path
    datasets: Path
    configs: Path


def make_gui_folders(root: Path, tiny_model: Path) -> GuiFolders:
    """runs/ (empty), models/tiny-sd1 (a copy of ``tiny_model``), datasets/concept, configs/ (presets + prompts)."""
    folders = GuiFolders(root / "runs", root / "models", root / "datasets", root / "configs")
    folders.runs.mkdir()
    shutil.copytree(tiny_model, folders.models / "tiny-sd1")
    write_dataset(folders.datasets / "concept", count=6, repeats=2, seed=3)
    shutil.copytree(REPO / "configs", folders.configs)
    (folders.configs / TINY_PROMPTS).write_text("frnc, red circle --w 64 --h 64 --s 2 --d 1\n", encoding="utf-8")
    return folders


@dataclass
class GuiServer:
    folders: GuiFolders
    token: str | None = None
    max_concurrent: int = 1
    tensorboard_port: int = 0
    launcher: str = "python"
    options: tuple[str, ...] = ()  # more command-line options, e.g. ("--listen", "--allowed-host", "name")
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        folders = self.folders
        command = [sys.executable, "-m", "library.gui", "--port", str(self.port),
                   "--tensorboard-port", str(self.tensorboard_port), "--runs-root", str(folders.runs),
                   "--models-root", str(folders.models),
                   "--datasets-root", str(folders.datasets), "--configs-dir", str(folders.configs),
                   "--max-concurrent", str(self.max_concurrent), "--launcher", self.launcher]
        return command + (["--token", self.token] if self.token else []) + list(self.options)

    def start(self) -> GuiServer:
        log = open(self.folders.runs.parent / f"server-{self.port}.log", "ab")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(self.command(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"GUI server exited {self.process.returncode}")
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("GUI server did not answer within 60 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def stop_trainers(self) -> None:
        """End trainers a failed test left running (they live in their own sessions, beyond the server)."""
        for record in self.folders.runs.glob("*/run.json"):
            pid = json.loads(record.read_text()).get("pid")
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def run_folders(runs: Path) -> list[Path]:
    """What a runs root holds besides the server's hidden lock file: one folder per run."""
    return [path for path in runs.iterdir() if not path.name.startswith(".")]


def wait_for(predicate, timeout: float = 900, interval: float = 0.5, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def quick_run_values(folders: GuiFolders, steps: int, sample_every: int) -> dict:
    """Form values of a small, fast run on the tiny model at 64 px with one 2-step preview per sampling."""
    model, dataset = folders.models / "tiny-sd1", folders.datasets / "concept"
    return {
        "model": {"pretrained_model_name_or_path": str(model), "family": "sd1"},
        "dataset": {"train_data_dir": str(dataset), "resolution": [64, 64], "batch_size": 2},
        "network": {"dim": 4, "alpha": 2.0},
        "optimizer": {"learning_rate": 1e-3},
        "training": {"max_train_steps": steps, "seed": 1},
        "sample": {"prompts": str(folders.configs / TINY_PROMPTS), "every_n_steps": sample_every,
                   "steps": 2, "width": 64, "height": 64},
        "output": {"output_name": "lora", "save_precision": "float"},
    }


def write_run(store: RunStore, run_id: str, status: str, values: dict, events: list[dict], **record) -> None:
    """A run folder as the server leaves it: run.json, the resolved run.toml and the trainer's progress.jsonl."""
    folder = store.folder(run_id)
    folder.mkdir()
    config = loads_config(values_to_toml(values), "test", ("--output.output_dir", str(folder)))
    (folder / CONFIG_NAME).write_text(dump_toml(config), encoding="utf-8")
    (folder / PROGRESS_NAME).write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    store.save(RunRecord(id=run_id, name=run_id, status=status, **record))


def steps(last: int, eta: float) -> list[dict]:
    """A trainer's start and step events up to step `last` of 10, each with the same loss and ETA."""
    return [{"event": "start", "step": 0, "total_steps": 10}] + [
        {"event": "step", "step": step, "epoch": 1, "loss": 0.5, "smoothed_loss": 0.5, "lr": 1e-3,
         "eta_seconds": eta, "total_steps": 10} for step in range(1, last + 1)]
