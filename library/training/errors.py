"""The failures a user can fix: reported as one line (exit code 1), never as a traceback."""

from library.config import ConfigError
from library.data.captions import CaptionError
from library.data.images import ImageLoadError
from library.models.errors import ModelLoadError
from library.networks import LoraFileError
from library.sampling.prompts import PromptFileError
from library.training.accelerator import TrainingSetupError
from library.training.state import ResumeError
from library.training.trainer import NonFiniteLossError

USER_ERRORS: tuple[type[Exception], ...] = (
    CaptionError,
    ConfigError,
    ImageLoadError,
    LoraFileError,
    ModelLoadError,
    NonFiniteLossError,
    PromptFileError,
    ResumeError,
    TrainingSetupError,
)
