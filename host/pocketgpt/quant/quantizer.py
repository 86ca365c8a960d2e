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

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pocketgpt.errors import PocketError
from pocketgpt.quant import formats as F

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

    from pocketgpt.gguf_io import ModelFile, StoredTensor
    from pocketgpt.quant.presets import Choice

METHODS = ("rtn", "weighted", "gptq")
MIN_CALIB_TOKENS = 512
DEFAULT_CALIB_TOKENS = 16384


@dataclass
class Calibration:
    """Per matrix (GGUF name): mean x x^T over calibration tokens (or only its diagonal)."""

    stats: dict[str, np.ndarray]
    tokens: int
    full: bool
    # tied embedding/head only: input frequency per row, and the KL a unit of error costs in each
    # of its two roles (see TiedRoles)
    tied: TiedRoles | None = None

    def importance(self, name: str) -> np.ndarray | None:
        s = self.stats.get(name)
        if s is None:
            return None
        return np.diag(s).astype(np.float32) if s.ndim == 2 else s.astype(np.float32)

    def hessian(self, name: str) -> np.ndarray | None:
        s = self.stats.get(name)
        return s if s is not None and s.ndim == 2 else None


@dataclass
class TiedRoles:
    """The tied token_embd is both the input embedding and the output head, and pays twice.

    Head role: row v's error d_v moves logit v by d_v . h; KL ~ 1/2 Var_p(logit error), so row v
    costs about a_head * q_v * d_v^T H d_v (H = E[h h^T] of the final norm output, q_v how often
    v is predicted, ~ its frequency f_v). Input role: row v's error enters the residual stream
    whenever v is read: c_in * f_v * |d_v|^2. GPTQ alone minimises only the first and inflates
    |d_v| to do it, which the input role pays for (measured on builtin:host at Q3_K: head-only KL
    0.014 -> 0.003 under GPTQ, input-only 0.019 -> 0.025). Both roles scale with f_v, so every row
    is best solved with H + (c_in / a_head) I. a_head and c_in are measured, not guessed: the KL of
    round-to-nearest errors applied in one role at a time, over the error's size in that role.
    """

    freq: np.ndarray      # (n_vocab,) share of calibration tokens
    c_in: float           # KL (nats/token) per unit of sum_v f_v |d_v|^2
    a_head: float         # KL per unit of sum_v f_v d_v^T H d_v

    def ridge(self) -> float:
        """The multiple of the identity to add to H."""
        return self.c_in / max(self.a_head, 1e-30)


def calibration_ids(mf: ModelFile, text: str) -> np.ndarray:
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


def collect(mf: ModelFile, text: str, full: bool, max_tokens: int = DEFAULT_CALIB_TOKENS,
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

    def hook_for(name: str) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
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
    calib = Calibration(stats, n, full)
    if full and mf.tied:
        calib.tied = _tied_roles(mf, model, ids, stats["token_embd.weight"], window)
    return calib


def _tied_roles(mf: ModelFile, model: GPT2LMHeadModel, ids: np.ndarray, H: np.ndarray, window: int, probe_tokens: int = 1024) -> TiedRoles:
    """Measure a_head and c_in (TiedRoles) with Q4_K round-to-nearest errors, one role at a time."""
    import torch

    counts = np.bincount(ids, minlength=mf.cfg.n_vocab).astype(np.float64)
    freq = counts / counts.sum()
    W = mf.f32("token_embd.weight")
    typ = F.fitting_type(F.Q4_K, W.shape[-1])
    if typ in (F.F32, F.F16):
        typ = F.Q8_0
    D = (F.dequantize(F.quantize(W, typ), typ, W.shape) - W).astype(np.float64)
    n = max(2, min(probe_tokens, len(ids)) // window * window)
    batch = torch.from_numpy(ids[:n].copy()).view(-1, window) if n >= window else torch.from_numpy(ids[:n].copy())[None]
    wte, head = model.transformer.wte, model.lm_head
    orig = wte.weight.detach().clone()
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=batch).logits.float(), -1)
        pref = ref.exp()

        def kl() -> float:
            lp = torch.log_softmax(model(input_ids=batch).logits.float(), -1)
            return float((pref * (ref - lp)).sum(-1).mean())

        qW = torch.from_numpy((W + D).astype(np.float32))
        try:
            head.weight = torch.nn.Parameter(orig.clone())        # untied: input role only
            wte.weight = torch.nn.Parameter(qW.clone())
            kl_in = kl()
            wte.weight = torch.nn.Parameter(orig.clone())         # head role only
            head.weight = torch.nn.Parameter(qW.clone())
            kl_head = kl()
        finally:
            wte.weight = torch.nn.Parameter(orig)
            head.weight = wte.weight
    e_in = float((freq * (D * D).sum(axis=1)).sum())
    e_head = float((freq * np.einsum("ij,jk,ik->i", D, H, D, optimize=True)).sum())
    return TiedRoles(freq, kl_in / max(e_in, 1e-30), kl_head / max(e_head, 1e-30))


