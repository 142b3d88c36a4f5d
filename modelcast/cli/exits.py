"""How a command ends: every error it may meet, mapped to an exit code in one table.

``main`` catches what a command raises and looks it up in ``EXIT_RULES`` (first match wins):
the exit code, and what is said on stderr. Anything the table does not name is a bug and keeps
its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocol.errors import ModelcastError, SequenceError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line argparse could not read. ``CommandParser.error`` raises it instead of
    exiting, so that bad usage ends through the table like everything else; it carries what
    argparse would have printed (the usage of the (sub)command, and its ``prog``)."""

    def __init__(self, message: str, *, usage: str, prog: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.prog = prog


def _say_nothing(_exc: BaseException, _command: str) -> str:
    return ""


def _say_usage(exc: BaseException, _command: str) -> str:
    assert isinstance(exc, UsageError)
    return f"{exc.usage}{exc.prog}: error: {exc.message}\n"


def _say_failed(exc: BaseException, command: str) -> str:
    return f"modelcast {command}: error: {exc}\n"


@dataclass(frozen=True)
class ExitRule:
    """Errors of these types end the command with ``code``; ``say`` is the text for stderr,
    given the error and the command's name."""

    errors: tuple[type[BaseException], ...]
    code: int
    say: Callable[[BaseException, str], str]


EXIT_RULES: tuple[ExitRule, ...] = (
    ExitRule((KeyboardInterrupt,), EXIT_INTERRUPTED, _say_nothing),
    ExitRule((UsageError,), EXIT_USAGE, _say_usage),
    # every package's error root is a ModelcastError; the built-ins are what the standard
    # library and the layers below raise for bad values and for files and sockets
    ExitRule((ModelcastError, ValueError, OSError), EXIT_FAILED, _say_failed),
)


def exit_rule(exc: BaseException) -> ExitRule | None:
    """The rule for ``exc``, or None: not an error a command ends with (a bug, ``SystemExit``)."""
    if isinstance(exc, SequenceError):  # a state object driven out of order: a bug, traced
        return None
    for rule in EXIT_RULES:
        if isinstance(exc, rule.errors):
            return rule
    return None
