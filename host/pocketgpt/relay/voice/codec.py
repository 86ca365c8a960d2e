"""Opus in and out, over libopus (Debian's libopus0) through opuslib.

Devices send 16 kHz mono Opus, one packet per websocket message, usually 60 ms but 20 ms and
40 ms too, and tiny packets (a few bytes, DTX) while nobody speaks. The relay answers with 24 kHz
mono packets of exactly the duration its hello announced (60 ms). Each object here belongs to
one session and one thread at a time: libopus state is not shared.
"""

from __future__ import annotations

import numpy as np

# Opus packets decode to at most 120 ms; the protocol's frames are at most 60 ms, so a decode
# buffer of 60 ms at the decoder's rate refuses anything longer as malformed.
MAX_FRAME_MS = 60
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_FRAME_MS = (10, 20, 40, 60)  # the durations a protocol frame may declare (2.5 and 5 ms: never seen)


class AudioError(Exception):
    """An audio packet or parameter the relay cannot use; the session reports it and goes on."""


def _opuslib():  # imported lazily: the relay runs without the voice extra
    try:
        import opuslib
        import opuslib.api  # noqa: F401
    except (ImportError, OSError, Exception) as exc:  # OSError/Exception: libopus0 missing at load time
        raise AudioError(f"Opus is unavailable ({exc}); install the voice extra (pip install "
                         "'pocketgpt[voice]') and Debian's libopus0") from None
    return opuslib


class OpusDecoder:
    """One stream of Opus packets -> int16 PCM at `rate`."""

    def __init__(self, rate: int = 16000) -> None:
        opuslib = _opuslib()
        self.rate = rate
        self._dec = opuslib.Decoder(rate, 1)
        self._max_samples = rate * MAX_FRAME_MS // 1000
        self._error_type = opuslib.OpusError

    def decode(self, packet: bytes) -> np.ndarray:
        """One packet -> its samples. An empty packet is a lost frame (concealed as silence)."""
        if len(packet) > 1275 * 3:  # libopus' largest legal packet for 120 ms
            raise AudioError(f"audio packet of {len(packet)} bytes is larger than any Opus packet")
        try:
            pcm = self._dec.decode(bytes(packet), self._max_samples)
        except self._error_type as exc:
            msg = str(exc)
            if msg[:2] in ("b'", 'b"'):  # opuslib passes libopus' message as bytes
                msg = msg[2:-1]
            raise AudioError(f"audio packet of {len(packet)} bytes is not valid Opus ({msg}); "
                             f"send one raw Opus packet of at most {MAX_FRAME_MS} ms per binary message") from None
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


class OpusEncoder:
    """int16 PCM at `rate` -> Opus packets of exactly `frame_ms` each (the last one zero-padded)."""

    def __init__(self, rate: int = 24000, frame_ms: int = 60, voip: bool = True) -> None:
        opuslib = _opuslib()
        if rate not in OPUS_RATES or frame_ms not in OPUS_FRAME_MS:
            raise AudioError(f"Opus cannot encode {rate} Hz / {frame_ms} ms frames")
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_samples = rate * frame_ms // 1000
        app = opuslib.APPLICATION_VOIP if voip else opuslib.APPLICATION_AUDIO
        self._enc = opuslib.Encoder(rate, 1, app)
        self._rest = np.zeros(0, dtype=np.int16)

    def encode(self, pcm: np.ndarray, final: bool = True) -> list[bytes]:
        """Packets for `pcm` (plus what was left over from the previous call). With final=True
        the tail is padded with silence to a whole frame; otherwise it waits for more samples."""
        data = np.concatenate([self._rest, pcm.astype(np.int16)]) if len(self._rest) else pcm.astype(np.int16)
        n = self.frame_samples
        whole = len(data) // n
        tail = data[whole * n:]
        packets = [self._enc.encode(data[i * n:(i + 1) * n].tobytes(), n) for i in range(whole)]
        if final and len(tail):
            padded = np.zeros(n, dtype=np.int16)
            padded[: len(tail)] = tail
            packets.append(self._enc.encode(padded.tobytes(), n))
            tail = tail[:0]
        self._rest = tail.copy()
        return packets


def decode_all(packets: list[bytes], rate: int) -> np.ndarray:
    """A whole packet stream -> one PCM array (tests, benchmarks and the simulator's checks)."""
    dec = OpusDecoder(rate)
    parts = [dec.decode(p) for p in packets]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def check_client_audio(params: dict) -> str | None:
    """What is wrong with a client hello's audio_params for this relay (None: usable).

    The relay decodes any Opus rate (it asks libopus for 16 kHz output) but needs mono, Opus, and
    frames of at most 60 ms (the protocol's 960-sample maximum frame at 16 kHz).
    """
    if not params:
        return None  # no audio_params at all: XiaoZhi's defaults (16 kHz, mono, 60 ms)
    fmt = params.get("format", "opus")
    if fmt != "opus":
        return f"audio format {fmt!r} is not supported; send \"format\":\"opus\""
    rate = params.get("sample_rate", 16000)
    if isinstance(rate, bool) or rate not in OPUS_RATES:
        return f"sample_rate {rate!r} is not an Opus rate; send 16000 (or one of {', '.join(map(str, OPUS_RATES))})"
    channels = params.get("channels", 1)
    if isinstance(channels, bool) or channels != 1:
        return f"channels {channels!r} is not supported; send mono audio (\"channels\":1)"
    frame = params.get("frame_duration", 60)
    if isinstance(frame, bool) or frame not in OPUS_FRAME_MS:
        return f"frame_duration {frame!r} ms is not supported; send 20, 40 or 60 ms frames"
    return None