TIED_RIDGE_SHARE = 0.25


def gptq_tied(W: np.ndarray, qtype: int, H: np.ndarray, roles: TiedRoles) -> np.ndarray:
    """GPTQ for the tied embedding/head: H + ridge I weighs the input role in (TiedRoles).

    The ridge is TIED_RIDGE_SHARE of the measured ratio: the one-role-at-a-time KLs overstate the
    input role (the two roles' KLs do not add up exactly). On builtin:host at Q3_K, calibration-side
    text, shares of 0.1 to 0.5 all gave KL within 2 % of each other (0.0215-0.0219 against plain
    GPTQ's 0.0282 and round-to-nearest's 0.0336); the full ratio gave 0.0241.
    """
    return gptq_quantize(W, qtype, H + TIED_RIDGE_SHARE * roles.ridge() * np.eye(H.shape[0]), act_order=True)


def gptq_quantize(W: np.ndarray, qtype: int, H: np.ndarray, damp: float = 0.01,
                  act_order: bool = False) -> np.ndarray:
    """GPTQ for one matrix W (rows, cols) with y = W @ x and H = E[x x^T] (cols, cols) -> block bytes.

    act_order: inside each block (whose header is fitted before its first column is quantized),
    columns go in order of decreasing H diagonal, so the loudest inputs are rounded while the
    most columns are left to absorb their error. The order never crosses a block boundary, so the
    header is still fitted once per block, on the weights as updated so far. Measured on
    builtin:host (KL on calibration-side text, one matrix at Q2_K): it helps the tied embedding
    (0.087 -> 0.072) and hurts the block matrices (ffn_up 0.0026 -> 0.0031), so only gptq_tied
    uses it."""
    rows, cols = W.shape
    per = F.BLOCK[qtype][0]
    H = np.array(H, dtype=np.float64, copy=True)
    diag = np.diag(H).copy()
    dead = diag <= 0
    H[dead, dead] = 1.0
    mean_diag = float(np.mean(np.diag(H)))
    H[np.diag_indices(cols)] += damp * mean_diag
    imp = np.maximum(np.diag(H), 1e-12).astype(np.float32)   # original column order
    if act_order:
        perm = np.concatenate([s + np.argsort(-imp[s:s + per], kind="stable") for s in range(0, cols, per)])
    else:
        perm = np.arange(cols)
    W = np.array(W[:, perm], dtype=np.float32, copy=True)
    H = H[np.ix_(perm, perm)]
    # upper Cholesky factor U of H^-1 (H^-1 = U^T U): row j holds column j's error propagation
    try:
        Hinv = np.linalg.cholesky(np.linalg.inv(H)).T.astype(np.float32)
    except np.linalg.LinAlgError:
        H[np.diag_indices(cols)] += 0.1 * mean_diag
        Hinv = np.linalg.cholesky(np.linalg.inv(H)).T.astype(np.float32)
    group = min(per, 32)  # rank-1 updates stay inside a group; BLAS carries them further
    parts = []
    for s in range(0, cols, per):
        e = s + per
        blk = W[:, s:e]
        local = perm[s:e] - s          # position j of the sweep is column local[j] of the block
        orig = np.empty_like(blk)
        orig[:, local] = blk
        fit = F.fit_blocks(orig, qtype, np.broadcast_to(imp[s:e], blk.shape))
        Q = np.empty((rows, per), dtype=np.float32)
        err = np.empty((rows, per), dtype=np.float32)
        U = Hinv[s:e, s:e]
        for g in range(0, per, group):
            h = g + group
            for j in range(g, h):
                w = blk[:, j:j + 1]
                sub = int(local[j]) // fit.sub
                q = fit.levels(w, sub)
                e_j = (w - fit.values(q, sub))[:, 0] / U[j, j]
                if j + 1 < h:
                    blk[:, j + 1:h] -= np.outer(e_j, U[j, j + 1:h])
                Q[:, local[j]] = q[:, 0]
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


