"""Speech synthesis with Debian's espeak-ng program: text -> 24 kHz int16 PCM.

espeak-ng is small, offline and fast (a sentence in a few tens of milliseconds), and its
`--stdout` WAV is 22,050 Hz, which `audio.resample` brings to the device's 24 kHz. The text goes
in on stdin (never as an argument), so a reply that starts with "-" cannot become an option.
Blocking: call it from a worker thread, never on the event loop.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from pocketgpt.relay.voice.audio import read_wav, resample
from pocketgpt.relay.voice.codec import AudioError

DEFAULT_VOICE = "en-us+f2"
DEFAULT_WPM = 150


def espeak_path() -> str | None:
    return shutil.which("espeak-ng")


def synthesize(text: str, rate: int = 24000, voice: str = DEFAULT_VOICE, wpm: int = DEFAULT_WPM,
               timeout: float = 30.0) -> np.ndarray:
    """Speak `text`; returns mono int16 samples at `rate` (empty for text with nothing to say)."""
    exe = espeak_path()
    if exe is None:
        raise AudioError("espeak-ng is not installed (Debian: apt-get install espeak-ng); the relay cannot speak")
    if not text.strip():
        return np.zeros(0, dtype=np.int16)
    try:
        run = subprocess.run([exe, "-v", voice, "-s", str(wpm), "-z", "--stdout", "--stdin"],
                             input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"espeak-ng took longer than {timeout:g} s for {len(text)} characters") from None
    if run.returncode != 0 or not run.stdout.startswith(b"RIFF"):
        detail = run.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise AudioError(f"espeak-ng failed (exit {run.returncode}, voice {voice!r}): {detail[0]}")
    # espeak-ng writes a streaming WAV whose size fields may be 0x7fffffff: trust the data, not the header
    data = run.stdout
    pcm, src_rate = _wav_lenient(data)
    return resample(pcm, src_rate, rate)


def _wav_lenient(data: bytes) -> tuple[np.ndarray, int]:
    try:
        return read_wav(data)
    except Exception:
        pass
    # find the "data" chunk by hand and take every byte after it
    pos = data.find(b"fmt ")
    rate = int.from_bytes(data[pos + 12:pos + 16], "little") if pos >= 0 else 22050
    d = data.find(b"data")
    body = data[d + 8:] if d >= 0 else b""
    body = body[: len(body) // 2 * 2]
    return np.frombuffer(body, dtype="<i2").astype(np.int16), rate
