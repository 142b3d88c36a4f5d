"""modelcast: signed, resumable delivery of ONNX models to edge fleets over MQTT.

This package is the application: the command line, the demo and what an operator runs. The
layers under it are ``protocol`` (the wire contract), ``runtime`` (what both roles share),
``coordinator`` and ``edge_node``; see docs/ARCHITECTURE.md.
"""

from runtime import __version__

__all__ = ["__version__"]
