"""Relay soak: N simulated devices for M minutes with normal, aborted, oversized and malicious
requests, on loopback only. Every normal request must be answered, no generation may hang, and
the relay's resident memory must stay bounded.

Starts `pocketgpt serve` as its own process (its memory is the relay's alone) with one token per
device, then runs every device as a loop that picks one request at a time:

- normal:    pg.generate over the websocket, a XiaoZhi text turn (listen detect), an HTTP
             completion; each must end with pg.done / tts stop / HTTP 200;
- aborted:   pg.generate then abort after the first piece (must end with reason abort), or the
             connection dropped mid-reply without a close frame;
- oversized: a prompt over --max-prompt-chars (error prompt_too_long), a frame over the message
             limit (close 1009);
- malicious: top_k 2^31, a lone-surrogate or 300-byte stop string, garbage JSON, a 60,000-deep
             JSON body, a wrong token (401), a Device-Id with a newline.

At the end /healthz must count no live generation within 30 s ("hung generations" is what is
left). RSS is sampled every 2 s; the first sample after a 15 s warm-up is "start".

    python bench/relay_soak.py [--devices 32] [--minutes 3] [--model builtin:device] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import rss_kib, start_relay, stop_process

KINDS = {  # kind: (weight, class)
    "ws_generate": (30, "normal"), "xiaozhi_turn": (10, "normal"), "http_completion": (15, "normal"),
    "abort_mid_reply": (10, "aborted"), "drop_connection": (5, "aborted"),
    "prompt_too_long": (5, "oversized"), "frame_too_big": (3, "oversized"),
    "top_k_2_31": (4, "malicious"), "bad_stop": (4, "malicious"), "garbage_json": (4, "malicious"),
    "deep_json": (3, "malicious"), "wrong_token": (4, "malicious"), "newline_device_id": (3, "malicious"),
}


class Soak:
    def __init__(self, ws_url: str, http_url: str, tokens: dict[str, str], max_prompt_chars: int) -> None:
        self.ws_url, self.http_url, self.tokens = ws_url, http_url, tokens
        self.max_prompt_chars = max_prompt_chars
        self.done: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []

    def headers(self, dev: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[dev]}", "Device-Id": dev}

    async def device(self, dev: str, deadline: float, seed: int) -> None:
        import aiohttp

        rng = random.Random(seed)
        names = list(KINDS)
        weights = [KINDS[k][0] for k in names]
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                kind = rng.choices(names, weights)[0]
                try:
                    ok = await asyncio.wait_for(getattr(self, kind)(dev, http, rng), 120)
                except Exception as exc:  # a failure is counted, the device goes on
                    ok = False
                    self.failures.append(f"{kind}: {type(exc).__name__}: {exc}"[:200])
                (self.done if ok else self.failed)[kind] += 1

    async def _client(self, dev: str) -> Any:
        from pocketgpt.relay.client import RelayClient

        c = RelayClient(self.ws_url, token=self.tokens[dev], device_id=dev)
        await c.__aenter__()
        return c

    async def ws_generate(self, dev: str, http: Any, rng: random.Random) -> bool:
        c = await self._client(dev)
        try:
            r = await c.generate(f"Device {dev} says", max_tokens=rng.randint(4, 32), seed=rng.randint(0, 99))
            return r.error is None and r.reason in ("stop", "length")
        finally:
            await c.__aexit__(None, None, None)

    async def xiaozhi_turn(self, dev: str, http: Any, rng: random.Random) -> bool:
        c = await self._client(dev)
        try:
            msgs = await c.text_turn("Tell me a short story")
            return msgs[-1] == {"type": "tts", "state": "stop", "session_id": c.hello["session_id"]} and \
                not any(m.get("type") == "error" for m in msgs)
        finally:
            await c.__aexit__(None, None, None)

    async def http_completion(self, dev: str, http: Any, rng: random.Random) -> bool:
        async with http.post(self.http_url + "/v1/completions", headers=self.headers(dev),
                             json={"prompt": "The sea", "max_tokens": rng.randint(4, 32)}) as r:
            body = await r.json()
            return r.status == 200 and isinstance(body["choices"][0]["text"], str)

    async def abort_mid_reply(self, dev: str, http: Any, rng: random.Random) -> bool:
        c = await self._client(dev)
        try:
            await c.ws.send(json.dumps({"type": "pg.generate", "id": "a", "prompt": "Once", "max_tokens": 64}))
            first = await c.recv()
            if first.get("type") == "pg.done":
                return True  # ended before the abort could land
            await c.ws.send(json.dumps({"type": "abort", "id": "a"}))
            while (m := await c.recv())["type"] == "pg.delta":
                pass
            return m["type"] == "pg.done" and m["reason"] in ("abort", "stop", "length")
        finally:
            await c.__aexit__(None, None, None)

    async def drop_connection(self, dev: str, http: Any, rng: random.Random) -> bool:
        c = await self._client(dev)
        await c.ws.send(json.dumps({"type": "pg.generate", "id": "d", "prompt": "Once", "max_tokens": 64}))
        await c.recv()
        c.ws.transport.abort()
        return True

    async def prompt_too_long(self, dev: str, http: Any, rng: random.Random) -> bool:
        c = await self._client(dev)
        try:
            r = await c.generate("x" * (self.max_prompt_chars + 1), max_tokens=4)
            return r.error is not None and r.error["code"] == "prompt_too_long"
        finally:
            await c.__aexit__(None, None, None)

    async def frame_too_big(self, dev: str, http: Any, rng: random.Random) -> bool:
        from websockets.exceptions import ConnectionClosed

        c = await self._client(dev)
        try:
            await c.ws.send("x" * (70 * 1024))
            await c.recv()
            return False
        except ConnectionClosed:
            return c.ws.close_code == 1009
        finally:
            await c.__aexit__(None, None, None)

    async def _refused(self, dev: str, params: dict[str, Any]) -> bool:
        c = await self._client(dev)
        try:
            r = await c.generate("Hi", max_tokens=4, **params)
            return r.error is not None and r.error["code"] == "bad_message"
        finally:
            await c.__aexit__(None, None, None)

    async def top_k_2_31(self, dev: str, http: Any, rng: random.Random) -> bool:
        return await self._refused(dev, {"top_k": 2**31})

    async def bad_stop(self, dev: str, http: Any, rng: random.Random) -> bool:
        return await self._refused(dev, {"stop": [rng.choice(["\ud800", "y" * 300])]})

    async def garbage_json(self, dev: str, http: Any, rng: random.Random) -> bool:
        c = await self._client(dev)
        try:
            await c.ws.send("{not json")
            m = await c.recv()
            return m["type"] == "error" and m["code"] == "bad_json"
        finally:
            await c.__aexit__(None, None, None)

    async def deep_json(self, dev: str, http: Any, rng: random.Random) -> bool:
        async with http.post(self.http_url + "/v1/completions", data=b"[" * 30000 + b"]" * 30000,
                             headers={**self.headers(dev), "Content-Type": "application/json"}) as r:
            return r.status == 400

    async def wrong_token(self, dev: str, http: Any, rng: random.Random) -> bool:
        async with http.post(self.http_url + "/v1/completions", json={"prompt": "x"},
                             headers={"Authorization": "Bearer pgt_000000000000_nope"}) as r:
            return r.status == 401

    async def newline_device_id(self, dev: str, http: Any, rng: random.Random) -> bool:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        try:
            await connect(self.ws_url + "?device-id=a%0Aforged",
                          additional_headers={"Authorization": f"Bearer {self.tokens[dev]}"})
        except InvalidStatus as exc:
            return exc.response.status_code == 400
        return False


async def healthz(http_url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.get(http_url + "/healthz") as r:
            return await r.json()


async def soak(args: argparse.Namespace, proc: subprocess.Popen, ws_url: str, http_url: str,
               tokens: dict[str, str]) -> dict[str, Any]:
    s = Soak(ws_url, http_url, tokens, args.max_prompt_chars)
    deadline = time.monotonic() + args.minutes * 60
    rss: list[tuple[float, int]] = []

    async def sample() -> None:
        t0 = time.monotonic()
        while time.monotonic() < deadline + 5:
            rss.append((time.monotonic() - t0, rss_kib(proc.pid)[0]))
            await asyncio.sleep(2)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(s.device(dev, deadline, i) for i, dev in enumerate(tokens)))
    hung = None
    for _ in range(300):
        h = await healthz(http_url)
        hung = h["generations"]
        if hung == 0:
            break
        await asyncio.sleep(0.1)
    sampler.cancel()
    after_warmup = [kib for t, kib in rss if t >= 15] or [kib for _, kib in rss]
    by_class: collections.Counter[str] = collections.Counter()
    for kind, n in s.done.items():
        by_class[KINDS[kind][1]] += n
    normal_failed = sum(n for k, n in s.failed.items() if KINDS[k][1] == "normal")
    return {"devices": args.devices, "minutes": args.minutes, "model": args.model,
            "requests": dict(sorted((s.done + s.failed).items())), "by_class": dict(by_class),
            "failed": dict(s.failed), "normal_failed": normal_failed, "failures": s.failures[:10],
            "rss_start_mib": round(after_warmup[0] / 1024, 1), "rss_end_mib": round(rss[-1][1] / 1024, 1),
            "rss_max_mib": round(max(k for _, k in rss) / 1024, 1), "hung_generations": hung}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=32)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--model", default="builtin:device")
    ap.add_argument("--max-prompt-chars", type=int, default=2000)
    ap.add_argument("--rss-growth-mib", type=float, default=64.0,
                    help="fail when RSS at the end exceeds RSS after warm-up by more than this (default 64)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from pocketgpt.relay.auth import TokenStore

    with tempfile.TemporaryDirectory(prefix="pocketgpt-soak-") as home:
        store = TokenStore(Path(home))
        tokens = {f"50:00:00:00:00:{i:02x}": store.add(f"50:00:00:00:00:{i:02x}", handout=None)
                  for i in range(args.devices)}
        try:
            proc, ws_url, http_url = start_relay(
                ["--model", args.model, "--home", home, "--rate", "100000", "--burst", "100000", "--max-tokens", "64",
                 "--max-prompt-chars", str(args.max_prompt_chars)])
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        try:
            res = asyncio.run(soak(args, proc, ws_url, http_url, tokens))
        finally:
            stop_process(proc)
    ok = res["normal_failed"] == 0 and res["hung_generations"] == 0 and \
        res["rss_end_mib"] - res["rss_start_mib"] <= args.rss_growth_mib
    res["ok"] = ok
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['devices']} devices, {res['minutes']:g} min, model {res['model']}")
        print(f"{'request':<20} {'done':>6} {'failed':>6}")
        for kind in KINDS:
            print(f"{kind:<20} {res['requests'].get(kind, 0) - res['failed'].get(kind, 0):>6} "
                  f"{res['failed'].get(kind, 0):>6}")
        print(f"RSS after warm-up {res['rss_start_mib']} MiB, end {res['rss_end_mib']} MiB, max {res['rss_max_mib']} MiB")
        print(f"hung generations: {res['hung_generations']}; normal requests failed: {res['normal_failed']}")
        for f in res["failures"]:
            print("  failure:", f)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
