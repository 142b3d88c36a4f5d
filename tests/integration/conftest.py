"""Fixtures shared by the integration tests."""

from tests.support.env import env

__all__ = ["env"]
