"""The relay end to end, for `make demo`: start it, configure a device, talk to it, stop it.

    python -m pocketgpt.relay.demo [--model builtin:host] [--prompt TEXT]

1. registers a device in a throw-away token store and starts `pocketgpt serve` on free ports;
2. makes the device's configuration call (POST /xiaozhi/ota/) and gets the websocket URL + token;
3. a stock XiaoZhi client sends a typed-text turn (stt, tts start, sentence_start..., tts stop);
4. a pocketgpt device streams a reply over the text extension (pg.generate -> pg.delta -> pg.done);
5. an OpenAI-style client calls /v1/chat/completions;
6. SIGTERM: the relay drains and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

DEVICE = "de:mo:00:00:00:01"


async def talk(http: str, prompt: str, max_tokens: int) -> None:
    import aiohttp

    from pocketgpt.relay.client import RelayClient

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{http}/xiaozhi/ota/", json={"application": {"version": "1.0.0"}, "mac_address": DEVICE},
                          headers={"Device-Id": DEVICE}) as r:
            conf = await r.json()
        ws_url, token = conf["websocket"]["url"], conf["websocket"]["token"]
        print(f"[ota] device {DEVICE} -> {ws_url} (token {token[:12]}..., firmware {conf['firmware']['version']} echoed)")

        async with RelayClient(ws_url, token=token, device_id=DEVICE, extension=False) as stock:
            print(f"[xiaozhi] hello ok, session {stock.hello['session_id'][:8]}")
            for m in await stock.text_turn(prompt):
                if m["type"] == "stt":
                    print(f"[xiaozhi] stt: {m['text']}")
                elif m.get("state") == "sentence_start":
                    print(f"[xiaozhi] sentence: {m['text']}")
                elif m["type"] == "error":
                    print(f"[xiaozhi] error {m['code']}: {m['message']}")
                else:
                    print(f"[xiaozhi] tts {m['state']}")

        async with RelayClient(ws_url, token=token, device_id=DEVICE) as dev:
            print(f"[pocketgpt] hello ok, model {dev.hello['pocketgpt']['model']}; streaming:")
            sys.stdout.write(f"    you: {prompt}\n    bot: ")  # answered in the model's chat template
            async for kind, msg in dev.stream(prompt, max_tokens=max_tokens):
                if kind == "delta":
                    sys.stdout.write(msg["text"])
                    sys.stdout.flush()
                elif kind == "done":
                    print(f"\n[pocketgpt] done: {msg['tokens']} tokens, reason {msg['reason']}")
                else:
                    print(f"\n[pocketgpt] error {msg['code']}: {msg['message']}")

        body = {"model": "any", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
        async with s.post(f"{http}/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {token}"}) as r:
            reply = await r.json()
        if r.status == 200:
            print(f"[openai] chat.completions: {reply['choices'][0]['message']['content'].strip()!r} "
                  f"({reply['usage']['completion_tokens']} tokens)")
        else:
            print(f"[openai] HTTP {r.status}: {reply}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:host")
    ap.add_argument("--backend", default="engine", choices=["engine", "torch"])
    ap.add_argument("--prompt", default="Tell me something about small computers.")
    ap.add_argument("--max-tokens", type=int, default=40)
    args = ap.parse_args(argv)

    from pocketgpt.relay.auth import TokenStore

    with tempfile.TemporaryDirectory(prefix="pocketgpt-demo-") as home:
        TokenStore(Path(home)).add(DEVICE)
        cmd = [sys.executable, "-m", "pocketgpt", "serve", "--model", args.model, "--backend", args.backend,
               "--port", "0", "--http-port", "0", "--home", home, "--log-level", "warning", "--no-voice"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None  # stdout=PIPE
            line = proc.stdout.readline()
            m = re.search(r"http_port=(\d+)", line)
            if not m:
                proc.wait(30)
                print(f"relay demo: the relay did not start (exit {proc.returncode}); see the error above",
                      file=sys.stderr)
                return 1
            print(f"[relay] {line.strip()}")
            asyncio.run(talk(f"http://127.0.0.1:{m.group(1)}", args.prompt, args.max_tokens))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        print(f"[relay] SIGTERM: drained and exited with code {code}")
        return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
