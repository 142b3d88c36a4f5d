"""The application's error root: a command that cannot do what it was asked. The command line
maps every ``ModelcastError`` (this one and those of the layers below) to an exit code in one
place, ``modelcast.cli.exits``."""

from __future__ import annotations

from protocol.errors import ModelcastError


class CommandError(ModelcastError, ValueError):
    """A command's input or situation does not allow it (the message says why)."""


class MalformedText(CommandError):
    """Operator text that does not parse (a selector, variant rule, setting, ``NAME@VERSION``).
    Shown as ``malformed: ...``, the words these errors always had."""

    def __str__(self) -> str:
        return f"malformed: {super().__str__()}"
