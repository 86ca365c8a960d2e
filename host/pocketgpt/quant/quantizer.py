"""Quantizing a whole GPT-2: calibration statistics and the three methods.

rtn       ggml's reference quantizers (what llama.cpp does without an importance matrix): per
          block scales from the weights alone, each weight rounded to the nearest level.
weighted  the block scales are fitted to minimise squared error weighted by how strongly each
          input column is driven on calibration text (mean squared activation, the diagonal of
          X^T X): the idea of llama.cpp's importance matrix.
gptq      Hessian-based error feedback (Frantar et al., GPTQ): H = X^T X per linear layer from
          calibration text; columns are quantized left to right and each one's rounding error is
          pushed onto the not-yet-quantized columns through the damped Cholesky factor of H^-1.
          Block headers (scales, mins) are fitted, importance-weighted, on the already-updated
          weights when the column sweep reaches each block, so the result is an ordinary ggml file.

Calibration text is scored by the float model itself (transformers, CPU) with forward hooks on
every linear input; the tied head's input is the final layer norm output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pocketgpt.errors import PocketError
from pocketgpt.quant import formats as F

METHODS = ("rtn", "weighted", "gptq")
MIN_CALIB_TOKENS = 512
DEFAULT_CALIB_TOKENS = 16384


@dataclass
class Calibration:
    """Per matrix (GGUF name): mean x x^T over calibration tokens (or only its diagonal)."""

    stats: dict[str, np.ndarray]
    tokens: int
    full: bool

    def importance(self, name: str) -> np.ndarray | None:
        s = self.stats.get(name)
        if s is None:
            return None
        return np.diag(s).astype(np.float32) if s.ndim == 2 else s.astype(np.float32)

    def hessian(self, name: str) -> np.ndarray | None:
        s = self.stats.get(name)
        return s if s is not None and s.ndim == 2 else None


def calibration_ids(mf, text: str) -> np.ndarray:
    """The calibration text as token ids, quotes joined by <|endoftext|> (as training saw them)."""
    from pocketgpt.corpus import split_documents

    tok = mf.vocab.hf_tokenizer()
    docs = split_documents(text)
    ids: list[int] = [mf.vocab.eos_id]
    for i, doc in enumerate(docs):
        if i:
            ids.append(mf.vocab.eos_id)
        ids.extend(tok(doc, add_special_tokens=False)["input_ids"])
    return np.asarray(ids, dtype=np.int64)


def collect(mf, text: str, full: bool, max_tokens: int = DEFAULT_CALIB_TOKENS,
            window: int = 512, source: str = "calibration text",
            progress: Callable | None = None) -> Calibration:
    """Run the float model over the text and gather input statistics of every weight matrix."""
    import torch

    from pocketgpt.hf import torch_model

    ids = calibration_ids(mf, text)
    if len(ids) < MIN_CALIB_TOKENS:
        raise PocketError(f"{source} has {len(ids)} tokens; calibration needs at least {MIN_CALIB_TOKENS} "
                          "(give a longer text file)")
    ids = ids[:max_tokens]
    model = torch_model(mf)
    window = min(window, mf.cfg.n_ctx)
    acc: dict[str, torch.Tensor] = {}
    hooks = []

    def hook_for(name: str):
        def hook(_module, inputs):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
            if full:
                s = x.T @ x
            else:
                s = (x * x).sum(dim=0)
            acc[name] = acc[name] + s if name in acc else s
        return hook

    blocks = model.transformer.h
    parts = {"attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
    for i, blk in enumerate(blocks):
        for path, gname in parts.items():
            mod = blk.get_submodule(path)
            hooks.append(mod.register_forward_pre_hook(hook_for(f"blk.{i}.{gname}.weight")))
    head = "token_embd.weight" if mf.tied else "output.weight"
    hooks.append(model.lm_head.register_forward_pre_hook(hook_for(head)))
    n = 0
    try:
        with torch.no_grad():
            starts = list(range(0, max(1, len(ids) - 1), window))
            for k, start in enumerate(starts):
                chunk = ids[start:start + window]
                if len(chunk) < 2:
                    continue
                model(input_ids=torch.from_numpy(chunk)[None])
                n += len(chunk)
                if progress:
                    progress(k + 1, len(starts))
    finally:
        for h in hooks:
            h.remove()
    stats = {k: (v / n).double().numpy() for k, v in acc.items()}
    return Calibration(stats, n, full)


def gptq_quantize(W: np.ndarray, qtype: int, H: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """GPTQ for one matrix W (rows, cols) with y = W @ x and H = E[x x^T] (cols, cols) -> block bytes."""
    rows, cols = W.shape
    per = F.BLOCK[qtype][0]
    W = np.array(W, dtype=np.float32, copy=True)
    H = np.array(H, dtype=np.float64, copy=True)
    diag = np.diag(H).copy()
    dead = diag <= 0
    H[dead, dead] = 1.0
    mean_diag = float(np.mean(np.diag(H)))
    H[np.diag_indices(cols)] += damp * mean_diag
    # upper Cholesky factor U of H^-1 (H^-1 = U^T U): row j holds column j's error propagation
    try:
        Hinv = np.linalg.cholesky(np.linalg.inv(H)).T.astype(np.float32)
    except np.linalg.LinAlgError:
        H[np.diag_indices(cols)] += 0.1 * mean_diag
        Hinv = np.linalg.cholesky(np.linalg.inv(H)).T.astype(np.float32)
    imp = np.maximum(np.diag(H), 1e-12).astype(np.float32)
    group = min(per, 32)  # rank-1 updates stay inside a group; BLAS carries them further
    parts = []
    for s in range(0, cols, per):
        e = s + per
        blk = W[:, s:e]
        fit = F.fit_blocks(blk.copy(), qtype, np.broadcast_to(imp[s:e], blk.shape))
        Q = np.empty((rows, per), dtype=np.float32)
        err = np.empty((rows, per), dtype=np.float32)
        U = Hinv[s:e, s:e]
        for g in range(0, per, group):
            h = g + group
            for j in range(g, h):
                w = blk[:, j:j + 1]
                sub = j // fit.sub
                q = fit.levels(w, sub)
                e_j = (w - fit.values(q, sub))[:, 0] / U[j, j]
                if j + 1 < h:
                    blk[:, j + 1:h] -= np.outer(e_j, U[j, j + 1:h])
                Q[:, j] = q[:, 0]
                err[:, j] = e_j
            if h < per:
                blk[:, h:] -= err[:, g:h] @ U[g:h, h:]
        if e < cols:
            W[:, e:] -= err @ Hinv[s:e, e:]
        parts.append(F.pack_blocks(fit, Q, qtype))
    return np.concatenate(parts, axis=1)


@dataclass
class TensorReport:
    name: str
    shape: tuple[int, ...]
    qtype: int
    wanted: int
    note: str
    n_bytes: int
    rel_rmse: float  # relative RMS error of the stored weights (importance-weighted when known)


def quantize_tensors(mf, choices: dict, method: str, calib: Calibration | None = None,
                     progress: bool = False) -> tuple[dict, list[TensorReport]]:
    """Every tensor of `mf` at its chosen type by `method`. Returns (stored tensors, report)."""
    from tqdm import tqdm

    from pocketgpt.gguf_io import StoredTensor

    if method not in METHODS:
        raise PocketError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    if method != "rtn" and calib is None:
        raise PocketError(f"--method {method} needs calibration text: pass --calib FILE")
    stored: dict[str, StoredTensor] = {}
    report: list[TensorReport] = []
    names = list(mf.tensors)
    bar = tqdm(names, disable=not progress, unit="tensor", leave=False)
    for name in bar:
        ch = choices[name]
        arr = mf.f32(name)
        bar.set_description(f"{name} {F.type_name(ch.qtype)}")
        imp = calib.importance(name) if calib is not None else None
        if ch.qtype in (F.F32, F.F16) or arr.ndim < 2:
            raw = F.quantize(arr, ch.qtype)
        elif method == "gptq" and calib is not None and calib.hessian(name) is not None:
            raw = gptq_quantize(arr, ch.qtype, calib.hessian(name))
        elif method in ("weighted", "gptq") and imp is not None:
            raw = F.quantize(arr, ch.qtype, np.maximum(imp, 1e-12))
        else:
            raw = F.quantize(arr, ch.qtype)
        t = StoredTensor(name, ch.qtype, tuple(arr.shape), raw)
        stored[name] = t
        if arr.ndim == 2:
            back = t.to_f32()
            w = imp if imp is not None else np.ones(arr.shape[-1], np.float32)
            num = float((w * (back - arr) ** 2).sum())
            den = float((w * arr ** 2).sum()) or 1.0
            report.append(TensorReport(name, tuple(arr.shape), ch.qtype, ch.wanted, ch.note, t.n_bytes,
                                       (num / den) ** 0.5))
    return stored, report
