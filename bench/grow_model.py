"""Grow builtin:host's float model (runs/host, 4 x 256) deeper without changing what it computes.

Block i of the source becomes blocks k*i .. k*i+k-1 of the grown model: every copy starts with the
source block's weights, and all copies but the first have their attention and MLP output
projections (c_proj weight and bias) set to zero, so they add nothing to the residual stream until
training moves them. The grown model's logits equal the source's at step 0 (checked below).
Used for docs/quality.md's second, larger model: the quantizers get a deeper subject without a
from-scratch training run this 2-core machine cannot afford. Usage:

    python bench/grow_model.py runs/host runs_large/init8 2   # 4 -> 8 layers, then pocketgpt train --init
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from pocketgpt.errors import PocketError
from pocketgpt.hf import load_hf, save_vocab


def main() -> int:
    ap = argparse.ArgumentParser(description="Grow a GPT-2 Hugging Face folder deeper, outputs unchanged.")
    ap.add_argument("src", type=Path, help="source Hugging Face folder (e.g. runs/host)")
    ap.add_argument("out", type=Path, help="folder for the grown model")
    ap.add_argument("copies", type=int, help="blocks per source block (2: twice as deep)")
    a = ap.parse_args()
    src, out, k = a.src, a.out, a.copies
    if k < 1:
        print(f"grow_model: copies {k} < 1", file=sys.stderr)
        return 2
    try:
        small, vocab = load_hf(str(src))
    except PocketError as exc:
        print(f"grow_model: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    cfg = copy.deepcopy(small.config)
    cfg.n_layer = small.config.n_layer * k
    big = GPT2LMHeadModel(cfg).eval()
    sd_small = small.state_dict()
    sd_big = {}
    for name, t in sd_small.items():
        if ".h." not in name:
            sd_big[name] = t.clone()
            continue
        pre, rest = name.split(".h.", 1)
        i, tail = rest.split(".", 1)
        for c in range(k):
            t2 = t.clone()
            if c and (tail.startswith("attn.c_proj") or tail.startswith("mlp.c_proj")):
                t2.zero_()
            sd_big[f"{pre}.h.{int(i) * k + c}.{tail}"] = t2
    missing, unexpected = big.load_state_dict(sd_big, strict=False)
    assert not unexpected and all("attn.bias" in m or "masked_bias" in m for m in missing), (missing, unexpected)
    big.tie_weights()
    x = torch.randint(0, cfg.vocab_size, (2, 64))
    with torch.no_grad():
        d = (big(input_ids=x).logits - small(input_ids=x).logits).abs().max().item()
    print(f"grown {small.config.n_layer} -> {cfg.n_layer} layers, "
          f"{sum(p.numel() for p in big.parameters()):,} parameters, max |logit diff| {d:.2e}")
    if d >= 1e-3:
        print(f"grow_model: the grown model's logits differ from the source's by {d:.2e}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    big.save_pretrained(out)
    save_vocab(vocab, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
