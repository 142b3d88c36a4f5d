"""Where Mosquitto and its profiles are: the broker binary, ``mosquitto_passwd``, and the
profiles of ``broker_config/`` (development and production)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BROKER_CONFIG_DIR = Path(__file__).resolve().parents[1] / "broker_config"
DEV_CONF = BROKER_CONFIG_DIR / "dev.conf"
PRODUCTION_CONF = BROKER_CONFIG_DIR / "production.conf"

_FALLBACK_BINARIES = ("/usr/sbin/mosquitto",)
_PASSWD_FALLBACKS = ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (PATH first, then Debian's /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _FALLBACK_BINARIES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_mosquitto_passwd() -> str:
    """The ``mosquitto_passwd`` binary (PATH, next to mosquitto, Debian's /usr/bin)."""
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    broker = find_mosquitto()
    candidates = [str(Path(broker).with_name("mosquitto_passwd"))] if broker else []
    for candidate in [*candidates, *_PASSWD_FALLBACKS]:
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(
        "mosquitto_passwd not found (it comes with the mosquitto package: apt-get install "
        "mosquitto)"
    )
