"""``python SCRIPT ARGS`` / ``python -m MODULE ARGS`` as real processes that start without paying for their imports.

A trainer run on a tiny model spends most of its CPU time importing torch, diffusers, transformers and peft. The
suite runs a few hundred of them, so each pytest worker starts one plain interpreter (the zygote) that imports those
libraries once and then forks a child per command. A child is a separate process with its own exit code, stdout,
stderr, environment, working folder and signal handlers; what it lacks compared with a fresh interpreter is only the
import time. The zygote never runs pytest, so no test state (warning capture, logging handlers, accelerate's
singletons) reaches a child.

Commands whose point is how a fresh interpreter starts (what it imports, what it prints while importing, its peak
memory) must not come from here: :func:`trainer_cli.run_python` takes ``fresh=True`` for those.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PRELOADED = (
    "torch",
    "safetensors.torch",
    "PIL.Image",
    "accelerate",
    "diffusers",
    "transformers",
    "peft",
    "torch.utils.tensorboard",
    "library.training.trainer",
    "library.training.lora_weights",
    "library.training.full_weights",
)
"""Imported by the zygote: what nearly every trainer and tool run imports anyway (the libraries' own lazy modules
such as diffusers' model classes are touched in :func:`_warm`)."""


def _warm() -> None:
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)
    import diffusers
    import transformers

    for lazy in (diffusers.AutoencoderKL, diffusers.UNet2DConditionModel, transformers.CLIPTextModel,
                 transformers.CLIPTextModelWithProjection, transformers.CLIPTokenizer):
        assert lazy is not None  # touching a lazy attribute imports its module


def limit_file_size(limit: int) -> None:
    """For this process: a write beyond ``limit`` bytes per file fails with EFBIG, as on a full disk (instead of the
    default SIGXFSZ, which would kill it)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _child(request: dict) -> None:
    """Runs in the forked child: become the requested command, then exit with its code (never returns)."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, so a timeout can end it and whatever it started
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_TRUNC)
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_TRUNC)
        for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(source, target)
            os.close(source)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if request["file_size_limit"] is not None:
            limit_file_size(request["file_size_limit"])
        argv = request["argv"]
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as exit_:
        if exit_.code is None:
            code = 0
        elif isinstance(exit_.code, int):
            code = exit_.code
        else:
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001  (what an interpreter does with an uncaught exception)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """The zygote's loop: one JSON request per line on stdin; answers the child's pid, then its exit code."""
    _warm()
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)


class Zygote:
    """One per pytest worker, started on first use; runs one command at a time."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        paths = [str(Path(__file__).parent), str(self.repo), os.environ.get("PYTHONPATH")]
        process = subprocess.Popen(
            [sys.executable, "-c", "import prewarmed_python; prewarmed_python.serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=self.repo,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))},
        )
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the pre-warmed interpreter did not start; run the command with fresh=True to see why")
        return process

    def _fork(self, argv: list[str], env: dict[str, str], stdout: Path, stderr: Path,
              file_size_limit: int | None) -> int:
        """Send one command; returns the child's pid (its exit code follows on the zygote's stdout)."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        request = {"argv": argv, "env": env, "cwd": str(self.repo), "stdout": str(stdout), "stderr": str(stderr),
                   "file_size_limit": file_size_limit}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["pid"]

    def _exit_code(self) -> int:
        return json.loads(self.process.stdout.readline())["code"]

    def start(self, argv: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> Started:
        """Start a command without waiting for it, for a test that signals it; the zygote serves nothing else until
        it has ended and been waited for."""
        return Started(self, self._fork(argv, env, stdout, stderr, None))

    def run(self, argv: list[str], env: dict[str, str], timeout: float,
            file_size_limit: int | None = None) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            out.touch()
            err.touch()
            pid = self._fork(argv, env, out, err, file_size_limit)
            timed_out = threading.Event()

            def kill() -> None:
                timed_out.set()
                os.killpg(pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                code = self._exit_code()
            finally:
                timer.cancel()
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if timed_out.is_set():
            raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr)
        return subprocess.CompletedProcess([sys.executable, *argv], code, stdout, stderr)


class Started:
    """A command the zygote forked and did not wait for (``Zygote.start``): the subset of ``subprocess.Popen`` a
    test that signals its process uses."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the process has ended (the zygote reaps it at once), else None."""
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return self.wait()
        return self.returncode

    def send_signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def kill(self) -> None:
        """SIGKILL to the process and whatever it started (its own process group)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self.zygote._exit_code()
        return self.returncode
