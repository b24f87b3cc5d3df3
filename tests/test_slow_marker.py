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


@pytest.mark.slow
def test_a_slow_test_may_start_a_process():
    assert subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True,
                          check=True).stdout.strip() == "42"
