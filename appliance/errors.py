"""One root error class for everything Sluis reports to an operator.

Each error says what is missing or wrong in words a security officer or operator can act on;
the CLI prints the message without a traceback and exits non-zero.
"""


class SluisError(Exception):
    """Base class of every error Sluis raises on purpose."""


class ConfigurationError(SluisError):
    """A setting is missing, malformed or points to something that does not exist."""