def quantize_tensors(mf: ModelFile, choices: dict[str, Choice], method: str, calib: Calibration | None = None,
                     progress: bool = False, done: Sensitivity | None = None
                     ) -> tuple[dict[str, StoredTensor], list[TensorReport]]:
    """Every tensor of `mf` at its chosen type by `method`. Returns (stored tensors, report).

    `done` (a Sensitivity measured with the same method) supplies tensors already quantized."""
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
        if done is not None and ch.qtype in done.stored.get(name, {}):
            t = done.stored[name][ch.qtype]
        else:
            t = StoredTensor(name, ch.qtype, tuple(arr.shape), quantize_matrix(arr, ch.qtype, method, calib, name))
        stored[name] = t
        if arr.ndim == 2:
            back = t.to_f32()
            w = imp if imp is not None else np.ones(arr.shape[-1], np.float32)
            num = float((w * (back - arr) ** 2).sum())
            den = float((w * arr ** 2).sum()) or 1.0
            report.append(TensorReport(name, tuple(arr.shape), ch.qtype, ch.wanted, ch.note, t.n_bytes,
                                       (num / den) ** 0.5))
    return stored, report


def quantize_matrix(arr: np.ndarray, qtype: int, method: str, calib: Calibration | None, name: str) -> np.ndarray:
    """One tensor's block bytes by `method` (falls back to rtn where calibration has no statistics)."""
    imp = calib.importance(name) if calib is not None else None
    if qtype in (F.F32, F.F16) or arr.ndim < 2:
        return F.quantize(arr, qtype)
    H = calib.hessian(name) if calib is not None else None
    if method == "gptq" and calib is not None and H is not None:
        if name == "token_embd.weight" and calib.tied is not None:
            return gptq_tied(arr, qtype, H, calib.tied)
        return gptq_quantize(arr, qtype, H)
    if method in ("weighted", "gptq") and imp is not None:
        return F.quantize(arr, qtype, np.maximum(imp, 1e-12))
    return F.quantize(arr, qtype)


@dataclass
class Sensitivity:
    """Per matrix and type: mean KL(float || model with only that matrix quantized), nats/token.

    KL of small, independent perturbations adds up nearly linearly, so the allocator can price a
    whole plan as the sum of these. The quantized tensors are kept for reuse by the final pass.
    """

    kl: dict[str, dict[int, float]]
    stored: dict[str, dict[int, StoredTensor]]
    tokens: int
    method: str = ""   # the method the stored tensors were made by ("" when none are kept)


