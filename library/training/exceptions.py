"""The failures training raises for a user to fix, in a module that imports nothing, so any part of training can
raise them without importing another part (:mod:`library.training.errors` lists every user error of a run)."""


class TrainingSetupError(Exception):
    """A configuration that cannot run on this machine; the message says what to change."""


class ResumeError(Exception):
    """A resume request that cannot be honoured; the message says what to do."""


class NonFiniteLossError(Exception):
    """The loss became NaN or infinite; the message names the step and the last good file."""


class OutputError(Exception):
    """A run's output that cannot be written (full disk, read-only folder, a file in the folder's place); the
    message names the folder and the file and says what is left of earlier output."""
