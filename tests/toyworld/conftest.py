"""The toy-world base model, its scores and the quickstart dataset, shared by the learning tests."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from library.models.loader import BaseModel, load_base_model
from library.toyworld.base_model import base_model_file
from library.toyworld.datasets import write_concept_dataset
from library.toyworld.scores import Scores, score_model
from library.toyworld.world import QUICKSTART_CONCEPT

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

CONCEPT_SEEDS = range(20)  # 20 samples of the trigger prompt
PRIOR_SEEDS = range(2)  # 64 samples: every pretraining colour x shape prompt twice
CLASS_SEEDS = range(24)  # 24 samples of the class prompt


def score(model: BaseModel) -> Scores:
    return score_model(model, QUICKSTART_CONCEPT, CONCEPT_SEEDS, PRIOR_SEEDS, CLASS_SEEDS)


@pytest.fixture(scope="session")
def toy_base() -> BaseModel:
    return load_base_model(base_model_file())


@pytest.fixture(scope="session")
def base_scores(toy_base, tmp_path_factory) -> Scores:
    """Scored once per test session, also across pytest-xdist workers: the first worker to ask renders and judges,
    and writes the figures to the session's folder (above every worker's own); the others wait for them."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    record = shared / "toyworld-base-scores.json"
    with open(shared / "toyworld-base-scores.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.is_file():
            record.write_text(json.dumps(asdict(score(toy_base))), encoding="utf-8")
        return Scores(**json.loads(record.read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def quickstart_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quickstart")
    write_concept_dataset(root, QUICKSTART_CONCEPT)
    return root
