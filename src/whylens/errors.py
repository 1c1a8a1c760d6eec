"""One error type for bad input, so the CLI can print it as one line.

Every check in whylens that rejects user input raises :class:`WhylensError` with a
message that names the argument or file and says what was expected. The CLI
catches it and prints ``whylens: error: <message>`` without a traceback.
"""

from __future__ import annotations


class WhylensError(ValueError):
    """Bad input: the message names the argument or file and what was expected."""

    def __init__(self, message: str):
        # One line only: a multi-line message would break the CLI's contract.
        super().__init__(" ".join(str(message).split()))


def check(condition: bool, message: str) -> None:
    """Raise :class:`WhylensError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WhylensError(message)
