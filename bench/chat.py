"""Does the bot answer what was asked? Held-out requests about held-out quotes, for the chat models
(prompt in the chat layout of pocketgpt.chat_format), for raw continuation (the request fed as
plain text, as the relay did before the layout existed), and for a retrieval anchor (the
training quote BM25 ranks best for the request), all in one run.

    python bench/chat.py --chat builtin:host builtin:device --raw runs/old/host.gguf runs/old/device.gguf

Requests: `pocketgpt.chatdata.eval_requests` over the held-out quotes of the shipped split
(Debian's fortunes, 5 % held out with seed 1337: the quotes `pocketgpt train` writes to
heldout.txt and every bpb in docs/models.md is measured on), in the evaluation phrasings, none
of which training used. A request's subject is a content word of its held-out quote.

Per system: answered (the reply has at least 3 words, counted as every chat path counts them:
chat_format.count_words), on topic (the reply holds the subject
word or a word of the same stem: chatdata.on_topic), mean reply length in words, and how the
reply ended. Sampling: the engine's defaults (temperature 0.8, top-k 40, top-p 0.95, repeat
penalty 1.1), one fixed seed per request, at most 64 tokens, stop at end-of-text or a new "Q:"
line. The prompt is rendered with chat_format.render_ids and run on the C engine directly. Each
chat model runs twice: alone ("chat layout": the model's own reply, no guards) and as the product's
chat paths run it ("chat layout, steered": subject-steered decoding to chat_format.subject_of of the
request, no end before 3 words, the engine's pg_topic_steer and need_word).

Writes bench/results/chat.json and prints the table and sample exchanges (docs/chat.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORTUNES = "/usr/share/games/fortunes"


def held_out_split(corpus: list[str], seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    from pocketgpt.corpus import read_documents
    from pocketgpt.train import split_documents

    train, held = split_documents(read_documents(corpus), val_fraction, seed)
    keep = {d.strip() for d in held}
    return [d for d in train if d.strip() not in keep], held


def reply_words(text: str) -> int:
    """Words as every chat path counts them (chat_format.count_words: whitespace-separated, with a
    letter or number); answered means at least 3."""
    from pocketgpt.chat_format import count_words

    return count_words(text)


def held_out_requests(corpus: list[str], seed: int, val_fraction: float, extra: list[str], n: int,
                      request_seed: int) -> tuple[list[str], list]:
    """(training documents, n evaluation requests about held-out quotes): what every chat bench asks."""
    from pocketgpt.chatdata import SubjectPicker, eval_requests
    from pocketgpt.corpus import read_documents

    train_docs, held = held_out_split(corpus, seed, val_fraction)
    if extra:
        keep = {d.strip() for d in held}
        train_docs += [d for d in read_documents(extra) if d.strip() not in keep]
    return train_docs, eval_requests(held, n, request_seed, picker=SubjectPicker(train_docs))


def generate(engine, ids: list[int], seed: int, max_tokens: int, subject: str | None = None) -> tuple[str, str]:
    from pocketgpt.chat_format import MIN_WORDS, STOP_STRINGS

    sess = engine.session()
    kw = {"subject": subject, "need_word": MIN_WORDS} if subject is not None else {}
    text = "".join(p.text for p in sess.generate(ids, max_tokens=max_tokens, seed=seed, stop=STOP_STRINGS,
                                                  stop_at_eos=True, **kw))
    return text.strip(), sess.last_stats.get("finish_reason", "?")


def run_model(spec: str, mode: str, requests, max_tokens: int, threads: int | None) -> dict:
    from pocketgpt import chat_format
    from pocketgpt.chatdata import on_topic
    from pocketgpt.engine import Engine
    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.models import resolve

    path = resolve(spec)
    template = read_gguf(path).metadata.get(chat_format.TEMPLATE_KEY) if mode != "raw" else None
    engine = Engine(str(path), threads=threads)
    rows = []
    t0 = time.time()
    for i, req in enumerate(requests):
        subject = None
        if mode == "steered":  # the product's chat paths: subject_of the request, steered, no end before 3 words
            subject = chat_format.subject_of(req.request) or ""
        if mode in ("chat", "steered"):
            ids = [engine.eos_id] + chat_format.render_ids(engine.tokenize, engine.eos_id,
                                                           [{"role": "user", "content": req.request}], template)
        else:
            ids = [engine.eos_id] + engine.tokenize(req.request, special=False)
        text, reason = generate(engine, ids, seed=1000 + i, max_tokens=max_tokens, subject=subject)
        rows.append({"request": req.request, "subject": req.subject, "kind": req.kind, "reply": text,
                     "finish": reason, "words": reply_words(text),
                     "on_topic": bool(req.subject and on_topic(text, req.subject))})
    label = {"chat": "chat layout", "steered": "chat layout, steered", "raw": "raw"}[mode]
    return summarize(f"{spec} ({label})", rows, time.time() - t0)


def run_anchor(train_docs: list[str], requests) -> dict:
    from pocketgpt.chatdata import BM25, on_topic

    bm = BM25(train_docs)
    rows = []
    t0 = time.time()
    for req in requests:
        text = (bm.best(req.request) or "").strip()
        rows.append({"request": req.request, "subject": req.subject, "kind": req.kind, "reply": text,
                     "finish": "retrieved", "words": reply_words(text),
                     "on_topic": bool(req.subject and on_topic(text, req.subject))})
    return summarize("BM25 over training quotes (anchor)", rows, time.time() - t0)


def summarize(name: str, rows: list[dict], seconds: float) -> dict:
    n = len(rows)
    kinds: dict[str, list[bool]] = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(r["on_topic"])
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["finish"]] = reasons.get(r["finish"], 0) + 1
    return {
        "system": name, "n": n,
        "answered": sum(r["words"] >= 3 for r in rows) / n,
        "empty": sum(r["words"] == 0 for r in rows) / n,
        "on_topic": sum(r["on_topic"] for r in rows) / n,
        "mean_words": sum(r["words"] for r in rows) / n,
        "on_topic_by_kind": {k: sum(v) / len(v) for k, v in sorted(kinds.items())},
        "finish": reasons, "seconds": round(seconds, 1), "rows": rows,
    }


def table(results: list[dict]) -> str:
    lines = ["| system | requests | answered (>= 3 words) | empty | on topic | mean words | ends: stop / length |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        f = r["finish"]
        ends = f"{f.get('stop', 0)} / {f.get('length', 0)}" if "retrieved" not in f else "—"
        lines.append(f"| {r['system']} | {r['n']} | {100 * r['answered']:.1f} % | {100 * r['empty']:.1f} % | "
                     f"{100 * r['on_topic']:.1f} % | {r['mean_words']:.1f} | {ends} |")
    return "\n".join(lines)


def samples(result: dict, k: int, seed: int) -> str:
    rows = random.Random(seed).sample(result["rows"], min(k, len(result["rows"])))
    out = [f"**{result['system']}**", ""]
    for r in rows:
        reply = r["reply"].replace("\n", " / ") or "(nothing)"
        mark = "on topic" if r["on_topic"] else "off topic"
        out.append(f"- *{r['request']}* → {reply}  ({mark})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chat", nargs="*", default=["builtin:host", "builtin:device"], help="models run in the chat layout")
    ap.add_argument("--raw", nargs="*", default=[], help="models fed the request raw (today's continuation)")
    ap.add_argument("--corpus", nargs="+", default=[FORTUNES], help="the corpus the split is made of")
    ap.add_argument("--extra", nargs="*", default=[], help="training-only corpora (searched by the anchor too)")
    ap.add_argument("--seed", type=int, default=1337, help="split seed (the shipped models': 1337)")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--requests", type=int, default=240)
    ap.add_argument("--first", type=int, default=None, help="run only the first N requests (a quick look)")
    ap.add_argument("--request-seed", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "chat.json"))
    args = ap.parse_args(argv)

    train_docs, requests = held_out_requests(args.corpus, args.seed, args.val_fraction, args.extra, args.requests,
                                             args.request_seed)
    if args.first:
        requests = requests[:args.first]
    print(f"{len(requests)} requests about {len({r.reply for r in requests})} held-out quotes", file=sys.stderr)

    results = [run_model(m, mode, requests, args.max_tokens, args.threads) for m in args.chat
               for mode in ("chat", "steered")]
    results += [run_model(m, "raw", requests, args.max_tokens, args.threads) for m in args.raw]
    results.append(run_anchor(train_docs, requests))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    tmp.replace(out)
    print(table(results))
    for r in results:
        print("\non topic by kind:", r["system"], {k: f"{100 * v:.0f} %" for k, v in r["on_topic_by_kind"].items()})
    for r in results:
        print()
        print(samples(r, args.samples, seed=3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
