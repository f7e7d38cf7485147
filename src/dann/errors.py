"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class DannError(Exception):
    """Base class: a problem with the user's input, config or files, not a bug in dann."""


class ConfigError(DannError, ValueError):
    """A configuration key, value, experiment or mode that does not exist or has the wrong type."""


class DataError(DannError):
    """A data file that is missing, truncated, corrupt or does not match its checksum."""
