"""Re-export: the proxy lives in modelcast so the demo can use it too."""

from testkit.faultproxy import BytesSpec, FaultProxy, SecondsSpec

__all__ = ["BytesSpec", "FaultProxy", "SecondsSpec"]
