"""Voice latency seen by the device: end of speech -> first reply audio, the simulator against the relay.

The device side is the real firmware code (firmware/app: the push-to-talk turn, Opus through the
POSIX port's libopus) in the simulator; its microphone is a folder of WAVs, one per held-out request
(espeak-ng `en-us+f2`, 150 words/min), each streamed at real time. The relay runs as its own process
with voice on. The simulator measures on its own clock and prints, per turn, "first reply audio N ms
after the end of speech": end of speech is the push-to-talk release, which the simulator does at the
last sample of the file (manual: that is also when `listen stop` goes out; auto: the microphone keeps
sending silence and the relay's VAD decides); each file is cut at its last voiced sample, so that
release is the end of the words. The relay's VAD silence window is printed beside the
auto figures as the anchor: that part of the delay is a setting, not work.

    python bench/voice_sim_latency.py [--model builtin:host] [--modes manual,auto] [--rounds 1]
                                      [--max-tokens 32] [--sim PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import percentile, relay_child_process, run_voice_relay

FIRST = re.compile(r"first reply audio (\d+) ms after the end of speech")


def relay_child(args: argparse.Namespace) -> int:
    """The relay: voice on, open mode on loopback (a bench, never a deployment)."""
    return run_voice_relay(args.model, args.port, args.max_tokens)


def speak_all(folder: Path, texts: list[str]) -> None:
    """One WAV per text, cut right after its last voiced sample (|x| > 300): espeak-ng ends its files
    with silence, and the simulator's release (the end of speech) is the end of the file."""
    import wave
    from array import array

    for i, text in enumerate(texts):
        path = folder / f"{i:03d}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us+f2", "-s", "150", "-w", str(path), text],
                       check=True, capture_output=True, timeout=60)
        with wave.open(str(path), "rb") as w:
            params = w.getparams()
            pcm = array("h", w.readframes(w.getnframes()))
        last = max((j for j, x in enumerate(pcm) if abs(x) > 300), default=len(pcm) - 1)
        with wave.open(str(path), "wb") as w:
            w.setparams(params)
            w.writeframes(pcm[:last + 1].tobytes())


def run_sim(sim: str, device_model: str, url: str, mic: Path, n: int, mode: str) -> tuple[list[int], str]:
    cmd = [sim, "--model", device_model, "--relay", url, "--mic", str(mic), "--listen-mode", mode,
           "--set", "relay.timeout_ms=60000"]
    out = subprocess.run(cmd, input="/talk\n" * n, capture_output=True, text=True, timeout=120 + 60 * n)
    if out.returncode != 0:
        raise SystemExit(f"error: the simulator failed (exit {out.returncode}): {out.stderr.strip()[-400:]}")
    return [int(m.group(1)) for m in FIRST.finditer(out.stdout)], out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:host", help="the relay's model (default builtin:host)")
    ap.add_argument("--device-model", default=None, help="the simulator's own model (default builtin:device)")
    ap.add_argument("--modes", default="manual,auto")
    ap.add_argument("--rounds", type=int, default=1, help="passes over the 12 held-out requests (default 1)")
    ap.add_argument("--max-tokens", type=int, default=32, help="reply length in tokens (default 32)")
    ap.add_argument("--sim", default=None, help="a built simulator (default: build it like `pocketgpt device`)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--relay-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.relay_child:
        return relay_child(args)

    from pocketgpt.commands.device import build
    from pocketgpt.models import builtin_path
    from pocketgpt.relay.voice.evalsets import REQUESTS
    from pocketgpt.relay.voice.session import VoiceConfig

    sim = args.sim or str(build())
    device_model = args.device_model or str(builtin_path("device"))
    texts = list(REQUESTS) * args.rounds
    result: dict[str, dict] = {}
    try:
        with relay_child_process(Path(__file__).resolve(), "--relay-child", args.model, args.max_tokens) as url, \
                tempfile.TemporaryDirectory(prefix="pocketgpt-voice-bench-") as tmp:
            mic = Path(tmp)
            speak_all(mic, texts)
            for mode in args.modes.split(","):
                firsts, _ = run_sim(sim, device_model, url, mic, len(texts), mode)
                result[mode] = {"p50_ms": percentile(firsts, 50), "p90_ms": percentile(firsts, 90),
                                "mean_ms": round(statistics.mean(firsts)) if firsts else None,
                                "n": len(firsts), "turns": len(texts)}
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = {"relay_model": args.model, "max_tokens": args.max_tokens, "rounds": args.rounds,
              "vad_silence_ms": VoiceConfig().vad.silence_ms, "load_avg": os.getloadavg()[0], "modes": result}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"relay model {args.model}, reply {args.max_tokens} tokens, load average {report['load_avg']:.1f}; "
          f"the relay's VAD silence window {report['vad_silence_ms']} ms (auto mode waits it by design)")
    print(f"{'mode':8} {'end of speech -> first audio':30} {'p50 ms':>7} {'p90 ms':>7} {'turns':>6}")
    for mode, s in result.items():
        print(f"{mode:8} {'':30} {s['p50_ms']:>7.0f} {s['p90_ms']:>7.0f} {s['n']:>3}/{s['turns']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
