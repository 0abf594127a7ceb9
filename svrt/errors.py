"""The one exception type users see: a single sentence that names the file, the key and what was expected."""


class SvrtError(Exception):
    """Bad input or an impossible configuration.

    The message is one sentence a person can act on; the command line prints it without a
    traceback (see :mod:`svrt.cli`).
    """


def require(condition: bool, message: str) -> None:
    """Raise :class:`SvrtError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise SvrtError(message)
