"""Size caps applied before any decoding. Defaults fit the portable MQTT subset (packets < 1 MB)."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

DEFAULT_CHUNK_SIZE = 256 * KIB
#: A chunk frame must stay under 1 MB on the wire (header included) for RabbitMQ/NATS/EMQX/AWS IoT.
MAX_CHUNK_SIZE = 1000 * 1000 - 1024
MIN_CHUNK_SIZE = 4 * KIB
#: Acceptance vectors signed into a manifest: tensor bytes at most (the manifest is one message)
MAX_ACCEPTANCE_BYTES = 256 * KIB
#: Chunks per subscription block: an edge subscribes to the blocks it still lacks chunks in.
DEFAULT_BLOCK_CHUNKS = 16


@dataclass(frozen=True)
class Limits:
    """Caps on what a decoder accepts. Everything larger is refused as ``OversizedMessage``."""

    max_envelope_bytes: int = 1000 * 1000
    max_certificate_bytes: int = 4 * KIB
    max_message_bytes: int = 64 * KIB
    max_chunks: int = 30_000
    max_model_bytes: int = 8 * 1024 * MIB
    max_request_ranges: int = 1024
    max_targets: int = 256
    max_name_length: int = 64


DEFAULT_LIMITS = Limits()
