"""modelcast's wire contract: pure functions and state objects over bytes. No I/O here.

One vocabulary throughout:

* ``X.encode() -> bytes`` and ``X.decode(data, limits) -> X``: a value and its msgpack bytes (for
  a signed document, its unsigned body). Every decoder checks ``Limits`` before it decodes.
* ``X.sign(key, cert) -> bytes`` and ``open_x(trust, data, ...) -> X``: a signed envelope, made and
  verified (signature chain, expiry, fleet, replay) against a ``TrustedRoot``.
* ``X.to_dict()`` and ``X.from_dict(raw, what)``: a value nested inside a message, as the msgpack
  map it travels as.

Text typed by operators (selectors, rules, settings) is read by the application
(``modelcast.cli.parsing``), not here. See docs/PROTOCOL.md for every topic and payload.
"""

from .acceptance import Acceptance, Case, Tensor
from .chunks import HEADER_SIZE, ChunkFrame, frame_release_id, verify_chunk
from .commands import ALL_DEVICES, Command, open_command
from .compression import (
    CODEC_ZSTD,
    SUPPORTED_CODECS,
    ChunkCompressor,
    compress_chunk,
    decompress_chunk,
)
from .delta import DeltaBaseMismatch, DeltaError, DeltaResultMismatch, apply_delta
from .delta_ref import DeltaOf, DeltaRef
from .download import DownloadSession, Phase, Plan, VerifiedChunk
from .drift import DRIFT_KIND, DriftProfile, DriftSample, DriftThreshold
from .envelope import KeyCertificate, TrustedRoot, certify, seal
from .errors import (
    ChunkRejected,
    DigestMismatch,
    ExpiredError,
    MalformedMessage,
    ModelcastError,
    OversizedMessage,
    ProtocolError,
    SequenceError,
    SignatureError,
    StaleError,
    UnsupportedVersion,
)
from .fleet_config import (
    ConfigEntry,
    MaintenanceWindow,
    parse_pins,
    settings_for,
)
from .index import DeploymentIndex, RolloutBlock, Target, open_index
from .limits import DEFAULT_CHUNK_SIZE, DEFAULT_LIMITS, DEFAULT_WINDOW, Limits
from .manifest import Manifest, VerifiedManifest, hash_chunks, open_manifest
from .messages import ChunkRequest, DeviceEvent, DeviceState, DeviceStatus, UpdateState
from .names import check_name, is_valid_name
from .ranges import iter_ranges, to_ranges
from .report_request import ReportRequest, open_report_request
from .rollout import PPM_ALL, Selector, membership_point, stage_ppm
from .rotation import (
    Revocations,
    RootRotation,
    apply_revocations,
    apply_rotation,
    encode_chain,
    follow_chain,
    rotate_root,
)
from .signing import SigningKey, VerifyKey, key_id
from .telemetry import MetricsSample, ModelStats
from .topics import Topics
from .variants import VariantRule, choose_variant, rules_from_list

__all__ = [
    "ALL_DEVICES",
    "CODEC_ZSTD",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LIMITS",
    "DEFAULT_WINDOW",
    "DRIFT_KIND",
    "HEADER_SIZE",
    "PPM_ALL",
    "SUPPORTED_CODECS",
    "Acceptance",
    "Case",
    "ChunkCompressor",
    "ChunkFrame",
    "ChunkRejected",
    "ChunkRequest",
    "Command",
    "ConfigEntry",
    "DeltaBaseMismatch",
    "DeltaError",
    "DeltaOf",
    "DeltaRef",
    "DeltaResultMismatch",
    "DeploymentIndex",
    "DeviceEvent",
    "DeviceState",
    "DeviceStatus",
    "DigestMismatch",
    "DownloadSession",
    "DriftProfile",
    "DriftSample",
    "DriftThreshold",
    "ExpiredError",
    "KeyCertificate",
    "Limits",
    "MaintenanceWindow",
    "MalformedMessage",
    "Manifest",
    "MetricsSample",
    "ModelStats",
    "ModelcastError",
    "OversizedMessage",
    "Phase",
    "Plan",
    "ProtocolError",
    "ReportRequest",
    "Revocations",
    "RolloutBlock",
    "RootRotation",
    "Selector",
    "SequenceError",
    "SignatureError",
    "SigningKey",
    "StaleError",
    "Target",
    "Tensor",
    "Topics",
    "TrustedRoot",
    "UnsupportedVersion",
    "UpdateState",
    "VariantRule",
    "VerifiedChunk",
    "VerifiedManifest",
    "VerifyKey",
    "apply_delta",
    "apply_revocations",
    "apply_rotation",
    "certify",
    "check_name",
    "choose_variant",
    "compress_chunk",
    "decompress_chunk",
    "encode_chain",
    "follow_chain",
    "frame_release_id",
    "hash_chunks",
    "is_valid_name",
    "iter_ranges",
    "key_id",
    "membership_point",
    "open_command",
    "open_index",
    "open_manifest",
    "open_report_request",
    "parse_pins",
    "rotate_root",
    "rules_from_list",
    "seal",
    "settings_for",
    "stage_ppm",
    "to_ranges",
    "verify_chunk",
]
