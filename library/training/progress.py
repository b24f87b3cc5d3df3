"""How a run reports itself: ``progress.jsonl`` events and TensorBoard scalars/images.

``progress.jsonl`` is the machine-readable stream the GUI and the tests read (one JSON object per line: class_images,
start, step, epoch, validation, sample, checkpoint, compare, error, stopped, done). Each line is flushed when written so
a reader tailing the file never sees half an event. Only the main process writes (the caller passes
``enabled=False`` elsewhere).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ProgressLog:
    """Append-only JSON-lines event log."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._handle = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("a", encoding="utf-8")

    def event(self, kind: str, **fields: Any) -> None:
        if self._handle is None:
            return
        record = {"event": kind, "time": round(time.time(), 3), **{k: _jsonable(v) for k, v in fields.items()}}
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


class MetricsWriter:
    """TensorBoard scalars and images (a no-op when disabled or on non-main processes)."""

    def __init__(self, log_dir: Path, enabled: bool = True) -> None:
        self._writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self._writer is None:
            return
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, step)

    def image(self, tag: str, image, step: int) -> None:
        """Log a PIL image."""
        if self._writer is None:
            return
        import numpy as np

        self._writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class PhaseTimes:
    """Seconds spent in each named phase of a run's set-up (model load, caching, ...): logged, and carried by the
    ``start`` event so a slow start can be traced to its cause."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)

    def summary(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())


class SmoothedValue:
    """Exponential moving average with bias correction, for the smoothed loss on the bar and in TensorBoard."""

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self._average = 0.0
        self._count = 0

    def update(self, value: float) -> float:
        self._count += 1
        self._average = self.decay * self._average + (1 - self.decay) * value
        return self.value

    @property
    def value(self) -> float:
        if self._count == 0:
            return float("nan")
        return self._average / (1 - self.decay**self._count)

    def state_dict(self) -> dict[str, float]:
        return {"average": self._average, "count": self._count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._average = float(state["average"])
        self._count = int(state["count"])


class StepLosses:
    """Loss of one optimizer step, split into instance and prior (regularization) terms for DreamBooth runs.

    Sums and counts are reduced across processes, so every rank reports the same numbers.
    """

    def __init__(self, split: bool) -> None:
        self.split = split  # report the two terms (runs with regularization images)
        self._sums = [0.0] * 6  # total, batches, instance sum, instance count, prior sum, prior count

    def add(self, loss: float, per_sample: list[float], is_reg: list[bool]) -> None:
        self._sums[0] += loss
        self._sums[1] += 1
        for value, reg in zip(per_sample, is_reg):
            offset = 4 if reg else 2
            self._sums[offset] += value
            self._sums[offset + 1] += 1

    def reduced(self, accelerator) -> dict[str, float]:
        """``loss`` (the optimised objective); when split, ``instance`` and ``prior`` for the terms the step saw."""
        import torch

        sums = accelerator.reduce(torch.tensor(self._sums, dtype=torch.float64, device=accelerator.device), "sum")
        total, batches, instance, instances, prior, priors = (float(value) for value in sums)
        values = {"loss": total / batches}
        if self.split and instances:
            values["instance"] = instance / instances
        if self.split and priors:
            values["prior"] = prior / priors
        return values
