"""The voice pipeline's parts on their own: resampling, Opus framing, audio parameters, VAD
decisions in audio time, and the language model builder (normalised, held-out text kept out).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from pocketgpt.relay.voice.session import VoiceService

pytestmark = pytest.mark.voice

MISSING = VoiceService.missing()
needs_voice = pytest.mark.skipif(MISSING is not None, reason=f"voice dependencies missing: {MISSING}")


def tone(freq: float, seconds: float, rate: int, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * math.pi * freq * t)).astype(np.int16)


def peak_hz(pcm: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.argmax(spec) * rate / len(pcm))


@pytest.mark.parametrize("src,dst", [(22050, 24000), (22050, 16000), (24000, 16000), (16000, 24000)])
def test_resample_keeps_pitch_loudness_and_duration(src: int, dst: int) -> None:
    from pocketgpt.relay.voice.audio import resample, rms

    x = tone(440.0, 1.0, src)
    y = resample(x, src, dst)
    assert len(y) == dst  # one second stays one second
    assert abs(peak_hz(y, dst) - 440.0) < 2.0
    assert abs(rms(y[200:-200]) / rms(x[200:-200]) - 1.0) < 0.02
    # content above the new Nyquist frequency is removed, not folded back as a false tone
    if dst < src:
        high = resample(tone(0.45 * src, 0.5, src), src, dst)
        assert rms(high[200:-200]) < 0.01 * 8000


@needs_voice
@pytest.mark.parametrize("rate,frame_ms", [(16000, 20), (16000, 40), (16000, 60), (24000, 60)])
def test_opus_packets_are_whole_frames_of_the_declared_duration(rate: int, frame_ms: int) -> None:
    from pocketgpt.relay.voice.codec import OpusDecoder, OpusEncoder

    pcm = tone(300.0, 1.03, rate)  # not a whole number of frames: the tail is padded
    packets = OpusEncoder(rate, frame_ms).encode(pcm)
    frame = rate * frame_ms // 1000
    assert len(packets) == math.ceil(len(pcm) / frame)
    dec = OpusDecoder(rate)
    out = [dec.decode(p) for p in packets]
    assert all(len(o) == frame for o in out)
    assert abs(peak_hz(np.concatenate(out)[:len(pcm)], rate) - 300.0) < 5.0


@needs_voice
def test_opus_decoder_takes_tiny_packets_and_refuses_garbage_in_one_line() -> None:
    from pocketgpt.relay.voice.codec import AudioError, OpusDecoder

    dec = OpusDecoder(16000)
    assert len(dec.decode(b"")) > 0        # a lost packet: concealed
    assert len(dec.decode(b"\xf8")) == 320  # a 1-byte (DTX-style) 20 ms packet: silence
    with pytest.raises(AudioError) as err:
        dec.decode(b"\xde\xad\xbe\xef" * 10)
    assert "not valid Opus" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AudioError):
        dec.decode(b"\x03" + b"\xff" * 3000)  # more audio than a 60 ms frame


def test_client_audio_params() -> None:
    from pocketgpt.relay.voice.codec import check_client_audio

    good = {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}
    assert check_client_audio(good) is None
    assert check_client_audio({}) is None  # XiaoZhi's defaults
    assert check_client_audio({**good, "frame_duration": 20}) is None
    assert check_client_audio({**good, "sample_rate": 48000}) is None  # decoded to 16 kHz anyway
    for bad, word in (({**good, "format": "pcm"}, "format"), ({**good, "sample_rate": 44100}, "sample_rate"),
                      ({**good, "channels": 2}, "channels"), ({**good, "frame_duration": 120}, "frame_duration"),
                      ({**good, "sample_rate": True}, "sample_rate")):
        problem = check_client_audio(bad)
        assert problem and word in problem, bad


@needs_voice
def test_vad_cuts_in_audio_time_whatever_the_chunking() -> None:
    """The same audio gives the same start/end decisions fed in one piece or in 20 ms packets, and
    the end comes one silence window after the words stop."""
    from pocketgpt.relay.voice.tts import synthesize
    from pocketgpt.relay.voice.vad import Segmenter, VadSettings

    words = synthesize("Tell me a joke about computers.", rate=16000)
    pcm = np.concatenate([np.zeros(8000, np.int16), words, np.zeros(16000, np.int16), words, np.zeros(16000, np.int16)])

    def cuts(chunk: int) -> list[tuple[str, int]]:
        seg = Segmenter(VadSettings(silence_ms=500))
        out = []
        for i in range(0, len(pcm), chunk):
            out += [(e.kind, e.at_sample) for e in seg.feed(pcm[i:i + chunk]) if e.kind != "speech"]
        return out

    whole, small = cuts(len(pcm)), cuts(320)
    assert whole == small
    assert [k for k, _ in whole] == ["start", "end", "start", "end"]
    voiced = np.nonzero(np.abs(words.astype(np.int32)) > 300)[0]
    first_end = 8000 + voiced[-1]
    start1, end1 = whole[0][1], whole[1][1]
    assert 8000 < start1 < 8000 + 16000 * 0.5       # decided within half a second of the onset
    assert abs(end1 - first_end) < 16000 * 0.25     # the end sits at the last voiced sound


@needs_voice
def test_vad_ignores_faint_steady_noise() -> None:
    from pocketgpt.relay.voice.vad import Segmenter

    hum = tone(120.0, 3.0, 16000, amp=90.0)
    assert Segmenter().feed(hum) == []


# ---- language model --------------------------------------------------------------------------

def _arpa(path: Path) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    model: dict[int, dict[tuple[str, ...], tuple[float, float]]] = {1: {}, 2: {}, 3: {}}
    order = 0
    for line in path.read_text("utf-8").splitlines():
        m = re.match(r"\\(\d)-grams:", line)
        if m:
            order = int(m.group(1))
            continue
        if order and line and not line.startswith("\\"):
            parts = line.split("\t")
            model[order][tuple(parts[1].split())] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else 0.0)
    return model


def _prob(model: dict, hist: tuple[str, ...], w: str) -> float:
    """log10 p(w | hist) with back-off, as a decoder reads an ARPA file."""
    gram = hist + (w,)
    if gram in model[len(gram)]:
        return model[len(gram)][gram][0]
    bow = model[len(hist)].get(hist, (0.0, 0.0))[1]
    return bow + _prob(model, hist[1:], w)


@needs_voice
def test_language_model_is_normalised_and_never_sees_the_evaluation_sentences(tmp_path: Path) -> None:
    from pocketgpt.relay.voice import evalsets, lm

    quotes, requests = lm.build_corpus(None)
    corpus = {" ".join(s) for s in requests}
    for sentence in evalsets.REQUESTS:
        assert " ".join(lm.words_of(sentence)) not in corpus, sentence
    stats = lm.build(None, tmp_path / "lm.bin", arpa_out=tmp_path / "lm.arpa")
    assert stats["trigrams"] > 1000 and (tmp_path / "lm.bin").stat().st_size > 0
    model = _arpa(tmp_path / "lm.arpa")
    vocab = [g[0] for g in model[1] if g[0] != "<s>"]
    for hist in (("<s>",), ("tell",), ("tell", "me"), ("<s>", "what"), ("about", "the"), ("zebra",)):
        if hist[-1] not in {g[0] for g in model[1]}:
            continue
        total = sum(10 ** _prob(model, hist, w) for w in vocab)
        assert abs(total - 1.0) < 2e-3, (hist, total)


@pytest.mark.skipif(not Path("/usr/share/games/fortunes").is_dir(), reason="Debian's fortunes package is not installed")
def test_held_out_quotes_are_not_in_the_corpus() -> None:
    from pocketgpt.relay.voice import evalsets, lm

    quotes, _ = lm.build_corpus("/usr/share/games/fortunes")
    text = "\n".join(" ".join(s) for s in quotes)
    for q in evalsets.QUOTES:
        assert " ".join(lm.words_of(q)) not in text, q


# ---- speech pieces ---------------------------------------------------------------------------

def test_speech_splitter_cuts_long_sentences_at_clauses_and_loses_nothing() -> None:
    from pocketgpt.relay.protocol import SentenceSplitter
    from pocketgpt.relay.voice.sentences import SpeechSplitter

    text = ("Well, I think that the best thing about life, as my father used to say, is that it ends; "
            "and then you rest. Pi is 3.14 and short. " + "word " * 40 + "end.")
    for step in (1, 3, 7, len(text)):
        sp = SpeechSplitter()
        pieces: list[str] = []
        for i in range(0, len(text), step):
            pieces += sp.feed(text[i:i + step])
        rest = sp.flush()
        pieces += [rest] if rest else []
        assert " ".join(pieces).split() == text.split()  # every word once, in order
        assert "and then you rest." in pieces and "Pi is 3.14 and short." in pieces
        if step < len(text):  # streamed: the first clause of >= 5 words goes at once, and no piece
            assert pieces[0] == "Well, I think that the best thing about life,"  # waits for more
            assert max(len(p.split()) for p in pieces) <= 30  # than 30 words without punctuation
    # sentences that are short already come out exactly as the text turns' splitter cuts them
    plain = SentenceSplitter().feed("One two. Three four! Five? ")
    assert SpeechSplitter().feed("One two. Three four! Five? ") == plain
