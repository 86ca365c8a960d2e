"""Does every chat path answer? The held-out requests of bench/chat.py, asked through the product
paths instead of the C engine directly, for each model:

  xiaozhi  `pocketgpt serve --open` as its own process, a XiaoZhi typed-text turn (listen detect)
           over the websocket per request; the reply is the tts sentence_start texts
  openai   the same relay, POST /v1/chat/completions (seed 1000 + request number)
  sim      the device simulator (`pocketgpt device`: firmware/app + the POSIX port), console turns
           `/local REQUEST` on the device's own model, no relay (gen.seed 1000 + request number)

    python bench/chat_paths.py --models builtin:host builtin:device --requests 240

Every path runs with its product defaults (relay: 64 tokens a reply; device: gen.max_tokens 48,
its sampler settings) and its reply guards (no end before 3 words, a cut reply ends at its last
sentence end, a reply without a word becomes chat_format.EMPTY_REPLY). Per path and model:
answered (at least 3 words of the model's, chat_format.count_words: the engine's and the
bench's one count; the empty-reply sentence has 6 words but is not counted as answered), how
often the empty-reply sentence stood in for a reply, replies with 1-2 words, replies with none,
and errors (a refusal, a turn with no tts stop, a crash), and on topic (the reply names the
request's subject: chatdata.on_topic, as in bench/chat.py). The relay runs with its rate limit
raised (one bench device asks hundreds of times a minute); nothing else is changed.

Writes bench/results/chat_paths.json and prints the table (docs/chat.md, "Through the product paths").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import start_relay, stop_process
from chat import FORTUNES, ROOT, held_out_requests

PATHS = ("xiaozhi", "openai", "sim")
DEVICE_ID = "02:00:00:00:be:17"


def row(request: str, reply: str, finish: str, error: str | None = None) -> dict:
    from pocketgpt.chat_format import EMPTY_REPLY, count_words

    return {"request": request, "reply": reply, "finish": finish, "error": error, "words": count_words(reply),
            "fallback": EMPTY_REPLY in reply}


async def xiaozhi_turns(ws_url: str, requests: list[str], turn_timeout: float) -> list[dict]:
    """One websocket session, one typed-text turn per request, as a stock XiaoZhi client sends them."""
    from pocketgpt.relay.client import RelayClient

    rows = []
    async with RelayClient(ws_url, device_id=DEVICE_ID, extension=False) as client:
        for text in requests:
            await client.ws.send(json.dumps({"type": "listen", "state": "detect", "text": text,
                                             "session_id": client.hello.get("session_id", "")}))
            said, error = [], None
            try:
                while True:
                    msg = await asyncio.wait_for(client.recv(), turn_timeout)
                    if msg.get("type") == "tts" and msg.get("state") == "sentence_start":
                        said.append(msg.get("text", "").strip())
                    elif msg.get("type") == "error":
                        error = f"{msg.get('code')}: {msg.get('message')}"
                    if msg.get("type") == "tts" and msg.get("state") == "stop":
                        break
            except asyncio.TimeoutError:
                error = (error or "") + f" (no tts stop within {turn_timeout:.0f} s)"
            rows.append(row(text, " ".join(s for s in said if s), "turn", error))
    return rows


def openai_turns(http_url: str, requests: list[str], turn_timeout: float) -> list[dict]:
    rows = []
    for i, text in enumerate(requests):
        body = json.dumps({"model": "pocketgpt", "messages": [{"role": "user", "content": text}],
                           "seed": 1000 + i}).encode()
        req = urllib.request.Request(http_url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=turn_timeout) as resp:
                choice = json.loads(resp.read())["choices"][0]
            rows.append(row(text, choice["message"]["content"] or "", choice.get("finish_reason") or "?"))
        except urllib.error.HTTPError as exc:
            rows.append(row(text, "", "error", f"HTTP {exc.code}: {exc.read().decode(errors='replace')[:200]}"))
        except OSError as exc:
            rows.append(row(text, "", "error", f"{type(exc).__name__}: {exc}"))
    return rows


def run_relay(model: str, paths: list[str], requests: list[str], threads: int | None,
              turn_timeout: float) -> dict[str, list[dict]]:
    args = ["--model", model, "--open", "--rate", "100000", "--burst", "1000"]
    if threads:
        args += ["--threads", str(threads)]
    proc, ws_url, http_url = start_relay(args)
    out: dict[str, list[dict]] = {}
    try:
        if "xiaozhi" in paths:
            out["xiaozhi"] = asyncio.run(xiaozhi_turns(ws_url, requests, turn_timeout))
        if "openai" in paths:
            out["openai"] = openai_turns(http_url, requests, turn_timeout)
    finally:
        stop_process(proc)
    return out


_SEED_LINE = re.compile(r"^ok: gen\.seed = (\d+)$", re.M)
_STATS_LINE = re.compile(r"\n\(local: (\d+) tokens, (\w+)\)\s*$")


def parse_sim(stdout: str, n: int) -> list[tuple[str, str, str | None]]:
    """(reply, finish, error) per request from the simulator's console output: each request follows
    its `/set gen.seed` line, whose "ok: gen.seed = N" reply marks where its answer starts."""
    marks = list(_SEED_LINE.finditer(stdout))
    got: list[tuple[str, str, str | None]] = []
    for k in range(n):
        if k >= len(marks):
            got.append(("", "error", "no answer (the simulator stopped)"))
            continue
        end = marks[k + 1].start() if k + 1 < len(marks) else len(stdout)
        block = stdout[marks[k].end():end].strip("\n")
        m = _STATS_LINE.search("\n" + block)
        if not block.startswith("[local] "):
            got.append(("", "error", block[:200] or "no answer"))
        elif m is None:  # an answer without its stats line: the device's one-line error
            got.append(("", "error", block[:200]))
        else:
            got.append((("\n" + block)[:m.start()].removeprefix("\n[local] ").strip(), m.group(2), None))
    return got


def run_sim(model: str, requests: list[str], timeout: float) -> list[dict]:
    """All requests in one simulator process (the device answers one console turn after another)."""
    with tempfile.TemporaryDirectory(prefix="pg-chat-paths-") as home:
        env = {**os.environ, "POCKETGPT_HOME": home}
        script = "".join(f"/set gen.seed {1000 + i}\n/local {text}\n" for i, text in enumerate(requests))
        cmd = [sys.executable, "-m", "pocketgpt", "device", "--model", model, "--settings",
               str(Path(home) / "dev.conf"), "--device-id", DEVICE_ID]
        try:
            done = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=timeout, env=env)
            stdout, failed = done.stdout, (done.stderr.strip().splitlines() or [""])[-1] if done.returncode else None
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            failed = f"the simulator ran past {timeout:.0f} s"
    if failed:
        print(f"simulator: {failed}", file=sys.stderr)  # the requests it did not answer count as errors
    return [row(text, reply, finish, error)
            for text, (reply, finish, error) in zip(requests, parse_sim(stdout, len(requests)))]


def summarize(model: str, path: str, rows: list[dict], seconds: float) -> dict:
    n = len(rows)
    ok = [r for r in rows if not r["error"]]
    return {
        "model": model, "path": path, "n": n,
        "answered": sum(r["words"] >= 3 for r in rows),
        "answered_not_fallback": sum(r["words"] >= 3 and not r["fallback"] for r in rows),
        "fallback": sum(r["fallback"] for r in rows),
        "short": sum(0 < r["words"] < 3 for r in ok),
        "empty": sum(r["words"] == 0 for r in ok),
        "errors": n - len(ok),
        "on_topic": sum(bool(r.get("on_topic")) for r in rows),
        "mean_words": sum(r["words"] for r in rows) / max(n, 1),
        "finish": {f: sum(r["finish"] == f for r in rows) for f in sorted({r["finish"] for r in rows})},
        "seconds": round(seconds, 1), "rows": rows,
    }


def table(results: list[dict]) -> str:
    lines = ["| model | path | requests | answered: >= 3 words of the model's | the empty-reply sentence instead | "
             "1-2 words | no word | errors | on topic | mean words |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n, a = r["n"], r["answered_not_fallback"]
        lines.append(f"| {r['model']} | {r['path']} | {n} | {a} ({100 * a / n:.1f} %) | {r['fallback']} | "
                     f"{r['short']} | {r['empty']} | {r['errors']} | {100 * r['on_topic'] / n:.1f} % | "
                     f"{r['mean_words']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["builtin:host", "builtin:device"])
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    ap.add_argument("--corpus", nargs="+", default=[FORTUNES], help="the corpus the split is made of (as bench/chat.py)")
    ap.add_argument("--extra", nargs="*", default=[], help="training-only corpora (as bench/chat.py)")
    ap.add_argument("--seed", type=int, default=1337, help="split seed (the shipped models': 1337)")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--request-seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="relay engine threads")
    ap.add_argument("--turn-timeout", type=float, default=120.0, help="seconds one relay turn may take")
    ap.add_argument("--sim-timeout", type=float, default=3600.0, help="seconds the simulator may take for all")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "chat_paths.json"))
    args = ap.parse_args(argv)

    _, reqs = held_out_requests(args.corpus, args.seed, args.val_fraction, args.extra, args.requests,
                                args.request_seed)
    requests = [r.request for r in reqs]

    def with_topic(rows: list[dict]) -> list[dict]:
        """Each row marked on topic as bench/chat.py marks it (chatdata.on_topic: the reply names the
        request's subject or a word of the same stem)."""
        from pocketgpt.chatdata import on_topic

        for req, r in zip(reqs, rows):
            r["on_topic"] = bool(req.subject and on_topic(r["reply"], req.subject))
        return rows
    print(f"{len(requests)} requests", file=sys.stderr)
    results = []
    for model in args.models:
        relay_paths = [p for p in args.paths if p != "sim"]
        if relay_paths:
            t0 = time.time()
            got = run_relay(model, relay_paths, requests, args.threads, args.turn_timeout)
            for path, rows in got.items():
                results.append(summarize(model, path, with_topic(rows), time.time() - t0))
        if "sim" in args.paths:
            t0 = time.time()
            results.append(summarize(model, "sim", with_topic(run_sim(model, requests, args.sim_timeout)), time.time() - t0))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"args": vars(args), "results": results}, indent=1, ensure_ascii=False))
    tmp.replace(out)
    print(table(results))
    for r in results:
        for x in r["rows"]:
            if x["words"] < 3 or x["fallback"] or x["error"]:
                print(f"{r['model']} {r['path']}: {x['request']!r} -> {x['reply']!r} ({x['finish']}, {x['error']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