def measure_sensitivity(mf: ModelFile, calib: Calibration | None, text: str, types: tuple[int, ...], method: str,
                        tokens: int = 1024, progress: bool = False) -> Sensitivity:
    """Quantize each weight matrix alone at each type and measure the KL it causes on `text`.

    `text` should be calibration-side text (never the held-out text you report on). Cost: one
    forward pass over `tokens` tokens per (matrix, type), plus the quantization itself.
    """
    import torch
    from tqdm import tqdm

    from pocketgpt.gguf_io import StoredTensor
    from pocketgpt.hf import torch_model
    from pocketgpt.quant.presets import is_matrix

    ids = calibration_ids(mf, text)
    n_ctx = mf.cfg.n_ctx
    usable = (min(tokens, len(ids)) // n_ctx) * n_ctx
    if usable < n_ctx:
        raise PocketError(f"calibration text has {len(ids)} tokens; measuring sensitivity needs at least {n_ctx}")
    batch = torch.from_numpy(ids[:usable].copy()).view(-1, n_ctx)
    model = torch_model(mf)
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=batch).logits.float(), -1)
        pref = ref.exp()

    def kl() -> float:
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=batch).logits.float(), -1)
            return float((pref * (ref - lp)).sum(-1).mean())

    blocks = model.transformer.h
    paths = {"attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}

    def param(name: str) -> tuple[torch.nn.Parameter, bool]:
        if name == "token_embd.weight":
            return model.transformer.wte.weight, False
        if name == "output.weight":
            return model.lm_head.weight, False
        _, i, kind, _ = name.split(".")
        return blocks[int(i)].get_submodule(paths[kind]).weight, True  # Conv1D holds W transposed

    def put(name: str, arr: np.ndarray) -> None:
        p, transpose = param(name)
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.array(arr.T if transpose else arr, dtype=np.float32, copy=True)))

    names = [n for n, t in mf.tensors.items() if is_matrix(n, t.shape) and n != "position_embd.weight"]
    out_kl: dict[str, dict[int, float]] = {}
    out_st: dict[str, dict[int, StoredTensor]] = {}
    work = [(n, t) for n in names for t in types]
    bar = tqdm(work, disable=not progress, unit="trial", leave=False)
    for name, t in bar:
        arr = mf.f32(name)
        got = F.fitting_type(t, arr.shape[-1])
        bar.set_description(f"{name} {F.type_name(got)}")
        if got in out_kl.get(name, {}):
            continue
        st = StoredTensor(name, got, tuple(arr.shape), quantize_matrix(arr, got, method, calib, name))
        put(name, st.to_f32())
        out_kl.setdefault(name, {})[got] = kl()
        out_st.setdefault(name, {})[got] = st
        put(name, arr)
    return Sensitivity(out_kl, out_st, usable, method)



TUNE_TOKENS = 16384
TUNE_STEPS = 100


@dataclass
class TuneReport:
    """What tune_float did: KL on calibration-side text before and after, and on which tokens."""

    kl_before: float
    kl_after: float
    train_tokens: int
    check_tokens: int
    steps: int
    parameters: int

    def as_dict(self) -> dict:
        """The JSON form `quantize --json` and bench/quality.py report."""
        return {"kl_before": self.kl_before, "kl_after": self.kl_after, "tokens": self.train_tokens,
                "check_tokens": self.check_tokens, "steps": self.steps, "parameters": self.parameters}


