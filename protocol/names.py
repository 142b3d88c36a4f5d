"""Validation of the identifiers that become MQTT topic levels.

The portable subset forbids dots (RabbitMQ routing keys) and, of course, ``/ + #``; we allow
``[A-Za-z0-9_-]``, 1-64 characters, so a name is always exactly one topic level.
"""

from __future__ import annotations

import re

from .errors import MalformedMessage
from .limits import DEFAULT_LIMITS

#: A name is a format, not a per-decoder setting: every party must agree on it.
_MOST = DEFAULT_LIMITS.max_name_length
_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,{_MOST}}}")


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a valid topic-level identifier, else raise ``MalformedMessage``."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise MalformedMessage(f"{what} must match [A-Za-z0-9_-]{{1,{_MOST}}}, got {value!r}")
    return value


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None
