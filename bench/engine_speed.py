"""Decode and prefill speed of the C engine at 1 and 2 threads, beside transformers fp32 measured in
the same run (the anchor: machines here are shared and noisy, so ratios are what to compare).

    python bench/engine_speed.py [MODEL] [--type q8_0] [--tokens 64]

Without MODEL a GPT-2 124M-shaped model with random weights is made (the speed depends on the
shapes and types, not on the values) and stored with --type for its matrices.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def make_124m(path: Path, qname: str) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pocketgpt import hf
    from pocketgpt.gguf_io import store_tensors, write_gguf
    from pocketgpt.quant import formats
    from pocketgpt.tokenizer import gpt2_vocab

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(activation_function="gelu_new")).eval()
    cfg, tensors, _ = hf.hf_to_tensors(model)
    qtype = formats.type_from_name(qname)
    stored = store_tensors(tensors, lambda n, a: formats.fitting_type(qtype, a.shape[-1]) if a.ndim == 2 else formats.F32)
    write_gguf(path, cfg, gpt2_vocab(), stored, name=f"gpt2-124m-random-{qname}")
    return path


def engine_speed(path: Path, threads: int, n: int, kernels: str = "auto") -> dict:
    from pocketgpt.engine import Engine

    eng = Engine(path, threads=threads, kernels=kernels)
    eng = Engine(path, threads=threads, kernels=kernels, n_ctx=min(256, eng.n_ctx))
    s = eng.session()
    prompt = list(range(100, 100 + min(64, eng.n_ctx // 2)))  # a small model's context bounds the prompt
    n = min(n, eng.n_ctx - len(prompt))
    list(s.generate(prompt[:8], max_tokens=4, greedy=True, stop_at_eos=False))  # warm-up
    list(s.generate(prompt, max_tokens=n, greedy=True, stop_at_eos=False))
    return {"decode_tok_s": s.last_stats["decode_tok_s"], "prefill_tok_s": s.last_stats["prefill_tok_s"],
            "kernels": eng.kernels}


def torch_speed(path: Path, n: int) -> float:
    """transformers fp32 decode with its KV cache on a model of the same shape (speed does not
    depend on the weights' values)."""
    import torch
    from transformers import GPT2LMHeadModel

    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.hf import hf_config

    torch.set_num_threads(2)
    mf = read_gguf(path)
    model = GPT2LMHeadModel(hf_config(mf.cfg, mf.vocab)).eval()
    ids = torch.tensor([list(range(100, 164))])
    with torch.no_grad():
        out = model(ids, use_cache=True)
        past = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
        t = time.perf_counter()
        for _ in range(n):
            out = model(tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1:].argmax(-1)
        return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--type", default="q8_0", help="matrix type for the made model (default q8_0)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--no-torch", action="store_true", help="skip the transformers anchor")
    args = ap.parse_args()
    from pocketgpt import models

    with tempfile.TemporaryDirectory() as tmp:
        path = models.resolve(args.model) if args.model else make_124m(Path(tmp) / "gpt2-124m.gguf", args.type)
        rows = {f"engine {t} thread{'s' if t > 1 else ''}": engine_speed(path, t, args.tokens) for t in (1, 2)}
        anchor = None if args.no_torch else torch_speed(path, args.tokens)
    print(f"model: {args.model or 'GPT-2 124M shapes, random weights, ' + args.type}, {args.tokens} decode tokens")
    if anchor:
        print(f"  transformers fp32, 2 threads (anchor): {anchor:7.1f} tok/s  1.00x")
    for name, r in rows.items():
        ratio = f"  {r['decode_tok_s'] / anchor:.2f}x" if anchor else ""
        print(f"  {name} ({r['kernels']}): decode {r['decode_tok_s']:7.1f} tok/s{ratio}, prefill {r['prefill_tok_s']:.1f} tok/s")
    print(json.dumps({"anchor_torch_tok_s": anchor, **{k: v for k, v in rows.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
