"""pocketgpt shrink: a device-sized GPT-2 from a bigger one (trim vocabulary, prune, distill)."""

from __future__ import annotations

import argparse

HELP = """\
Make a small GPT-2 from a bigger teacher, for the ESP32-S3:

  pocketgpt shrink builtin:host device.gguf --budget esp32s3 --corpus /usr/share/games/fortunes \\
      --max-minutes 15

1. vocabulary: keep the teacher's first K BPE merges (--vocab K). The result is still exact
   byte-level BPE (256 byte tokens + K merges + <|endoftext|>): it encodes and decodes any text,
   with fewer, shorter tokens; the kept tokens' embedding rows carry over.
2. structure: drop layers (--layers), heads and embedding width (--width, whole heads of the
   teacher's size), MLP neurons (--ff), each kept weight a slice of the teacher's.
3. distillation on --corpus: the teacher reads a --teacher-fraction sample of the corpus once
   (default a quarter), in its own tokens, and keeps the top --topk of its next-token distribution
   carried onto the trimmed vocabulary at every position (part-way through a teacher token:
   given the pieces already emitted) (--teacher-cache FILE keeps them for the next run); then --alpha x KL to those plus the rest
   cross-entropy, the KL weight falling to 0 over the first --kl-anneal of training (default
   half), for --distill-steps steps or --max-minutes, with a progress bar. --alpha 0: no KL and
   no teacher pass, the pruned student trains on the data alone. (Measured on the device model at
   equal total time: --alpha 0 beats training from scratch by 1 % in bits per byte, this KL
   recipe ties it, a constant KL over a full teacher pass loses; docs/models.md.)
   The held-out split (5 %, seed 1337, as 'pocketgpt train' makes it) is never trained on, nor any
   quote of the teacher folder's heldout.txt.
--budget esp32s3 picks the largest shape that fits the device budget (docs/budget.md) among the
values you allow and reports it; without it, unspecified sizes stay the teacher's.
--from-scratch trains the same shape from random weights with cross-entropy only (the baseline
that distillation must beat at equal time). The output is stored with --type (default q8: Q8_0
matrices, which the ESP32-S3's PIE kernel runs).
"""


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give an integer or a comma-separated list") from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give non-negative integers")
    return vals


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shrink", help="vocabulary trim, prune, distill (device model)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="teacher: .gguf, Hugging Face folder, or builtin:NAME")
    p.add_argument("output", metavar="OUT", help="output .gguf")
    p.add_argument("--corpus", nargs="+", metavar="PATH", default=None,
                   help="training text (files, folders, fortune files); required unless --distill-steps 0")
    p.add_argument("--budget", choices=["esp32s3"], default=None, help="pick a shape that fits this device")
    p.add_argument("--vocab", type=_ints, default=None, metavar="K[,K...]", help="BPE merges to keep")
    p.add_argument("--layers", type=_ints, default=None, metavar="N[,N...]", help="transformer layers")
    p.add_argument("--width", type=_ints, default=None, metavar="E[,E...]", help="embedding width (n_embd)")
    p.add_argument("--ff", type=_ints, default=None, metavar="F[,F...]", help="MLP width (n_ff)")
    p.add_argument("--ctx", type=int, default=None, help="context length (default: 256 with --budget, else the teacher's)")
    p.add_argument("--type", default="q8", metavar="TYPE", help="storage: f32, or a 'pocketgpt quantize' type (default q8)")
    p.add_argument("--distill-steps", type=int, default=1000, metavar="N", help="optimizer steps (default 1000)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this wall time")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the KL term (default 0.5)")
    p.add_argument("--kl-anneal", type=float, default=0.5, metavar="F",
                   help="the KL weight falls linearly from --alpha to 0 over this fraction of training, "
                        "then plain cross-entropy (default 0.5; 0: constant)")
    p.add_argument("--teacher-fraction", type=float, default=0.25, metavar="F",
                   help="the teacher scores a uniform sample of this fraction of the corpus, for that "
                        "fraction of its full pass's time (default 0.25)")
    p.add_argument("--topk", type=int, default=32, metavar="K",
                   help="teacher probabilities kept per position, on the student vocabulary (default 32)")
    p.add_argument("--teacher-cache", metavar="FILE", default=None,
                   help="keep the teacher's targets in FILE (.npz) and reuse them when teacher, vocabulary "
                        "and corpus match (the teacher runs once over the corpus either way)")
    p.add_argument("--teacher-minutes", type=float, default=None, metavar="M",
                   help="bound the teacher's pass: positions it did not reach train on cross-entropy only")
    p.add_argument("--from-scratch", action="store_true", help="random init, cross-entropy only (baseline)")
    p.add_argument("--exclude", metavar="FILE", default=None,
                   help="never train on the quotes of FILE (default: heldout.txt beside a teacher folder)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from pocketgpt.cli import emit, gguf_output
    from pocketgpt.errors import PocketError
    from pocketgpt.shrink.run import ShrinkOptions, shrink

    out = gguf_output(args.output)
    if args.distill_steps < 0 or args.batch < 1:
        raise PocketError("--distill-steps must be >= 0 and --batch >= 1")
    if args.distill_steps > 0 and not args.corpus:
        raise PocketError("distillation needs text: pass --corpus PATH (or --distill-steps 0)")
    if args.topk < 1:
        raise PocketError(f"--topk {args.topk}: give 1 or more")
    if args.teacher_minutes is not None and args.teacher_minutes <= 0:
        raise PocketError(f"--teacher-minutes {args.teacher_minutes}: give a positive number")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise PocketError(f"--max-minutes {args.max_minutes}: give a positive number")
    if not 0.0 <= args.kl_anneal <= 1.0:
        raise PocketError(f"--kl-anneal {args.kl_anneal}: give a fraction of training within 0..1 (0: constant)")
    if not 0.0 < args.teacher_fraction <= 1.0:
        raise PocketError(f"--teacher-fraction {args.teacher_fraction}: give a fraction of the corpus within (0, 1]")
    if not 0.0 <= args.alpha <= 1.0:
        raise PocketError(f"--alpha {args.alpha}: give a weight within 0..1")
    opts = ShrinkOptions(
        input=args.input, output=str(out), corpus=args.corpus or [], budget=args.budget, merges=args.vocab,
        layers=args.layers, widths=args.width, ffs=args.ff, n_ctx=args.ctx, qtype=args.type,
        steps=args.distill_steps, max_minutes=args.max_minutes, batch=args.batch, lr=args.lr, alpha=args.alpha,
        kl_anneal=args.kl_anneal, teacher_fraction=args.teacher_fraction, from_scratch=args.from_scratch,
        exclude=args.exclude, threads=args.threads,
        seed=args.seed, topk=args.topk, teacher_cache=args.teacher_cache,
        teacher_minutes=args.teacher_minutes, progress=sys.stderr.isatty() and not args.json,
    )
    result, text = shrink(opts)
    emit(args, result, text)
    return 0
