"""The contract of a user error (the design card): one :class:`SvrtError` sentence, one line ending in a
full stop, naming what is wrong (the file, key, option and what was expected)."""

import pytest

from svrt.errors import SvrtError


def sentence(exc, *needles) -> str:
    """The message of ``exc``, checked: an SvrtError, one sentence, containing every needle."""
    assert isinstance(exc, SvrtError), repr(exc)
    msg = str(exc)
    assert "\n" not in msg and msg.rstrip().endswith("."), msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def one_sentence(result, *needles) -> str:
    """A command (a click CliRunner result) failed with one SvrtError sentence containing every needle."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SvrtError), (result.output, repr(result.exception))
    return sentence(result.exception, *needles)


def error_of(fn, *needles) -> str:
    """``fn()`` raised one SvrtError sentence containing every needle."""
    with pytest.raises(SvrtError) as info:
        fn()
    return sentence(info.value, *needles)
