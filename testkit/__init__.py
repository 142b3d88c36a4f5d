"""Tools for tests, benchmarks and the demo: a throwaway Mosquitto on a free loopback port
(``local_broker``), a fault-injecting TCP proxy (``faultproxy``), synthetic ONNX models
(``synthetic_models``), ``modelcast`` commands as child processes (``cli_process``,
``edge_process``, read through ``procfs``), a plain paho client (``plain_mqtt``) that records
topics (``mqtt_recorder``) and a decoded view of a fleet's devices (``fleet_watch``).

Production code (``coordinator``, ``edge_node``) never imports it, and it imports neither: it
drives them as processes, over MQTT.
"""
