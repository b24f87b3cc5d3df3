"""Shared pieces of the benchmarks: measured subprocess runs (wall time, peak RSS), models, datasets, output.

Every benchmark runs the code under test in its own process so that peak RSS covers the whole run, model load
included, and one run cannot warm another's caches in memory. Numbers on a shared CPU are noisy: compare A and B
measured in the same invocation, interleaved, and read medians.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
GIB = 1024**3


@dataclass(frozen=True)
class Measured:
    """One finished process: wall seconds, peak resident memory (bytes), the sampled RSS timeline and the epoch
    time it was started at (to place the trainer's own event times within the run)."""

    wall: float
    peak_rss: int
    timeline: list[dict[str, float]] = field(default_factory=list)
    started_at: float = 0.0


class RssSampler(threading.Thread):
    """Samples a process's resident memory every ``interval`` s: (epoch time, RSS, anonymous, file-backed) in
    bytes. File-backed pages count because a memory-mapped checkpoint is resident once its tensors are touched."""

    FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples = pid, interval, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
            except OSError:
                return
            sample = {"time": time.time()}
            for line in lines:
                key, _, value = line.partition(":")
                if key in self.FIELDS:
                    sample[self.FIELDS[key]] = int(value.split()[0]) * 1024
            if "rss" in sample:  # a zombie (exited, not yet reaped) has no memory lines
                self.samples.append(sample)


def run_measured(command: list[str], log_name: str, env: dict[str, str] | None = None) -> Measured:
    """Run ``command`` to the end; its output goes to ``results/logs/<log_name>.log``; fails loudly on error."""
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{log_name}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    started, started_at = time.perf_counter(), time.time()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=full_env)
        sampler = RssSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        sampler.done.set()
        sampler.join()
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed ({process.returncode}); see {log_path}")
    return Measured(wall, usage.ru_maxrss * 1024, sampler.samples, started_at)  # ru_maxrss is in KiB on Linux


def peak_phase(timeline: list[dict[str, float]], events: list[dict]) -> str:
    """Which part of a trainer run the sampled RSS peak fell in: before the first step ("setup"), "step N",
    or "after training" -- read from the ``progress.jsonl`` event times."""
    if not timeline:
        return "unknown"
    peak_time = max(timeline, key=lambda sample: sample["rss"])["time"]
    steps = [event for event in events if event["event"] == "step"]
    if not steps or peak_time < steps[0]["time"] - steps[0]["seconds_per_step"]:
        return "setup"
    for event in steps:
        if peak_time <= event["time"]:
            return f"step {event['step']}"
    return "after training"


def read_events(progress_file: Path) -> list[dict]:
    return [json.loads(line) for line in progress_file.read_text(encoding="utf-8").splitlines()]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _model_folder(size: str, family: str, dtype: str) -> Path:
    return RESULTS / "models" / (f"{family}-{size}" + ("" if dtype == "float32" else f"-{dtype}"))


def _build_model(size: str, single_file: Path | None = None, family: str = "sd1", dtype: str = "float32") -> Path:
    folder = _model_folder(size, family, dtype)
    command = python("-m", "library.models.tiny", "--family", family, "--out", str(folder), "--dtype", dtype)
    command += ["--single-file", str(single_file)] if single_file else []
    run_measured(command + (["--full-size"] if size == "full" else []), folder.name)
    return folder


def ensure_model(size: str, family: str = "sd1", dtype: str = "float32") -> Path:
    """A diffusers folder of ``family``'s architecture: ``tiny`` or ``full`` (full-size, random weights), its
    weights stored in ``dtype`` (a full-size SDXL is built in bfloat16 to fit a small machine)."""
    folder = _model_folder(size, family, dtype)
    return folder if (folder / "model_index.json").is_file() else _build_model(size, family=family, dtype=dtype)


def ensure_single_file(size: str) -> Path:
    """The model of :func:`ensure_model` as an original-layout ``.safetensors`` file (building it rewrites the
    folder with the same weights: same seed)."""
    path = RESULTS / "models" / f"sd1-{size}.safetensors"
    if not path.is_file():
        _build_model(size, path)
    return path


def ensure_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    """Generated image/caption pairs (``<folder>/1_frnc``), written once."""
    from library.data.synthetic import write_dataset

    if not folder.is_dir():
        write_dataset(folder, count=count, repeats=1, seed=seed)
    return folder


def step_seconds(events: list[dict], skip_first: int = 1) -> list[float]:
    """Per-step seconds the trainer reported in its ``progress.jsonl`` events (the first steps warm up and are
    skipped)."""
    return [event["seconds_per_step"] for event in events if event["event"] == "step"][skip_first:]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_results(name: str, payload: dict) -> Path:
    """``results/<name>.json``, written atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    from library.atomic_files import write_text_atomic

    payload = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    return write_text_atomic(RESULTS / f"{name}.json", json.dumps(payload, indent=1))


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain aligned table on stdout."""
    cells = [headers] + [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
