"""pocketgpt eval: perplexity and bits per byte; with --ref, KL divergence and top-1 agreement."""

from __future__ import annotations

import argparse

HELP = """\
Score MODEL on a text file with a sliding window over its context.

  pocketgpt eval builtin:host --text runs/host/heldout.txt
  pocketgpt eval q4.gguf --text heldout.txt --ref float.gguf     (quantization damage)

Reports perplexity (per token), bits per byte (fair across vocabularies) and, with --ref, the
mean KL divergence KL(ref || model) in nats per token and how often both pick the same top token.
A fortune file (quotes between `%` lines) is scored quote by quote, as the models are trained.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="perplexity, bits per byte, KL against a reference",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help=".gguf, Hugging Face folder, or builtin:NAME")
    p.add_argument("--text", required=True, metavar="FILE", help="UTF-8 text to score")
    p.add_argument("--ref", metavar="FLOAT_MODEL", default=None, help="reference model for KL and top-1")
    p.add_argument("--stride", type=int, default=None, help="window step in tokens (default: half the context)")
    p.add_argument("--backend", choices=["auto", "engine", "torch"], default="auto",
                   help="who computes logits for GGUF files (default: the C engine when built)")
    p.add_argument("--threads", type=int, default=None, help="engine threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from pocketgpt.cli import emit
    from pocketgpt.corpus import read_text
    from pocketgpt.evaluate import evaluate, make_scorer

    text = read_text(args.text)
    scorer = make_scorer(args.model, args.backend, args.threads)
    ref = make_scorer(args.ref, args.backend, args.threads) if args.ref else None
    res = evaluate(scorer, text, ref=ref, stride=args.stride, progress=sys.stderr.isatty())
    lines = [f"{args.model} on {args.text}: perplexity {res.ppl:.3f}, {res.bpb:.4f} bits/byte "
             f"({res.tokens:,} tokens, {res.bytes:,} bytes)"]
    if res.ref_ppl is not None and res.top1 is not None:  # scored against a reference
        lines.append(f"  against {args.ref}: mean KL {res.kl:.6f} nats/token, top-1 agreement {100 * res.top1:.2f} %, "
                     f"reference perplexity {res.ref_ppl:.3f} ({100 * (res.ppl / res.ref_ppl - 1):+.2f} %)")
    emit(args, {"model": args.model, **res.as_dict()}, "\n".join(lines))
    return 0
