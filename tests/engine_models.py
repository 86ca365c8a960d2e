"""Tiny GPT-2 models for the engine tests, made on the spot (no downloads).

transformers builds a GPT2LMHeadModel from a fixed torch seed; the weights are written to a GGUF
with the same code path `pocketgpt convert` uses, with the matrix type picked per tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def make_hf_model(n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_ctx: int = 128, seed: int = 0,
                  vocab: Any = None, n_ff: int | None = None) -> tuple[Any, Any]:
    """(GPT2LMHeadModel in eval mode, BPEVocab); random weights scaled so generations vary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pocketgpt.tokenizer import gpt2_vocab

    vocab = vocab or gpt2_vocab()
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab.n_vocab, n_positions=n_ctx, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     n_inner=n_ff, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=vocab.bos_id, eos_token_id=vocab.eos_id, tie_word_embeddings=True)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # wider weights than the default init: peaked, input-dependent logits
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.25 if "wte" in name or "wpe" in name else 0.08)
            elif "bias" in name:
                p.normal_(0.0, 0.02)
            else:
                p.normal_(1.0, 0.1)
    model.eval()
    return model, vocab


def write_model(path: Path, model: Any, vocab: Any, choose: Callable[[str, np.ndarray], int] | None = None) -> Path:
    from pocketgpt import hf
    from pocketgpt.gguf_io import store_tensors, write_gguf
    from pocketgpt.quant.formats import F32

    cfg, tensors, _ = hf.hf_to_tensors(model)
    stored = store_tensors(tensors, choose or (lambda n, a: F32))
    write_gguf(path, cfg, vocab, stored, name="engine-test")
    return path


def torch_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    """Greedy continuation with transformers (no repetition penalty), n new tokens."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             num_beams=1, repetition_penalty=1.0, pad_token_id=0,
                             eos_token_id=None)
    return out[0, len(ids):].tolist()


def small_vocab(n_merges: int = 300) -> Any:
    """A trimmed GPT-2 vocabulary: 256 byte tokens, the first merges, <|endoftext|> (~560 tokens)."""
    from pocketgpt.tokenizer import BPEVocab, gpt2_vocab

    full = gpt2_vocab()
    merges = full.merges[:n_merges]
    keep = set(full.tokens[:256])
    for m in merges:
        a, b = m.split(" ")
        keep.add(a + b)
    tokens = [t for t in full.tokens if t in keep] + ["<|endoftext|>"]
    return BPEVocab(tokens=tokens, merges=merges, eos_id=len(tokens) - 1, bos_id=len(tokens) - 1)


def quant_subject(d: Path) -> str:
    """The quantizer tests' subject: d/float.gguf (1 layer, n_embd 256 so K-quant blocks divide the
    rows, a 300-merge vocabulary) and text to calibrate and score on: Debian's fortunes when
    installed, else a repeated pangram (at least 20,000 characters either way)."""
    from pocketgpt.quant import formats as F

    model, vocab = make_hf_model(n_embd=256, n_layer=1, n_ctx=128, vocab=small_vocab(300))
    write_model(d / "float.gguf", model, vocab, lambda n, a: F.F32)
    fortunes = Path("/usr/share/games/fortunes/fortunes")
    text = fortunes.read_text(encoding="utf-8", errors="replace") if fortunes.exists() else ""
    if len(text) < 20000:
        text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs. " * 400
    return text
