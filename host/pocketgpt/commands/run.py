"""pocketgpt run: generate text with the C engine (no torch needed)."""

from __future__ import annotations

import argparse
import sys

HELP = """\
Generate a continuation of PROMPT with the C engine, streaming it to stdout as it is produced.

  pocketgpt run builtin:host -p "Life is" -n 40
  pocketgpt run model.gguf -p "Hello" -n 20 --greedy --json

With --json nothing streams; one object with text, prompt_tokens, tokens (generated ids),
prefill_tok_s, decode_tok_s and finish_reason is printed at the end.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="generate text with the C engine", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a .gguf path or builtin:host / builtin:device")
    p.add_argument("-p", "--prompt", required=True, help="the prompt text")
    p.add_argument("-n", "--tokens", type=int, default=64, help="how many tokens to generate (default 64)")
    p.add_argument("--greedy", action="store_true",
                   help="always take the most likely token (the argmax: no sampling, no repetition penalty)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="sample among the k most likely tokens (0: all; default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    p.add_argument("--repeat-penalty", type=float, default=1.1,
                   help="divide logits of recently seen tokens by this (1: off; default 1.1)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh each run)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text appears (repeatable; not printed)")
    p.add_argument("--ctx", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--ref", action="store_true", help="use the portable reference kernels")
    p.add_argument("--draft", default="auto", metavar="MODEL",
                   help="speculative decoding with this draft model (same text when greedy, same distribution "
                        "when sampling); 'auto' (default): a shipped pair measured to pay (none today, docs/speed.md); 'none': off")
    p.add_argument("--draft-tokens", type=int, default=3, metavar="K", help="tokens the draft proposes per round (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pocketgpt.cli import emit
    from pocketgpt.engine import Engine
    from pocketgpt.errors import PocketError
    from pocketgpt.speculative import open_draft

    if args.tokens < 0:
        raise PocketError(f"-n must be >= 0, got {args.tokens}")
    if args.threads is not None and args.threads < 1:
        raise PocketError(f"--threads must be >= 1, got {args.threads}")
    eng = Engine(args.model, n_ctx=args.ctx, threads=args.threads, force_ref=args.ref)
    draft = open_draft(eng, args.model, args.draft, args.draft_tokens)
    sess = eng.session()
    pieces = []
    stream = not args.json
    if stream:
        sys.stdout.write(args.prompt)
        sys.stdout.flush()
    for piece in sess.generate(args.prompt, max_tokens=args.tokens, temperature=args.temperature,
                               top_k=args.top_k, top_p=args.top_p, repeat_penalty=args.repeat_penalty,
                               seed=args.seed, greedy=args.greedy, stop=args.stop, draft=draft):
        pieces.append(piece.text)
        if stream and piece.text:
            sys.stdout.write(piece.text)
            sys.stdout.flush()
    stats = sess.last_stats
    if stream:
        sys.stdout.write("\n")
        print(f"[{stats['prompt_tokens']} prompt tokens, {len(stats['tokens'])} generated; "
              f"prefill {stats['prefill_tok_s']:.1f} tok/s, decode {stats['decode_tok_s']:.1f} tok/s, "
              f"{eng.threads} threads, {eng.kernels} kernels{_draft_note(stats)}]", file=sys.stderr)
        return 0
    emit(args, {
        "text": "".join(pieces),
        "prompt_tokens": stats["prompt_tokens"],
        "tokens": list(stats["tokens"]),
        "prefill_tok_s": round(stats["prefill_tok_s"], 2),
        "decode_tok_s": round(stats["decode_tok_s"], 2),
        "finish_reason": stats["finish_reason"],
        "threads": eng.threads,
        "kernels": eng.kernels,
        **({"draft_proposed": stats["draft_proposed"], "draft_accepted": stats["draft_accepted"]}
           if "draft_proposed" in stats else {}),
    })
    return 0


def _draft_note(stats: dict) -> str:
    if "draft_proposed" not in stats:
        return ""
    return f", draft accepted {stats['draft_accepted']}/{stats['draft_proposed']}"
