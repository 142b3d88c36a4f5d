"""Which chunks the sender publishes compressed, and their compressed bytes, computed once.

A chunk goes out zstd-compressed (``protocol.ChunkCompressor``: only when that saves at least
5 %) when every device it is meant for said it decodes zstd (``ChunkRequest.codecs``): for a
resend, that one device; for a publication on a block topic, every device that asked for the
release (a device older than compression, among them, makes the release's block publications
raw; a block publication it already got compressed is refused there, and its repair comes back
raw on its resend topic).

Each chunk is compressed once, not once per asker or per publication: the result (or the
verdict "not worth it") is kept in an LRU bounded by ``cache_bytes`` of compressed bytes, and
dropped when the release is retired (``forget``). A chunk evicted and sent again is compressed
again; ``compressions`` counts them all.

Threads: ``on_request`` runs where chunk requests do (network thread or worker), ``framed`` on
the sender. ``_lock`` guards the askers, the cache and the counters; it is never held while
compressing or while taking another lock. Each thread that compresses has its own zstd context
(``_compressors``), reused from chunk to chunk.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import protocol

#: compressed bytes kept (MiniLM, 86.6 MB, compresses to about 80 MB: it fits)
DEFAULT_CACHE_BYTES = 128 << 20


@dataclass(frozen=True)
class CodecStats:
    compressions: int  # chunks compressed (or found not worth it): once each unless evicted
    compressed_sent: int  # frames published compressed
    raw_sent: int  # frames published raw
    cached_bytes: int


class ChunkCodec:
    def __init__(self, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._zstd: set[str] = set()  # devices whose last request listed zstd
        self._plain_askers: dict[bytes, set[str]] = {}  # release id (16) -> raw-only askers
        self._cache: OrderedDict[tuple[bytes, int], bytes | None] = OrderedDict()
        self._cached = 0
        self._compressions = 0
        self._compressed_sent = 0
        self._raw_sent = 0
        self._compressors = threading.local()  # .zstd: this thread's protocol.ChunkCompressor

    def on_request(self, release_id: bytes, req: protocol.ChunkRequest) -> None:
        """Note whether the asker of ``release_id`` (16 bytes) decodes zstd."""
        accepts = protocol.CODEC_ZSTD in req.codecs
        with self._lock:
            if accepts:
                self._zstd.add(req.device)
                return
            self._zstd.discard(req.device)
            self._plain_askers.setdefault(release_id, set()).add(req.device)

    def framed(
        self, raw: bytearray, index: int, release_id: bytes, device: str | None
    ) -> bytes | bytearray:
        """``raw`` (a plain frame, as ``ChunkSource.read_frame`` reads it) as it is published:
        compressed into a new frame, or ``raw`` itself (no copy) when it goes out plain."""
        packed = self._packed(release_id, index, memoryview(raw)[protocol.HEADER_SIZE :], device)
        if packed is not None:
            return protocol.ChunkFrame.encode(index, release_id, packed, compressed=True)
        return raw

    def _packed(
        self, release_id: bytes, index: int, data: bytes | memoryview, device: str | None
    ) -> bytes | None:
        """The compressed payload when this chunk goes out compressed to this asker, else None."""
        short = release_id[:16]
        with self._lock:
            wanted = device in self._zstd if device is not None else short not in self._plain_askers
            key = (short, index)
            known = key in self._cache
            packed = self._cache.get(key)
            if known:
                self._cache.move_to_end(key)
        if wanted and not known:
            packed = self._compressor().compress(data)
            self._remember(key, packed)
        compressed = wanted and packed is not None
        with self._lock:
            if compressed:
                self._compressed_sent += 1
            else:
                self._raw_sent += 1
        return packed if compressed else None

    def _compressor(self) -> protocol.ChunkCompressor:
        compressor: protocol.ChunkCompressor | None = getattr(self._compressors, "zstd", None)
        if compressor is None:
            compressor = self._compressors.zstd = protocol.ChunkCompressor()
        return compressor

    def _remember(self, key: tuple[bytes, int], packed: bytes | None) -> None:
        with self._lock:
            self._compressions += 1
            if key in self._cache:
                return
            self._cache[key] = packed
            self._cached += len(packed or b"")
            while self._cached > self._cache_bytes and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old or b"")

    def forget(self, release_ids: Iterable[bytes]) -> None:
        """Releases retired: drop their askers and their cached chunks."""
        gone = {rid[:16] for rid in release_ids}
        with self._lock:
            for rid in gone:
                self._plain_askers.pop(rid, None)
            for key in [k for k in self._cache if k[0] in gone]:
                self._cached -= len(self._cache.pop(key) or b"")

    def stats(self) -> CodecStats:
        with self._lock:
            return CodecStats(
                self._compressions, self._compressed_sent, self._raw_sent, self._cached
            )
