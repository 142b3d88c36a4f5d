"""Tools for tests, benchmarks and the demo: a throwaway Mosquitto on a free loopback port
(``local_broker``), a fault-injecting TCP proxy (``faultproxy``), synthetic ONNX models
(``synthetic_models``) and a plain paho client (``plain_mqtt``) that records topics
(``mqtt_recorder``). Production code (``coordinator``, ``edge_node``) never imports it.
"""
