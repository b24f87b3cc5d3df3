"""The error every model-loading failure is reported as: one message that says what to do."""


class ModelLoadError(Exception):
    """A base model, VAE or checkpoint could not be loaded; ``str()`` is a complete user-facing message."""
