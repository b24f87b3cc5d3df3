"""The ``slow`` marker's rule is enforced, not just documented (see ``pytest_runtest_protocol`` in conftest)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from library.training.trainer import Trainer


def test_a_fast_test_cannot_start_a_process():
    with pytest.raises(Exception, match="starts a subprocess: mark it") as refused:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert type(refused.value).__name__ == "SlowWorkInFastTest"


def test_a_fast_test_cannot_start_a_trainer():
    with pytest.raises(Exception, match="starts a trainer: mark it"):
        Trainer.run(object())


def test_a_fast_test_cannot_fork_from_the_prewarmed_interpreter(tmp_path):
    from prewarmed_python import Zygote

    class Warm:
        """A zygote that is already running (as when an earlier slow test started it)."""

        def poll(self):
            return None

    zygote = Zygote(tmp_path)
    zygote.process = Warm()
    for fork in (lambda: zygote.run(["x.py"], {}, 1), lambda: zygote.start(["x.py"], {}, tmp_path, tmp_path)):
        with pytest.raises(Exception, match="starts a subprocess: mark it"):
            fork()


@pytest.mark.slow
def test_a_slow_test_may_start_a_process():
    assert subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True,
                          check=True).stdout.strip() == "42"
