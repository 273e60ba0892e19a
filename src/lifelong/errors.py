"""Errors a user can fix: raised before training starts, printed without a stack trace."""


class ConfigError(ValueError):
    """A configuration key has a value the run cannot use; the message names the key and the fix."""


class DatasetNotFound(FileNotFoundError):
    """The dataset files are missing and could not be downloaded; the message says where to put them."""
