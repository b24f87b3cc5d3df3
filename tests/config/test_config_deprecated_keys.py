"""Deprecated key spellings: still read, to the same effect, with one warning naming the key to write instead."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from library.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("sections", "old"),
    [({"top": 'network = "lora"'}, "network"), ({"dreambooth": 'network = "lora"'}, "dreambooth.network")],
    ids=["flat", "section"],
)
def test_old_dreambooth_network_key_in_a_file_loads_with_one_warning(write_config, run_toml, caplog, sections, old):
    new = load_config(write_config(run_toml(dreambooth='train_method = "lora"'), name="new.toml"))
    caplog.set_level(logging.WARNING)
    path = write_config(run_toml(**sections))
    config = load_config(path)
    assert _warnings(caplog) == [f"{path}: key '{old}' is deprecated; write 'dreambooth.train_method' (same values)"]
    assert config.dreambooth.train_method == "lora"
    assert config == new


@pytest.mark.parametrize("old", ["network", "dreambooth.network"])
def test_old_dreambooth_network_flag_loads_with_one_warning(write_config, run_toml, caplog, old):
    caplog.set_level(logging.WARNING)
    config = load_config(write_config(run_toml()), [f"--{old}", "lora"])
    assert _warnings(caplog) == [f"--{old} is deprecated; write --dreambooth.train_method (same values)"]
    assert config.dreambooth.train_method == "lora"


@pytest.mark.parametrize(
    ("sections", "flags"),
    [
        ({"dreambooth": 'train_method = "lora"'}, []),
        ({"top": 'train_method = "lora"'}, []),
        ({}, ["--dreambooth.train_method", "lora"]),
        ({}, ["--train_method", "lora"]),
    ],
    ids=["section", "flat", "flag", "flat-flag"],
)
def test_new_train_method_key_loads_without_a_warning(write_config, run_toml, caplog, sections, flags):
    caplog.set_level(logging.WARNING)
    config = load_config(write_config(run_toml(**sections)), flags)
    assert config.dreambooth.train_method == "lora"
    assert _warnings(caplog) == []


def test_old_and_new_spelling_together_are_one_key_set_twice(write_config, run_toml):
    path = write_config(run_toml(top='network = "lora"', dreambooth='train_method = "full"'))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: dreambooth.train_method: set twice (as 'network' and 'dreambooth.train_method'); keep one"
    )


@pytest.mark.slow
def test_config_tool_resolves_the_old_spelling_to_the_new_key(write_config, run_toml):
    path = write_config(run_toml(dreambooth='network = "lora"'))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "library.config", "dump", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: key 'dreambooth.network' is deprecated; write 'dreambooth.train_method' (same values)"
    ]
    dreambooth = tomllib.loads(result.stdout)["dreambooth"]
    assert dreambooth["train_method"] == "lora" and "network" not in dreambooth
