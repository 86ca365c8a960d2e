"""Structural pruning: a smaller GPT-2 whose every weight starts as a slice of the teacher's.

What is kept, and why it is a sensible start:
- layers: evenly spaced over the teacher's depth, first and last always kept (the first reads
  embeddings, the last writes the logits);
- residual width: the dimensions the teacher's layer norms weight most, scaled by how much the
  token embedding varies along them (a dimension no norm amplifies carries little);
- attention heads: whole heads (head size unchanged, so the attention scale stays right), the
  ones whose value and output projections are largest; n_head = n_embd / teacher head size;
- MLP neurons: largest |up row| * |down column| (what a neuron can write to the residual);
- vocabulary: the kept tokens' embedding rows (see vocab.py); the head stays tied;
- positions: the teacher's rows; a longer context repeats them (then distillation trains them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pocketgpt.errors import PocketError
from pocketgpt.gguf_io import GPT2Config


@dataclass(frozen=True)
class Shape:
    """The student's structure (vocabulary as the number of BPE merges kept)."""

    n_merges: int
    n_layer: int
    n_embd: int
    n_ff: int
    n_ctx: int

    def config(self, teacher: GPT2Config) -> GPT2Config:
        head = teacher.n_embd // teacher.n_head
        return GPT2Config(self.n_merges + 257, self.n_ctx, self.n_embd, self.n_layer,
                          self.n_embd // head, self.n_ff, teacher.eps)

    def describe(self, teacher: GPT2Config) -> str:
        c = self.config(teacher)
        return (f"{c.n_layer} layers, n_embd {c.n_embd}, {c.n_head} heads, n_ff {c.n_ff}, "
                f"ctx {c.n_ctx}, vocabulary {c.n_vocab} ({self.n_merges} merges)")


def check_shape(shape: Shape, teacher: GPT2Config) -> None:
    head = teacher.n_embd // teacher.n_head
    if not 1 <= shape.n_layer <= teacher.n_layer:
        raise PocketError(f"--layers {shape.n_layer}: choose 1..{teacher.n_layer} (the teacher's depth)")
    if not head <= shape.n_embd <= teacher.n_embd or shape.n_embd % head:
        raise PocketError(f"--width {shape.n_embd}: whole heads are kept, so give a multiple of the teacher's "
                          f"head size {head} up to {teacher.n_embd}")
    if not 1 <= shape.n_ff <= teacher.n_ff:
        raise PocketError(f"--ff {shape.n_ff}: choose 1..{teacher.n_ff} (the teacher's MLP width)")
    if shape.n_ctx < 1:
        raise PocketError(f"--ctx {shape.n_ctx}: must be >= 1")


def kept_layers(n_teacher: int, n_student: int) -> list[int]:
    if n_student == 1:
        return [n_teacher - 1]
    return sorted({int(round(x)) for x in np.linspace(0, n_teacher - 1, n_student)})


def prune(t: dict[str, np.ndarray], teacher: GPT2Config, shape: Shape, token_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Teacher float tensors (GGUF names) -> the student's, for `shape` and the kept `token_ids`."""
    check_shape(shape, teacher)
    E, L = teacher.n_embd, teacher.n_layer
    hd = E // teacher.n_head
    layers = kept_layers(L, shape.n_layer)
    if len(layers) != shape.n_layer:
        raise PocketError(f"--layers {shape.n_layer}: cannot pick that many distinct layers of {L}")
    wte = t["token_embd.weight"][token_ids]

    norm = np.abs(t["output_norm.weight"]).astype(np.float64)
    for i in range(L):
        norm += np.abs(t[f"blk.{i}.attn_norm.weight"]) + np.abs(t[f"blk.{i}.ffn_norm.weight"])
    score = norm * wte.std(axis=0)
    rd = np.sort(np.argsort(-score, kind="stable")[: shape.n_embd])

    out: dict[str, np.ndarray] = {"token_embd.weight": wte[:, rd]}
    wpe = t["position_embd.weight"][:, rd]
    reps = -(-shape.n_ctx // wpe.shape[0])
    out["position_embd.weight"] = np.tile(wpe, (reps, 1))[: shape.n_ctx]
    out["output_norm.weight"] = t["output_norm.weight"][rd]
    out["output_norm.bias"] = t["output_norm.bias"][rd]

    n_heads = shape.n_embd // hd
    for j, i in enumerate(layers):
        p, q = f"blk.{i}.", f"blk.{j}."
        qkv, qkv_b = t[p + "attn_qkv.weight"], t[p + "attn_qkv.bias"]
        proj = t[p + "attn_output.weight"]
        h_score = [np.linalg.norm(qkv[2 * E + h * hd: 2 * E + (h + 1) * hd]) * np.linalg.norm(proj[:, h * hd:(h + 1) * hd])
                   for h in range(teacher.n_head)]
        heads = sorted(np.argsort(-np.asarray(h_score), kind="stable")[:n_heads].tolist())
        cd = np.concatenate([np.arange(h * hd, (h + 1) * hd) for h in heads])
        rows = np.concatenate([cd, E + cd, 2 * E + cd])
        up, down = t[p + "ffn_up.weight"], t[p + "ffn_down.weight"]
        n_score = np.linalg.norm(up[:, rd], axis=1) * np.linalg.norm(down[rd], axis=0)
        nf = np.sort(np.argsort(-n_score, kind="stable")[: shape.n_ff])
        out.update({
            q + "attn_norm.weight": t[p + "attn_norm.weight"][rd], q + "attn_norm.bias": t[p + "attn_norm.bias"][rd],
            q + "attn_qkv.weight": qkv[rows][:, rd], q + "attn_qkv.bias": qkv_b[rows],
            q + "attn_output.weight": proj[rd][:, cd], q + "attn_output.bias": t[p + "attn_output.bias"][rd],
            q + "ffn_norm.weight": t[p + "ffn_norm.weight"][rd], q + "ffn_norm.bias": t[p + "ffn_norm.bias"][rd],
            q + "ffn_up.weight": up[nf][:, rd], q + "ffn_up.bias": t[p + "ffn_up.bias"][nf],
            q + "ffn_down.weight": down[rd][:, nf], q + "ffn_down.bias": t[p + "ffn_down.bias"][rd],
        })
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
