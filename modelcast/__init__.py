"""modelcast: signed, resumable delivery of ONNX models to edge fleets over MQTT."""

__version__ = "0.1.0"
