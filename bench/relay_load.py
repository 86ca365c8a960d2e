"""Relay load benchmark: 1, 8 and 32 concurrent devices on loopback.

Starts `pocketgpt serve` as its own process (so its memory is the relay's alone), connects N
websocket clients that speak the pocketgpt text extension, has each generate --tokens tokens at
the same moment, and reports aggregate tokens/s, time to first token (p50/p99) and the relay's
resident memory. The anchor, measured in the same run on the same machine, is the engine
alone generating one stream in this process: the "x engine" column is aggregate relay
throughput over that, so a noisy shared machine moves both sides together.

    python bench/relay_load.py --model builtin:host [--clients 1,8,32] [--tokens 64] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from _common import percentile, rss_kib, start_relay, stop_process


def anchor_tok_s(model: str, tokens: int, threads: int | None) -> float:
    """One stream straight from the engine in this process: the yardstick for the relay."""
    from pocketgpt import models
    from pocketgpt.engine import Engine

    eng = Engine(str(models.resolve(model)), threads=threads)
    sess = eng.session()
    ids = eng.tokenize("The history of the city begins")
    t0 = time.perf_counter()
    n = sum(1 for _ in sess.generate(ids, max_tokens=tokens, seed=1, stop_at_eos=False))
    return n / (time.perf_counter() - t0)


async def one_round(url: str, n: int, tokens: int) -> dict:
    from pocketgpt.relay.client import RelayClient

    clients = [RelayClient(url) for _ in range(n)]
    await asyncio.gather(*(c.__aenter__() for c in clients))
    start = asyncio.Event()

    async def run(i: int, c: RelayClient) -> tuple[int, float]:
        await start.wait()
        t0 = time.perf_counter()
        # stop_at_eos stays on in the relay; a long prompt-independent count needs a high cap
        r = await c.generate(f"Device {i} asks: tell me about the sea,", max_tokens=tokens, seed=i)
        if r.error:
            raise RuntimeError(f"client {i}: {r.error}")
        return r.tokens, (r.first_piece_s if r.first_piece_s is not None else time.perf_counter() - t0)

    tasks = [asyncio.create_task(run(i, c)) for i, c in enumerate(clients)]
    t0 = time.perf_counter()
    start.set()
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    await asyncio.gather(*(c.__aexit__(None, None, None) for c in clients))
    total = sum(t for t, _ in results)
    ttfts = [f for _, f in results]
    return {"clients": n, "tokens": total, "wall_s": wall, "tok_s": total / wall,
            "ttft_p50_ms": 1000 * statistics.median(ttfts), "ttft_p99_ms": 1000 * percentile(ttfts, 99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:host")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--tokens", type=int, default=64, help="tokens each client asks for")
    ap.add_argument("--workers", type=int, default=None, help="relay --workers (default: the relay's)")
    ap.add_argument("--threads", type=int, default=None, help="relay --threads (default: the engine's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    counts = [int(x) for x in args.clients.split(",")]

    extra = ["--open", "--model", args.model, "--max-sessions", str(max(counts) + 8), "--rate", "100000",
             "--burst", "100000"]
    if args.workers:
        extra += ["--workers", str(args.workers)]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    try:
        proc, url, _ = start_relay(extra)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        idle_rss, _ = rss_kib(proc.pid)
        asyncio.run(one_round(url, 1, 4))  # warm-up: first-touch of the weights
        rows = []
        for n in counts:
            row = asyncio.run(one_round(url, n, args.tokens))
            row["rss_mib"], row["peak_rss_mib"] = (round(v / 1024, 1) for v in rss_kib(proc.pid))
            rows.append(row)
    finally:
        stop_process(proc)
    anchor = anchor_tok_s(args.model, args.tokens, args.threads)
    for r in rows:
        r["x_engine"] = r["tok_s"] / anchor
    if args.json:
        print(json.dumps({"model": args.model, "tokens_per_client": args.tokens, "anchor_engine_tok_s": anchor,
                          "idle_rss_mib": round(idle_rss / 1024, 1), "rows": rows}))
        return 0
    print(f"model {args.model}, {args.tokens} tokens per client, loopback; anchor: engine alone, one stream, "
          f"{anchor:.1f} tok/s; relay idle RSS {idle_rss / 1024:.0f} MiB")
    print()
    print("| devices | aggregate tok/s | x engine alone | TTFT p50 (ms) | TTFT p99 (ms) | relay RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['clients']} | {r['tok_s']:.1f} | {r['x_engine']:.2f} | {r['ttft_p50_ms']:.0f} | "
              f"{r['ttft_p99_ms']:.0f} | {r['rss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
