"""quickstart.sh, run_gui.sh, run_tests.sh and scripts/setup_env.sh as real bash processes, on a stand-in venv.

The venv's `pip` and `python` are shims that record how they were called, so the tests see exactly which installs a
script starts and which command it hands its arguments to, without a multi-minute install.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # these tests start processes

REPO = Path(__file__).resolve().parents[1]
SHIM = '#!/bin/sh\necho "$(basename "$0") $*" >> "$FURNACE_SHIM_LOG"\n'


@pytest.fixture
def venv(tmp_path) -> Path:
    """An empty stand-in venv whose bin/python and bin/pip only record their arguments."""
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    for name in ("python", "pip"):
        shim = folder / "bin" / name
        shim.write_text(SHIM, encoding="utf-8")
        shim.chmod(0o755)
    return folder


def run(venv: Path, command: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `command` in the repo with the stand-in venv; returns the result and the shim calls it made."""
    log = venv.parent / "calls.log"
    log.unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(venv.parent), "FURNACE_VENV": str(venv),
           "FURNACE_SHIM_LOG": str(log), "FURNACE_TEST_WORKERS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return result, calls


def setup(venv: Path, extras: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    return run(venv, ["bash", "-c", 'source scripts/setup_env.sh "$1"', "setup", extras])


def pip_calls(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith("pip ")]


def test_setup_installs_once_and_a_venv_with_more_extras_satisfies_fewer(venv):
    result, calls = setup(venv, "gui,dev,distributed")
    assert result.returncode == 0, result.stderr
    installs = pip_calls(calls)
    assert len(installs) == 3 and installs[0].endswith("torch==2.13.0")
    assert installs[1].endswith(f"-e {REPO}[dev,distributed,gui]")
    stamp = (venv / ".furnace-installed").read_text(encoding="utf-8").split()
    assert stamp[1] == "dev,distributed,gui"

    for fewer in ("gui", "dev,gui", "", "distributed"):   # what run_gui.sh and quickstart.sh ask for
        result, calls = setup(venv, fewer)
        assert result.returncode == 0 and calls == [], (fewer, calls, result.stderr)
        assert "installing" not in result.stdout

    # A changed pyproject.toml (another hash) installs again, keeping what is asked for.
    (venv / ".furnace-installed").write_text(f"0123456789abcdef {stamp[1]}\n", encoding="utf-8")
    result, calls = setup(venv, "gui")
    assert pip_calls(calls)[1].endswith(f"-e {REPO}[gui]")
    assert (venv / ".furnace-installed").read_text(encoding="utf-8") == f"{stamp[0]} gui\n"
    result, calls = setup(venv, "dev")   # an extra not installed yet: the union, so gui stays
    assert pip_calls(calls)[1].endswith(f"-e {REPO}[dev,gui]")
    assert setup(venv, "gui")[1] == []


def test_setup_builds_deepspeeds_ops_with_the_distributed_extra_and_retries_a_failed_build(venv):
    result, calls = setup(venv, "gui")
    assert result.returncode == 0 and not any("deepspeed_ops" in call for call in calls), calls
    result, calls = setup(venv, "distributed")
    assert result.returncode == 0, result.stderr
    assert calls[-1] == "python -m library.training.deepspeed_ops" and pip_calls(calls[:-1]) == calls[:-1]

    stamp = venv / ".furnace-installed"
    stamp.unlink()
    (venv / "bin" / "python").write_text(SHIM + "exit 1\n", encoding="utf-8")  # a build that fails
    result, calls = setup(venv, "distributed")
    assert result.returncode == 1 and "building DeepSpeed's ops failed" in result.stderr
    assert not stamp.exists()  # so the next setup installs and builds again


def test_deepspeed_ops_are_built_into_the_venv():
    """The command setup runs, for real: both ops end up in <venv>/torch_extensions, where runs look for them, and a
    run started without the venv on PATH (accelerate launch from another shell) finds them built: torch must build
    with the same ninja, whose build log another ninja version does not read (it would build them again)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is the optional 'distributed' extra")
    venv_bin = str(Path(sys.prefix) / "bin")
    outside = os.pathsep.join(part for part in os.environ.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env = {key: value for key, value in os.environ.items() if key != "TORCH_EXTENSIONS_DIR"}

    def build(path: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "library.training.deepspeed_ops"], cwd=REPO,
                                env={**env, "PATH": path}, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    result = build(os.pathsep.join([venv_bin, outside]))   # as setup_env.sh and the scripts run it
    folder = Path(sys.prefix) / "torch_extensions"
    assert f"DeepSpeed ops in {folder}: cpu_adam, deepspeed_shm_comm" in result.stdout
    built = folder / "cpu_adam" / "cpu_adam.so"
    assert built.is_file() and (folder / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").is_file()
    before = built.stat().st_mtime_ns
    build(outside)
    assert built.stat().st_mtime_ns == before


def test_setup_refuses_a_callers_arguments_as_extras(venv):
    result, calls = setup(venv, "--max_train_steps")
    assert result.returncode == 2 and calls == []
    assert 'got "--max_train_steps"' in result.stderr and "first argument" in result.stderr


@pytest.mark.parametrize(("script", "extras", "args", "expected"), [
    ("quickstart.sh", "", ["--max_train_steps", "50"],
     "python train_network.py --config configs/quickstart.toml --max_train_steps 50"),
    ("run_gui.sh", "gui", ["--port", "28001"], "python -m library.gui --port 28001"),
    ("run_tests.sh", "dev,gui,distributed", ["-m", "not slow"], "python -m pytest -n 1 --dist loadscope -m not slow"),
])
def test_scripts_skip_setup_when_nothing_changed_and_pass_their_arguments_on(venv, script, extras, args, expected):
    """Each script on a venv set up with just the extras it needs: no install, its arguments reach its command."""
    assert setup(venv, extras)[0].returncode == 0
    result, calls = run(venv, ["bash", f"./{script}", *args])
    assert result.returncode == 0, result.stderr
    assert pip_calls(calls) == [] and "installing" not in result.stdout
    assert calls[-1] == expected
