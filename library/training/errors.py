"""The failures a user can fix: reported as one line (exit code 1), never as a traceback. Config errors are not
among them: they exit with code 2 (see ``library.training.cli``)."""

from library.data.captions import CaptionError
from library.data.images import ImageLoadError
from library.data.records import DatasetError
from library.folder_lock import FolderInUse
from library.models.errors import ModelLoadError
from library.networks import LoraFileError
from library.networks.embedding_file import EmbeddingFileError
from library.sampling.prompts import PromptFileError
from library.training.exceptions import NonFiniteLossError, OutputError, ResumeError, TrainingSetupError

USER_ERRORS: tuple[type[Exception], ...] = (
    CaptionError,
    DatasetError,
    EmbeddingFileError,
    FolderInUse,
    ImageLoadError,
    LoraFileError,
    ModelLoadError,
    NonFiniteLossError,
    OutputError,
    PromptFileError,
    ResumeError,
    TrainingSetupError,
)
