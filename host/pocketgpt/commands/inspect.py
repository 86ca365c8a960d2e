"""pocketgpt inspect: what a model file holds."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="metadata, tensors and sizes of a model",
                       description="Show a model's configuration, tokenizer, tensors (type, shape, bytes) "
                                   "and metadata. MODEL is a .gguf path, a HF folder or builtin:NAME.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--tensors", action="store_true", help="list every tensor")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pocketgpt import models
    from pocketgpt.cli import emit
    from pocketgpt.quant.formats import type_name

    mf = models.load(args.model)
    cfg = mf.cfg
    types: dict[str, int] = {}
    for t in mf.tensors.values():
        types[type_name(t.qtype)] = types.get(type_name(t.qtype), 0) + t.n_bytes
    weight_bytes = sum(t.n_bytes for t in mf.tensors.values())
    n_params = mf.n_params()
    result = {
        "path": str(mf.path), "arch": "gpt2", "name": mf.metadata.get("general.name"),
        "n_params": n_params, "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
        "n_ff": cfg.n_ff, "n_vocab": cfg.n_vocab, "n_ctx": cfg.n_ctx, "n_merges": len(mf.vocab.merges),
        "tied_head": mf.tied, "file_bytes": mf.file_bytes, "weight_bytes": weight_bytes,
        "bpw": round(8 * weight_bytes / n_params, 3), "bytes_by_type": types,
        "tensors": [{"name": t.name, "type": type_name(t.qtype), "shape": list(t.shape), "bytes": t.n_bytes}
                    for t in mf.tensors.values()],
        "metadata": {k: v for k, v in mf.metadata.items() if isinstance(v, (str, int, float, bool))},
    }
    lines = [
        f"{mf.path}",
        f"  gpt2: {n_params:,} parameters, {cfg.n_layer} layers, n_embd {cfg.n_embd}, {cfg.n_head} heads, "
        f"n_ff {cfg.n_ff}, context {cfg.n_ctx}",
        f"  tokenizer: {cfg.n_vocab:,} tokens, {len(mf.vocab.merges):,} merges, eos {mf.vocab.eos_id}, "
        f"head {'tied to token_embd' if mf.tied else 'separate'}",
        f"  size: {mf.file_bytes:,} bytes in the file, {weight_bytes:,} in tensors ({result['bpw']} bits/weight)",
        "  by type: " + ", ".join(f"{k} {v:,} B" for k, v in sorted(types.items())),
    ]
    if args.tensors:
        lines += [f"  {t.name:<28} {type_name(t.qtype):<6} {str(tuple(t.shape)):<16} {t.n_bytes:>12,}"
                  for t in mf.tensors.values()]
    emit(args, result, "\n".join(lines))
    return 0
