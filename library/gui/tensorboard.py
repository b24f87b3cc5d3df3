"""TensorBoard as a child process of the server, pointed at the runs folder; each run is one of its runs.

It listens on loopback only and serves under `PREFIX`, so the server can proxy it (tensorboard_proxy.py) and the
pages work when the GUI is reached through its one port.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)
PREFIX = "/tensorboard"


class TensorBoard:
    """`tensorboard --logdir <runs root> --host 127.0.0.1 --port P --path_prefix /tensorboard`; port 0: not started."""

    def __init__(self, logdir: Path, port: int) -> None:
        self.logdir = logdir
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if not self.port:
            return
        executable = Path(sys.executable).with_name("tensorboard")
        command = [str(executable), "--logdir", str(self.logdir), "--host", "127.0.0.1", "--port", str(self.port),
                   "--path_prefix", PREFIX]
        try:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        except OSError as error:
            logger.warning("TensorBoard not started (%s); install the tensorboard package", error)
            return
        logger.info("TensorBoard on http://127.0.0.1:%d%s/ (runs in %s)", self.port, PREFIX, self.logdir)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    @property
    def upstream(self) -> str | None:
        """Where the child listens (loopback), or None when it was not started."""
        return f"http://127.0.0.1:{self.port}" if self.process else None

    def url(self, run_id: str | None = None) -> str | None:
        """The proxied page, showing only one run's scalars when `run_id` is given (TensorBoard's `runFilter`)."""
        if not self.process:
            return None
        return f"{PREFIX}/?runFilter={quote(run_id)}#timeseries" if run_id else f"{PREFIX}/"
