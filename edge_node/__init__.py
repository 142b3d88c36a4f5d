"""The modelcast edge agent: resumable download, verification, activation, reporting."""

from .agent import EdgeAgent, load_trust
from .config import EdgeConfig

__all__ = ["EdgeAgent", "EdgeConfig", "load_trust"]
