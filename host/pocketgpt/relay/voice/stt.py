"""Offline speech recognition with pocketsphinx (its PyPI wheel ships a US English acoustic model).

The recognizer is fed while the user speaks, so at the end of speech only the last fraction of
a second is left to decode: that keeps the end-of-speech -> reply latency short. Decoders are
expensive to make (acoustic model + language model, about a second and tens of MB each), so a
`RecognizerPool` lends them to sessions one utterance at a time and keeps a few warm.

Language model: by default the one this project builds itself (`lm.py`, from the fortunes
quotes and a set of spoken requests; see docs/voice.md for how it was made and what it scores);
`lm="default"` picks pocketsphinx's own general English model instead.
Blocking: every method runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import os
import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pocketgpt.relay.voice.codec import AudioError

SAMPLE_RATE = 16000
LM_FILE = "pocketgpt-voice.lm.bin"   # shipped in voice/data/, built by `python -m pocketgpt.relay.voice.lm`


def shipped_lm() -> Path:
    return Path(str(resources.files("pocketgpt.relay.voice") / "data" / LM_FILE))


def _pocketsphinx() -> Any:
    try:
        import pocketsphinx
    except ImportError as exc:
        raise AudioError(f"pocketsphinx is unavailable ({exc}); install the voice extra "
                         "(pip install 'pocketgpt[voice]')") from None
    return pocketsphinx


def decoder_config(lm: str | None = None) -> dict[str, Any]:
    """Keyword arguments for pocketsphinx.Decoder: the shipped LM unless `lm` says otherwise."""
    ps = _pocketsphinx()
    model = Path(ps.get_model_path()) / "en-us"
    if lm in (None, "pocketgpt"):
        path = shipped_lm()
        if not path.is_file():
            raise AudioError(f"the voice language model {path} is missing; rebuild it with "
                             "'python -m pocketgpt.relay.voice.lm' or use the default model")
        lm_path = str(path)
    elif lm == "default":
        lm_path = str(model / "en-us.lm.bin")
    else:
        if not os.path.isfile(lm):
            raise AudioError(f"language model {lm}: no such file")
        lm_path = lm
    return {"hmm": str(model / "en-us"), "dict": str(model / "cmudict-en-us.dict"),
            "lm": lm_path, "samprate": SAMPLE_RATE, "loglevel": "FATAL"}


_NOISE = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")


class Recognizer:
    """One decoder: start() -> feed(pcm)* -> finish() gives the words heard."""

    def __init__(self, lm: str | None = None) -> None:
        ps = _pocketsphinx()
        try:
            self._dec = ps.Decoder(**decoder_config(lm))
        except (RuntimeError, ValueError) as exc:
            raise AudioError(f"pocketsphinx could not load its models ({exc})") from None
        self._open = False
        self.samples = 0

    def start(self) -> None:
        if self._open:
            self._dec.end_utt()
        self._dec.start_utt()
        self._open = True
        self.samples = 0

    def feed(self, pcm: np.ndarray) -> None:
        if not self._open:
            self.start()
        if len(pcm):
            self._dec.process_raw(pcm.astype("<i2").tobytes(), False, False)
            self.samples += len(pcm)

    def finish(self) -> str:
        if not self._open:
            return ""
        self._dec.end_utt()
        self._open = False
        hyp = self._dec.hyp()
        if hyp is None:
            return ""
        return clean_words(hyp.hypstr)

    def cancel(self) -> None:
        if self._open:
            self._dec.end_utt()
            self._open = False


def clean_words(hypstr: str) -> str:
    """Drop filler/noise tokens and pronunciation variants ("read(2)" -> "read")."""
    words = [re.sub(r"\(\d+\)$", "", w) for w in hypstr.split()]
    return " ".join(w for w in words if w and not _NOISE.match(w))


class RecognizerPool:
    """Lends warm recognizers to sessions; makes a new one when all are busy."""

    def __init__(self, lm: str | None = None, keep: int = 4) -> None:
        self.lm = lm
        self.keep = keep
        self._idle: list[Recognizer] = []
        self._lock = threading.Lock()

    def take(self) -> Recognizer:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Recognizer(self.lm)

    def give(self, rec: Recognizer) -> None:
        rec.cancel()
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(rec)

    def warm(self) -> None:
        """Load one recognizer now (at relay start-up) so the first utterance does not pay for it."""
        self.give(self.take())


def transcribe(pcm: np.ndarray, lm: str | None = None, rec: Recognizer | None = None) -> str:
    """Whole-buffer recognition (tests, benchmarks, the WER table)."""
    r = rec or Recognizer(lm)
    r.start()
    step = SAMPLE_RATE // 10
    for i in range(0, len(pcm), step):
        r.feed(pcm[i:i + step])
    return r.finish()


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, words in the reference), case and punctuation ignored."""
    r, h = normalize(ref).split(), normalize(hyp).split()
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1], len(r)


def normalize(text: str) -> str:
    """Lower case, words only (apostrophes kept: "don't"), digits left as they are."""
    text = text.lower().replace("’", "'")
    return " ".join(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text))
