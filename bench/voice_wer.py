"""Word error rate of the relay's recognizer on the held-out sentence sets, per language model.

Each sentence is spoken by espeak-ng, Opus-encoded at 16 kHz in 60 ms packets, and pushed through
the relay's own microphone path (`voice.session._MicState` in auto mode: Opus decode, VAD,
streaming pocketsphinx), exactly as a device's audio is, minus the socket. One recognizer serves
all sentences in order (as one relay's warm decoder does). Sets (`voice/evalsets.py`):
REQUESTS, things said to a chatbot, and QUOTES, held-out fortunes; neither is in the shipped
language model's text. Anchor: pocketsphinx's own general English model, same audio, same run.

    python bench/voice_wer.py [--voices en-us+f2,en-us+m3] [--wpm 150] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def heard(state, packets) -> str:  # noqa: ANN001
    texts = []
    for ev in state.packets(packets):
        if ev.kind == "utterance" and ev.text:
            texts.append(ev.text)
    return " ".join(texts)


def main() -> int:
    import numpy as np

    from pocketgpt.relay.voice import evalsets
    from pocketgpt.relay.voice.codec import OpusEncoder
    from pocketgpt.relay.voice.session import VoiceConfig, VoiceService, _MicState
    from pocketgpt.relay.voice.stt import word_errors
    from pocketgpt.relay.voice.tts import synthesize

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voices", default="en-us+f2")
    ap.add_argument("--wpm", type=int, default=150)
    ap.add_argument("--lms", default="default,pocketgpt", help="language models: default, pocketgpt, or paths")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--verbose", action="store_true", help="print every sentence and what was heard")
    args = ap.parse_args()

    sets = {"requests": evalsets.REQUESTS, "quotes": evalsets.QUOTES}
    rows = []
    for voice in args.voices.split(","):
        audio = {}
        for sentences in sets.values():
            for s in sentences:
                pcm = synthesize(s, rate=16000, voice=voice, wpm=args.wpm)
                pcm = np.concatenate([np.zeros(4800, np.int16), pcm, np.zeros(16000, np.int16)])
                audio[s] = OpusEncoder(16000, 60).encode(pcm)
        for lm in args.lms.split(","):
            service = VoiceService(VoiceConfig(lm=lm, workers=1))
            state = _MicState(service)
            for name, sentences in sets.items():
                errors = words = 0
                t0 = time.perf_counter()
                for s in sentences:
                    state.start("auto")
                    hyp = heard(state, audio[s])
                    e, n = word_errors(s, hyp)
                    errors, words = errors + e, words + n
                    if args.verbose:
                        print(f"  [{voice} {lm}] {e}/{n} {s!r} -> {hyp!r}", file=sys.stderr)
                rows.append({"voice": voice, "lm": lm, "set": name, "wer": round(errors / words, 3),
                             "errors": errors, "words": words, "seconds": round(time.perf_counter() - t0, 1)})
            service.close()
    if args.json:
        print(json.dumps({"wpm": args.wpm, "rows": rows}))
        return 0
    print(f"espeak-ng at {args.wpm} words/min -> Opus 16 kHz 60 ms -> relay VAD + streaming pocketsphinx")
    print(f"{'voice':10} {'language model':16} {'set':9} {'WER':>6} {'errors/words':>13}")
    for r in rows:
        print(f"{r['voice']:10} {r['lm']:16} {r['set']:9} {r['wer']:>6.3f} {r['errors']:>6}/{r['words']:<6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
