"""The modelcast edge agent: resumable download, verification, activation, reporting."""

from .agent import EdgeAgent
from .config import EdgeConfig
from .trust_store import load_trust

__all__ = ["EdgeAgent", "EdgeConfig", "load_trust"]
