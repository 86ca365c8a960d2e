"""PCM helpers the voice pipeline needs: resampling between rates, WAV in and out, durations.

Audio inside the pipeline is mono 16-bit PCM held as numpy int16 arrays. espeak-ng speaks at
22,050 Hz, the recognizer listens at 16 kHz and devices play 24 kHz, so rational-ratio
resampling (polyphase windowed sinc) sits between them; numpy does it without adding scipy.
"""

from __future__ import annotations

import io
import math
import wave
from functools import lru_cache

import numpy as np

_HALF_TAPS = 16  # filter half-length in input samples: enough for speech, cheap enough per sentence


@lru_cache(maxsize=16)
def _polyphase(up: int, down: int) -> np.ndarray:
    """Filter bank (up, 2*_HALF_TAPS): for each output phase, the taps over the input window.

    The low-pass cut-off sits at the lower of the two Nyquist rates (a little below, to leave
    room for the Kaiser window's transition band).
    """
    cutoff = 0.92 / max(up, down)  # in cycles per sample of the upsampled signal, times 2
    k = np.arange(-_HALF_TAPS + 1, _HALF_TAPS + 1)  # input offsets relative to floor(position)
    phases = np.arange(up)[:, None] / up  # fractional position of each output phase
    t = k[None, :] - phases  # distance in input samples
    beta = 8.0
    window = np.kaiser(2 * _HALF_TAPS + 1, beta)
    # evaluate the Kaiser window continuously at t (centre _HALF_TAPS)
    w = np.interp(t + _HALF_TAPS, np.arange(2 * _HALF_TAPS + 1), window)
    h = cutoff * up * np.sinc(cutoff * up * t) * w
    h *= 1.0 / h.sum(axis=1, keepdims=True)  # unity gain at DC for every phase
    return h.astype(np.float32)


def resample(pcm: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """int16 mono at src_rate -> int16 mono at dst_rate (same duration, band-limited)."""
    if src_rate == dst_rate or len(pcm) == 0:
        return pcm.astype(np.int16, copy=True)
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    h = _polyphase(up, down)
    n_out = (len(pcm) * up) // down
    n = np.arange(n_out, dtype=np.int64)
    base = (n * down) // up
    phase = (n * down) % up
    x = np.pad(pcm.astype(np.float32), (_HALF_TAPS, _HALF_TAPS + 1))
    idx = base[:, None] + np.arange(2 * _HALF_TAPS)[None, :] + 1  # window around base, shifted by the pad
    out = np.einsum("ij,ij->i", x[idx], h[phase])
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV (bytes) -> (mono int16 samples, sample rate); stereo is averaged."""
    with wave.open(io.BytesIO(data), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"WAV has {8 * w.getsampwidth()}-bit samples; 16-bit PCM expected")
        rate, channels = w.getframerate(), w.getnchannels()
        frames = w.readframes(w.getnframes())
    pcm = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return pcm.astype(np.int16), rate


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    """Mono int16 samples -> a complete WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def rms(pcm: np.ndarray) -> float:
    """Root mean square level of int16 samples (0 for silence, about 3,000 for normal speech)."""
    if len(pcm) == 0:
        return 0.0
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
