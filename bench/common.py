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
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
GIB = 1024**3


@dataclass(frozen=True)
class Measured:
    """One finished process: wall seconds and peak resident memory (bytes)."""

    wall: float
    peak_rss: int


def run_measured(command: list[str], log_name: str, env: dict[str, str] | None = None) -> Measured:
    """Run ``command`` to the end; its output goes to ``results/logs/<log_name>.log``; fails loudly on error."""
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{log_name}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(env or {})}
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=full_env)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed ({process.returncode}); see {log_path}")
    return Measured(wall, usage.ru_maxrss * 1024)  # ru_maxrss is in KiB on Linux


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def ensure_model(size: str) -> Path:
    """A diffusers folder of the sd1 architecture: ``tiny`` or ``full`` (full-size UNet, random weights)."""
    folder = RESULTS / "models" / f"sd1-{size}"
    if not (folder / "model_index.json").is_file():
        command = python("-m", "library.models.tiny", "--family", "sd1", "--out", str(folder))
        run_measured(command + (["--full-size"] if size == "full" else []), f"model-{size}")
    return folder


def ensure_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    """Generated image/caption pairs (``<folder>/1_frnc``), written once."""
    from library.data.synthetic import write_dataset

    if not folder.is_dir():
        write_dataset(folder, count=count, repeats=1, seed=seed)
    return folder


def step_seconds(progress_file: Path, skip_first: int = 1) -> list[float]:
    """Per-step seconds the trainer reported in ``progress.jsonl`` (the first steps warm up and are skipped)."""
    events = [json.loads(line) for line in progress_file.read_text(encoding="utf-8").splitlines()]
    return [event["seconds_per_step"] for event in events if event["event"] == "step"][skip_first:]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_results(name: str, payload: dict) -> Path:
    """``results/<name>.json``, written atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}, indent=1),
                       encoding="utf-8")
    os.replace(staging, path)
    return path


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    """A plain aligned table on stdout."""
    cells = [headers] + [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
