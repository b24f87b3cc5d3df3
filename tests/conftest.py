"""Shared test fixtures: offline environment and tiny models built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers share the cores: trainer subprocesses with a thread per core each would spin against each other.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@dataclass(frozen=True)
class TinyModel:
    """A tiny model saved both ways: a diffusers folder and an original-layout single file."""

    family: str
    folder: Path
    single_file: Path


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tiny models run faster on one thread; two threads on a busy 2-core machine spin against each other.
    (Trainer subprocesses keep torch's default.)"""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """Build (once per session and family) a tiny model with seed 0; returns a function family -> TinyModel."""
    from library.models.tiny import write_tiny_model

    built: dict[str, TinyModel] = {}
    root = tmp_path_factory.mktemp("tiny-models")

    def get(family: str) -> TinyModel:
        if family not in built:
            folder = root / family
            single_file = root / f"{family}.safetensors"
            write_tiny_model(family, folder, single_file, seed=0)
            built[family] = TinyModel(family, folder, single_file)
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_sd1(tiny_model_factory) -> TinyModel:
    return tiny_model_factory("sd1")


class SlowWorkInFastTest(Exception):
    """Raised when a test without the ``slow`` marker starts a trainer or another process."""


def _forbid(what: str):
    def refuse(*args, **kwargs):
        raise SlowWorkInFastTest(f"this test starts {what}: mark it (or its module) @pytest.mark.slow")

    return refuse


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """The one rule of the ``slow`` marker, enforced: a test that starts a trainer or another process is slow.

    For every other test (and its fixtures), starting a subprocess or a training loop raises, so
    ``-m "not slow"`` stays a loop of a few minutes and a new test cannot quietly break it.
    """
    if item.get_closest_marker("slow"):
        yield
        return
    import subprocess

    from prewarmed_python import Zygote

    from library.training.trainer import Trainer

    patch = pytest.MonkeyPatch()
    patch.setattr(subprocess.Popen, "__init__", _forbid("a subprocess"))
    patch.setattr(Zygote, "_fork", _forbid("a subprocess"))  # behind both run and start
    patch.setattr(Trainer, "run", _forbid("a trainer"))
    try:
        yield
    finally:
        patch.undo()


def pytest_collection_modifyitems(config, items):
    """Slow tests first (otherwise in collection order): with one worker per core, a long module handed out last
    would keep one core busy while the other sits idle at the end of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
