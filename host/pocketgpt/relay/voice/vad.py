"""Voice activity detection: where an utterance starts and ends in a 16 kHz PCM stream.

pocketsphinx ships WebRTC's voice activity detector (`pocketsphinx.Vad`), which labels 30 ms
frames speech or not. On top of that, a small state machine in *audio time* (sample counts, never
the wall clock, so a client that streams faster or slower than real time gets the same cuts):

- speech starts when at least `start_frames` of the last `start_window` frames are speech;
  `preroll_ms` of audio before that point goes to the recognizer too (the first word's onset);
- speech ends after `silence_ms` of frames without speech, or at `max_utterance_s`;
- a frame quieter than `energy_floor` is never speech (WebRTC's detector calls faint steady
  sounds speech, e.g. a decoder repeating comfort noise, and the utterance would never end).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

FRAME_MS = 30
SAMPLE_RATE = 16000
FRAME = SAMPLE_RATE * FRAME_MS // 1000  # 480 samples


@dataclass(frozen=True)
class VadSettings:
    silence_ms: int = 500          # end of speech after this much silence (auto and realtime modes)
    start_window: int = 10         # frames looked at to decide that speech started (300 ms)
    start_frames: int = 6          # of which this many must be speech (about 180 ms of voice)
    preroll_ms: int = 300          # audio before the start decision handed to the recognizer
    max_utterance_s: float = 30.0  # an utterance is cut here even if the user keeps talking
    aggressiveness: int = 2        # WebRTC VAD mode 0 (loose) .. 3 (strict)
    energy_floor: float = 120.0    # RMS (int16) below which a frame is silence whatever WebRTC says:
                                   # it labels faint steady tones (a codec's comfort noise, hum) speech


@dataclass
class VadEvent:
    kind: str                  # "start" (pcm: preroll + speech so far) | "speech" (pcm) | "end"
    pcm: np.ndarray
    at_sample: int             # stream position (samples since the listening phase began)


class Segmenter:
    """Feed PCM in any chunk sizes; get start / speech / end events back."""

    def __init__(self, settings: VadSettings | None = None) -> None:
        import pocketsphinx

        self.s = settings or VadSettings()
        self._vad = pocketsphinx.Vad(self.s.aggressiveness, SAMPLE_RATE, FRAME_MS / 1000)
        if self._vad.frame_bytes != FRAME * 2:
            raise RuntimeError(f"VAD frame is {self._vad.frame_bytes} bytes, expected {FRAME * 2}")
        self.reset()

    def reset(self) -> None:
        self._rest = np.zeros(0, dtype=np.int16)
        self._recent: collections.deque[bool] = collections.deque(maxlen=self.s.start_window)
        self._preroll: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(self.s.start_window, self.s.preroll_ms // FRAME_MS))
        self.in_speech = False
        self._silent_frames = 0
        self._speech_frames = 0
        self.position = 0  # samples consumed

    def feed(self, pcm: np.ndarray) -> list[VadEvent]:
        data = np.concatenate([self._rest, pcm]) if len(self._rest) else pcm
        n = len(data) // FRAME
        self._rest = data[n * FRAME:].copy()
        events: list[VadEvent] = []
        speech_buf: list[np.ndarray] = []
        end_silence = max(1, self.s.silence_ms // FRAME_MS)
        max_frames = int(self.s.max_utterance_s * 1000 / FRAME_MS)
        for i in range(n):
            frame = data[i * FRAME:(i + 1) * FRAME]
            self.position += FRAME
            loud = float(np.sqrt(np.mean(frame.astype(np.float32) ** 2))) >= self.s.energy_floor
            voiced = loud and bool(self._vad.is_speech(frame.astype("<i2").tobytes()))
            if not self.in_speech:
                self._preroll.append(frame)
                self._recent.append(voiced)
                if sum(self._recent) >= self.s.start_frames:
                    self.in_speech = True
                    self._silent_frames = 0
                    self._speech_frames = len(self._preroll)
                    events.append(VadEvent("start", np.concatenate(list(self._preroll)), self.position))
                    self._preroll.clear()
                    self._recent.clear()
                continue
            speech_buf.append(frame)
            self._speech_frames += 1
            self._silent_frames = 0 if voiced else self._silent_frames + 1
            if self._silent_frames >= end_silence or self._speech_frames >= max_frames:
                events.append(VadEvent("speech", np.concatenate(speech_buf), self.position))
                speech_buf = []
                events.append(VadEvent("end", np.zeros(0, dtype=np.int16),
                                       self.position - self._silent_frames * FRAME))
                self.in_speech = False
                self._silent_frames = 0
        if speech_buf:
            events.append(VadEvent("speech", np.concatenate(speech_buf), self.position))
        return events
