"""pocketgpt train: a GPT-2 from scratch, or fine-tuned from a checkpoint, on a text corpus."""

from __future__ import annotations

import argparse

HELP = """\
Train a GPT-2 on CORPUS (text files, folders, fortune files with `%` between quotes) and write a
Hugging Face folder to --out (then: pocketgpt convert OUT model.gguf).

  pocketgpt train /usr/share/games/fortunes --out runs/quotes --layers 4 --embd 256 --steps 3000
  pocketgpt train notes.txt --init gpt2 --out runs/ft --steps 500 --lr 1e-4     (fine-tune)
  pocketgpt train /usr/share/games/fortunes --out runs/quotes --steps 6000 --resume

A seeded 5 % of the documents is held out (OUT/heldout.txt) for validation loss and for
`pocketgpt eval`. Checkpoints go to OUT/checkpoint every --checkpoint-every steps.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pocketgpt.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train or fine-tune a GPT-2", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="+", metavar="CORPUS")
    p.add_argument("--out", required=True, help="output folder (Hugging Face format + checkpoint/)")
    p.add_argument("--extra", nargs="+", default=[], metavar="CORPUS",
                   help="more corpora used for training only (nothing of them is held out)")
    p.add_argument("--chat-mix", type=float, default=d.chat_mix, metavar="FRACTION",
                   help="share of training windows drawn from chat pairs made from the training quotes "
                        f"(pocketgpt.chatdata; default {d.chat_mix})")
    p.add_argument("--chat-pairs", type=int, default=d.chat_pairs, help=f"chat pairs to make (default {d.chat_pairs})")
    p.add_argument("--init", default=None, metavar="HF_ID_OR_DIR", help="fine-tune this checkpoint instead of starting fresh")
    p.add_argument("--layers", type=int, default=d.n_layer, help=f"transformer blocks (default {d.n_layer})")
    p.add_argument("--embd", type=int, default=d.n_embd, help=f"embedding width (default {d.n_embd})")
    p.add_argument("--heads", type=int, default=d.n_head, help=f"attention heads (default {d.n_head})")
    p.add_argument("--ctx", type=int, default=d.n_ctx, help=f"context length = training window (default {d.n_ctx})")
    p.add_argument("--batch", type=int, default=d.batch_size, help=f"windows per step (default {d.batch_size})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate, cosine decay (default {d.lr})")
    p.add_argument("--warmup", type=int, default=d.warmup, help=f"warm-up steps (default {d.warmup})")
    p.add_argument("--dropout", type=float, default=d.dropout, help=f"dropout (default {d.dropout})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed for data split, order and init (default {d.seed})")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="held-out share of documents")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="steps between validation passes")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this much wall time")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from pocketgpt.cli import emit
    from pocketgpt.train import TrainConfig, train

    cfg = TrainConfig(
        n_layer=args.layers, n_embd=args.embd, n_head=args.heads, n_ctx=args.ctx, batch_size=args.batch,
        steps=args.steps, lr=args.lr, warmup=min(args.warmup, max(1, args.steps // 10)), dropout=args.dropout,
        seed=args.seed, val_fraction=args.val_fraction, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, max_minutes=args.max_minutes, threads=args.threads,
        init=args.init, corpus=list(args.corpus), extra=list(args.extra), chat_mix=args.chat_mix,
        chat_pairs=args.chat_pairs,
    )
    res = train(cfg, args.out, resume=args.resume, progress=sys.stderr.isatty() or not args.json)
    emit(args, {"val_loss": res.val_loss, "train_loss": res.train_loss, "tokens_seen": res.tokens_seen,
                "steps": res.steps, "seconds": res.seconds, "n_params": res.n_params, "out": res.out},
         f"trained {res.n_params:,} parameters for {res.steps} steps ({res.tokens_seen:,} tokens, {res.seconds:.0f} s): "
         f"val loss {res.val_loss:.4f}; model in {res.out}")
    return 0
