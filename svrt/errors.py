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


def one_sentence(exc: BaseException) -> str:
    """The sentence a log line or a status row shows for ``exc``: an :class:`SvrtError`'s own message, any other
    exception as ``Type: message`` on one line (at most 300 characters of it), so a batch summary or a streaming
    result never carries a multi-line traceback text."""
    if isinstance(exc, SvrtError):
        return str(exc)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"
