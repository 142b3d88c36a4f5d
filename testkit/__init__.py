"""Tools for tests, benchmarks and the demo: a throwaway Mosquitto on a free loopback port
(``local_broker``), a fault-injecting TCP proxy (``faultproxy``) and synthetic ONNX models
(``synthetic_models``). Production code (``coordinator``, ``edge_node``) never imports it.
"""