def tune_float(mf: ModelFile, stored: dict[str, StoredTensor], text: str, tokens: int = TUNE_TOKENS, steps: int = TUNE_STEPS,
               lr: float = 1e-3, batch: int = 4, seed: int = 0,
               progress: bool = False) -> tuple[dict[str, StoredTensor], TuneReport]:
    """Tune what stays float after quantization so the quantized model's next-token distribution
    matches the float model's on calibration text: minimise mean KL(float || quantized) with Adam,
    every quantized level frozen. Tuned: layer-norm gains and biases, linear biases, and
    one gain per row of every quantized matrix, which is folded into that row's block scales
    (formats.scale_rows: the half d/dmin fields), so the file keeps its types and its size.

    Why: rounding errors are not all noise. Each quantized matrix shifts the mean and the scale of
    what it produces by a little, the same way on every token, and those shifts compound through
    the blocks and the tied head; a bias, a norm gain and a row gain per channel can cancel that
    systematic part ("bias correction", "norm tweaking", scale tuning). The tuned numbers are ~0.5 %
    of the parameters. The last eighth of the calibration windows is not trained on: it checks that
    the KL fell on text the tuning did not see, and the state with the lowest check KL is kept
    (never worse than untuned). The held-out evaluation text is never read here.
    Returns (stored tensors with the tuned values, report)."""
    import dataclasses

    import torch
    from torch.func import functional_call
    from tqdm import tqdm

    from pocketgpt.gguf_io import StoredTensor, hf_name
    from pocketgpt.hf import torch_model

    ids = calibration_ids(mf, text)
    n_ctx = mf.cfg.n_ctx
    usable = (min(tokens, len(ids)) // n_ctx) * n_ctx
    if usable < 2 * n_ctx:
        raise PocketError(f"calibration text has {len(ids)} tokens; tuning needs at least {2 * n_ctx}")
    windows = torch.from_numpy(ids[:usable].copy()).view(-1, n_ctx)
    n_check = max(1, len(windows) // 8)
    train_w, check_w = windows[:-n_check], windows[-n_check:]
    ref_model = torch_model(mf)
    qmodel = torch_model(dataclasses.replace(mf, tensors=stored))
    for p in list(ref_model.parameters()) + list(qmodel.parameters()):
        p.requires_grad_(False)

    base = dict(qmodel.named_parameters())
    vecs: dict[str, torch.Tensor] = {}
    vec_over: dict[str, torch.Tensor] = {}  # the same tensors by Hugging Face name, for the forward pass
    gains: dict[str, tuple[str, bool, torch.Tensor]] = {}
    for name, t in stored.items():
        h, transpose = hf_name(name)
        if len(t.shape) == 1:
            vecs[name] = vec_over[h] = base[h].detach().clone().requires_grad_(True)
        elif t.qtype in F.SCALE_FIELDS:
            gains[name] = (h, transpose, torch.ones(t.shape[0], requires_grad=True))
    params = list(vecs.values()) + [g for _, _, g in gains.values()]
    n_par = sum(p.numel() for p in params)

    def forward(x: torch.Tensor) -> torch.Tensor:
        over = dict(vec_over)
        for h, transpose, g in gains.values():
            over[h] = base[h] * (g[None, :] if transpose else g[:, None])
        return torch.log_softmax(functional_call(qmodel, over, (), {"input_ids": x}).logits.float(), -1)

    def ref_lp(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(ref_model(input_ids=x).logits.float(), -1)

    def kl(lp_ref: torch.Tensor, lp: torch.Tensor) -> torch.Tensor:
        return (lp_ref.exp() * (lp_ref - lp)).sum(-1).mean()

    starts = range(0, len(check_w), batch)
    check_ref = [ref_lp(check_w[i:i + batch]) for i in starts]

    def check() -> float:
        with torch.no_grad():
            return sum(float(kl(r, forward(check_w[i:i + batch]))) * len(check_w[i:i + batch])
                       for i, r in zip(starts, check_ref)) / len(check_w)

    def snapshot() -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    before = check()
    best, best_state = before, snapshot()
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(len(train_w), generator=gen), 0
    every = max(5, steps // 10)
    for step in tqdm(range(steps), disable=not progress, unit="step", leave=False, desc="tuning"):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(train_w), generator=gen), 0
        x = train_w[order[pos:pos + batch]]
        pos += batch
        for g in opt.param_groups:   # cosine decay to zero
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = kl(ref_lp(x), forward(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            now = check()
            if now < best:
                best, best_state = now, snapshot()
    out = dict(stored)
    values = dict(zip(list(vecs) + list(gains), best_state))
    for name, v in values.items():
        t = stored[name]
        if name in vecs:
            out[name] = StoredTensor(name, t.qtype, t.shape, F.quantize(v.numpy().astype(np.float32), t.qtype))
        else:
            out[name] = StoredTensor(name, t.qtype, t.shape, F.scale_rows(t.raw, t.qtype, t.shape, v.numpy()))
    return out, TuneReport(before, best, len(train_w) * n_ctx, len(check_w) * n_ctx, steps, n_par)
