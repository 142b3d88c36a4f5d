"""The runtime both roles share: the MQTT session, durable files, broker URLs, client
credentials and ONNX metadata. It sits between ``protocol`` (pure, no I/O) and the two roles
(``coordinator``, ``edge_node``), which import it and never each other; see
docs/ARCHITECTURE.md.
"""

#: The version of the whole distribution (pyproject.toml reads it from here).
__version__ = "0.1.0"
