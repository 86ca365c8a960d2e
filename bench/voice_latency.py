"""Voice latency: end of speech -> first reply audio byte, a client streaming real audio at real time.

The relay runs as its own process with voice on (model --model, default builtin:host). One
client at a time connects like a XiaoZhi device: hello, `listen start` (auto: the relay's VAD
ends the utterance; manual: the client sends `listen stop` at the end of speech), then a held-out
request spoken by espeak-ng (`en-us+f2`, 150 words/min), Opus-encoded at 16 kHz in 60 ms packets
and sent one packet per 60 ms of wall time, followed by silence packets, at real time too, as a
microphone would, until the reply's first audio packet arrives.

End of speech is the moment the packet holding the last voiced sample was sent. Reported per
mode: p50/p90 of end of speech -> `stt` message, -> first sentence_start, -> first audio byte;
the relay's silence window (auto mode waits that long by design) is printed beside them as the
anchor, since it is the part of the delay that is a setting rather than work.

    python bench/voice_latency.py [--model builtin:host] [--rounds 2] [--modes auto,manual] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _common import percentile, relay_child_process, run_voice_relay


def serve_child(args: argparse.Namespace) -> int:
    """The relay process: voice on (clause pieces unless --sentences-only), open mode on loopback."""
    from pocketgpt.relay.voice.session import VoiceConfig

    return run_voice_relay(args.model, args.port, args.max_tokens, VoiceConfig(speak_clauses=not args.sentences_only))


async def one_turn(url: str, text: str, mode: str, pcm_cache: dict) -> dict[str, float]:
    import numpy as np
    from websockets.asyncio.client import connect

    from pocketgpt.relay.voice.codec import OpusEncoder
    from pocketgpt.relay.voice.tts import synthesize

    if text not in pcm_cache:
        pcm_cache[text] = synthesize(text, rate=16000)
    speech = pcm_cache[text]
    voiced = np.nonzero(np.abs(speech.astype(np.int32)) > 300)[0]
    last_voiced = int(voiced[-1]) if len(voiced) else len(speech) - 1
    lead = np.zeros(4800, dtype=np.int16)  # 0.3 s of room noise floor before the words
    pcm = np.concatenate([lead, speech])
    end_packet = (len(lead) + last_voiced) // 960  # index of the packet with the last voiced sample
    enc = OpusEncoder(16000, 60)
    packets = enc.encode(pcm)
    quiet = np.zeros(960, dtype=np.int16)
    marks: dict[str, float] = {}
    async with connect(url, max_size=2**20, compression=None) as ws:
        await ws.send(json.dumps({"type": "hello", "version": 1, "transport": "websocket",
                                  "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1,
                                                   "frame_duration": 60}}))
        await ws.recv()
        await ws.send(json.dumps({"type": "listen", "state": "start", "mode": mode}))
        done = asyncio.Event()
        t_end: list[float] = []

        async def reader() -> None:
            while True:
                m = await ws.recv()
                now = time.perf_counter()
                if isinstance(m, bytes):
                    marks.setdefault("audio", now)
                    done.set()
                    return
                msg = json.loads(m)
                if msg["type"] == "stt":
                    marks.setdefault("stt", now)
                    marks["text"] = msg["text"]  # type: ignore[assignment]
                elif msg["type"] == "tts" and msg["state"] == "sentence_start":
                    marks.setdefault("sentence", now)
                elif msg["type"] == "tts" and msg["state"] == "stop":
                    done.set()
                    return

        task = asyncio.create_task(reader())
        t0 = time.perf_counter()
        i = 0
        while not done.is_set() and i < len(packets) + 200:  # at most 12 s of trailing silence
            due = t0 + i * 0.06
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(packets[i] if i < len(packets) else enc.encode(quiet)[0])  # a live mic: fresh frames
            if i == end_packet:
                t_end.append(time.perf_counter())
            if mode == "manual" and i == end_packet:
                await ws.send(json.dumps({"type": "listen", "state": "stop"}))
            i += 1
        await asyncio.wait_for(done.wait(), 60)
        await ws.send(json.dumps({"type": "abort"}))
        task.cancel()
    end = t_end[0]
    return {k: (v - end) * 1000 for k, v in marks.items() if isinstance(v, float)} | {"heard": marks.get("text", "")}


async def run_bench(url: str, rounds: int, modes: list[str]) -> dict:
    from pocketgpt.relay.voice.evalsets import REQUESTS

    cache: dict = {}
    out: dict = {}
    for mode in modes:
        rows = []
        for _ in range(rounds):
            for text in REQUESTS:
                row = await one_turn(url, text, mode, cache)
                rows.append(row)
                print(f"{mode} {text!r}: heard {row.get('heard')!r}, first audio {row.get('audio', float('nan')):.0f} ms",
                      file=sys.stderr, flush=True)
        summary = {}
        for key in ("stt", "sentence", "audio"):
            xs = [row[key] for row in rows if key in row]
            summary[key] = {"p50_ms": round(percentile(xs, 50)), "p90_ms": round(percentile(xs, 90)),
                            "mean_ms": round(statistics.mean(xs)) if xs else None, "n": len(xs)}
        out[mode] = summary
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:host")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the 12 held-out requests (default 2)")
    ap.add_argument("--modes", default="auto,manual")
    ap.add_argument("--max-tokens", type=int, default=32, help="reply length in tokens (default 32)")
    ap.add_argument("--sentences-only", action="store_true",
                    help="speak whole sentences only (no clause cuts), to compare")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_child:
        return serve_child(args)

    from pocketgpt.relay.voice.session import VoiceConfig

    try:
        with relay_child_process(Path(__file__).resolve(), "--serve-child", args.model, args.max_tokens,
                                 ("--sentences-only",) if args.sentences_only else ()) as url:
            result = asyncio.run(run_bench(url, args.rounds, args.modes.split(",")))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    silence_ms = VoiceConfig().vad.silence_ms
    report = {"model": args.model, "max_tokens": args.max_tokens, "rounds": args.rounds,
              "pieces": "sentences" if args.sentences_only else "sentences and clauses",
              "vad_silence_ms": silence_ms, "load_avg": os.getloadavg()[0], "modes": result}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model {args.model}, reply {args.max_tokens} tokens, spoken in {report['pieces']}, "
          f"load average {report['load_avg']:.1f}, "
          f"relay VAD silence window {silence_ms} ms (the anchor: auto mode waits this long by design)")
    print(f"{'mode':8} {'end of speech ->':18} {'p50 ms':>8} {'p90 ms':>8} {'n':>4}")
    for mode, summary in result.items():
        for key, label in (("stt", "stt text"), ("sentence", "first sentence"), ("audio", "first audio byte")):
            s = summary[key]
            print(f"{mode:8} {label:18} {s['p50_ms']:>8} {s['p90_ms']:>8} {s['n']:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
