"""Every size cap of the wire contract, in one place. Defaults fit the portable MQTT subset
(packets under 1 MB). A decoder is handed a ``Limits`` (a ``TrustedRoot`` carries one) and checks
it before it decodes or allocates; everything larger is refused as ``OversizedMessage`` (or
``MalformedMessage`` where the cap is part of a field's format)."""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

#: What a release is cut into unless its publisher says otherwise (a default, not a cap). 512 KiB
#: since issue 14: per-chunk work (a publish, a PUBACK, a frame to verify and write, in three
#: processes) is what bounds a delivery's throughput on a machine's CPU, and halving the chunks
#: took ``delivery_ratio`` from 0.58-0.63 to 0.71-0.73 (docs/BENCHMARKS.md). Slow, often cut
#: links (a chunk is resent whole after a cut) want smaller ones: ``release --chunk-size``.
DEFAULT_CHUNK_SIZE = 512 * KIB
#: Chunks a device asks for and has not received yet, at most (pull-based flow control): 8 MiB
#: in flight at the default chunk size (measured: 16 MiB is no faster).
DEFAULT_WINDOW = 16
#: Chunks per subscription block: an edge subscribes to the blocks it still lacks chunks in.
DEFAULT_BLOCK_CHUNKS = 16


@dataclass(frozen=True)
class Limits:
    """Caps on what a decoder accepts, grouped by the message they bound."""

    # --- whole messages, checked before decoding ------------------------------------------
    #: a signed envelope (manifest, index, command)
    max_envelope_bytes: int = 1000 * 1000
    #: a release key certificate (root-signed)
    max_certificate_bytes: int = 4 * KIB
    #: a device message: state, status, event, metrics sample, chunk request
    max_message_bytes: int = 64 * KIB
    #: the body of a signed command
    max_command_bytes: int = 64 * KIB
    #: one root rotation (envelope and body)
    max_root_rotation_bytes: int = 4 * KIB
    #: the root-signed revocation list
    max_revocations_bytes: int = 64 * KIB

    # --- trust ----------------------------------------------------------------------------
    #: rotations in the root chain an edge follows
    max_root_chain: int = 64
    #: release keys on the revocation list
    max_revoked_keys: int = 1024

    # --- releases (the manifest) ----------------------------------------------------------
    #: a chunk frame stays under 1 MB on the wire, header included (RabbitMQ, NATS, AWS IoT)
    max_chunk_size: int = 1000 * 1000 - 1024
    min_chunk_size: int = 4 * KIB
    max_chunks: int = 30_000
    max_block_chunks: int = 4096
    max_model_bytes: int = 8 * 1024 * MIB
    #: tensor bytes of the acceptance vectors signed into a manifest (one message)
    max_acceptance_bytes: int = 256 * KIB
    max_acceptance_cases: int = 16
    #: tensors per side (inputs, outputs) of one acceptance case
    max_acceptance_tensors: int = 16
    max_tensor_rank: int = 8

    # --- deltas (protocol/delta.py) ---------------------------------------------------------
    #: deltas one manifest offers (one per base release)
    max_deltas: int = 4
    #: a delta's header (its dictionary ranges are most of it)
    max_delta_header_bytes: int = 1 * MIB
    #: the non-tensor bytes of a model (graph, metadata) a delta carries whole, and the base's
    #: that serve as their dictionary: both are held in memory while a delta is applied
    max_delta_rest_bytes: int = 16 * MIB
    #: one XOR or literal record: what applying holds in memory at once (a few times this)
    max_delta_segment_bytes: int = 4 * MIB

    # --- text models (the file's metadata) ------------------------------------------------
    max_tokenizer_bytes: int = 32 * MIB
    max_text_tokens: int = 8192
    max_embedding_dimensions: int = 16384

    # --- drift (protocol/drift.py) --------------------------------------------------------
    #: the vectors of a reference profile signed into a manifest (centroid, directions, edges)
    max_drift_profile_bytes: int = 64 * KIB
    max_drift_directions: int = 64
    max_drift_bins: int = 32
    max_drift_thresholds: int = 16
    #: one drift telemetry sample
    max_drift_sample_bytes: int = 2 * KIB

    # --- the deployment index -------------------------------------------------------------
    max_targets: int = 256
    max_variants: int = 16
    max_variant_rules: int = 16
    max_rule_tags: int = 8
    max_config_entries: int = 64
    max_selector_devices: int = 1024
    max_selector_tags: int = 16
    max_tag_chars: int = 128
    max_rollout_id_chars: int = 128

    # --- device messages ------------------------------------------------------------------
    max_request_ranges: int = 1024
    #: models in one metrics sample
    max_models_reported: int = 64
    #: a name (fleet, device, model, variant) is one topic level of 1 to this many characters
    max_name_length: int = 64

    @property
    def max_root_chain_bytes(self) -> int:
        """The whole root chain: every rotation it may hold, at most."""
        return self.max_root_chain * self.max_root_rotation_bytes


DEFAULT_LIMITS = Limits()
