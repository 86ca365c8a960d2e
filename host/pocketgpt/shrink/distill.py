"""Knowledge distillation of the pruned student from the teacher, on a text corpus.

The student reads the corpus in its own (trimmed) tokens. The teacher reads the very same token
sequence (every student token is a teacher token, so positions line up exactly) and its
next-token distribution is carried onto the student's vocabulary: the probability of each teacher
token goes to the first student token of its spelling (vocab.teacher_to_student_map). The loss is

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy(next token)

with temperature T. A teacher whose context is shorter than the student's scores the window in
teacher-sized pieces. Without a teacher (`teacher=None`) this is plain training from the given
initialisation: the from-scratch baseline uses the same loop, data order and time bound.

Runs are bounded by steps and by wall time (`max_minutes`); the learning rate follows a cosine
over whichever of the two runs out first, so an equal-time comparison is fair.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class DistillConfig:
    steps: int = 1000
    max_minutes: float | None = None
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.01
    alpha: float = 0.5
    temperature: float = 2.0
    grad_clip: float = 1.0
    seed: int = 1337
    teacher_chunk: int = 4  # sequences per teacher forward (bounds its (B, T, 50257) logits)
    teacher_rows: int | None = None  # sequences per batch that get the KL term (None: all)


@dataclass
class DistillResult:
    steps: int
    seconds: float
    tokens_seen: int
    train_loss: float
    val_loss: float


def _lr(cfg: DistillConfig, progress: float, step: int) -> float:
    from pocketgpt.train import warmup_cosine_lr

    return warmup_cosine_lr(step, progress, cfg.lr, cfg.warmup, cfg.min_lr_ratio)


def _teacher_targets(teacher: Any, x: Any, head: Any, t2s: Any, n_student_vocab: int, n_ctx_teacher: int,
                     temperature: float, chunk: int) -> Any:
    """Teacher next-token probabilities at temperature T, summed onto the student vocabulary.

    `head` (S, E) holds the teacher's output rows for the teacher tokens considered and `t2s` (S,)
    where each goes; the softmax runs over those S tokens only (see `distill`).
    """
    import torch

    B, T = x.shape
    out = torch.zeros(B, T, n_student_vocab)
    with torch.no_grad():
        for b0 in range(0, B, chunk):
            for t0 in range(0, T, n_ctx_teacher):
                piece = x[b0:b0 + chunk, t0:t0 + n_ctx_teacher]
                hidden = teacher.transformer(input_ids=piece).last_hidden_state
                logits = hidden @ head.T
                p = torch.softmax(logits / temperature, dim=-1)
                out[b0:b0 + chunk, t0:t0 + piece.shape[1]].index_add_(2, t2s, p)
    return out


def val_loss(model: Any, ids: np.ndarray, n_ctx: int, max_windows: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over fixed non-overlapping windows of `ids`."""
    import torch

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, max(0, len(ids) - 1), n_ctx):
            w = ids[start:start + n_ctx + 1]
            if len(w) < 2:
                break
            logits = model(input_ids=torch.from_numpy(w[None, :-1])).logits
            total += float(torch.nn.functional.cross_entropy(logits[0], torch.from_numpy(w[1:]), reduction="sum"))
            count += len(w) - 1
            if start // n_ctx + 1 >= max_windows:
                break
    model.train()
    return total / max(count, 1)


def distill(student: Any, teacher: Any | None, train_ids: np.ndarray, val_ids: np.ndarray, cfg: DistillConfig,
            s2t: np.ndarray | None = None, t2s: np.ndarray | None = None, teacher_tokens: np.ndarray | None = None,
            progress: bool = True) -> DistillResult:
    """Train `student` in place on windows of `train_ids` (student tokens). See the module docstring.

    s2t: (student vocab,) teacher id of each student token; t2s: (teacher vocab,) student token
    that each teacher token's probability goes to. Both needed when a teacher is given.
    teacher_tokens: the teacher tokens whose logits are computed (default all). The teacher's
    output head is most of its cost (50,257 rows for GPT-2); restricting it to the tokens that
    occur in the corpus, renormalised, keeps nearly all of the probability mass at a fraction
    of the arithmetic.
    """
    import torch
    import torch.nn.functional as Fn
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_ctx = student.config.n_positions
    V = student.config.vocab_size
    if len(train_ids) < n_ctx + 2:
        from pocketgpt.errors import PocketError

        raise PocketError(f"the corpus has {len(train_ids)} training tokens; need more than the context of {n_ctx}")
    if teacher is not None:
        teacher.eval()
        s2t_t = torch.from_numpy(np.asarray(s2t, dtype=np.int64))
        keep = np.arange(len(t2s)) if teacher_tokens is None else np.asarray(teacher_tokens, dtype=np.int64)
        t2s_t = torch.from_numpy(np.asarray(t2s, dtype=np.int64)[keep])
        head = teacher.lm_head.weight.detach()[torch.from_numpy(keep)].contiguous()
        n_ctx_teacher = teacher.config.n_positions
    decay = [p for p in student.parameters() if p.dim() >= 2]
    no_decay = [p for p in student.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    student.train()
    start = time.time()
    budget = cfg.max_minutes * 60 if cfg.max_minutes else None
    bar = tqdm(total=cfg.steps, disable=not progress, unit="step", dynamic_ncols=True,
               desc="distill" if teacher is not None else "train")
    step = tokens = 0
    ema = float("nan")
    while step < cfg.steps:
        elapsed = time.time() - start
        if budget is not None and elapsed >= budget:
            break
        prog = max(step / cfg.steps, elapsed / budget if budget else 0.0)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, prog, step)
        starts = rng.integers(0, len(train_ids) - n_ctx - 1, size=cfg.batch_size)
        batch = torch.from_numpy(np.stack([train_ids[s:s + n_ctx + 1] for s in starts]))
        x, y = batch[:, :-1], batch[:, 1:]
        logits = student(input_ids=x).logits
        ce = Fn.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        if teacher is not None:
            T = cfg.temperature
            r = min(cfg.teacher_rows or cfg.batch_size, cfg.batch_size)
            target = _teacher_targets(teacher, s2t_t[x[:r]], head, t2s_t, V, n_ctx_teacher, T, cfg.teacher_chunk)
            logp = Fn.log_softmax(logits[:r] / T, dim=-1)
            kl = Fn.kl_div(logp.reshape(-1, V), target.reshape(-1, V), reduction="batchmean") * T * T
            loss = cfg.alpha * kl + (1 - cfg.alpha) * ce
        else:
            loss = ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        tokens += int(y.numel())
        ce_f = float(ce.detach())
        ema = ce_f if math.isnan(ema) else 0.9 * ema + 0.1 * ce_f
        bar.set_postfix(ce=f"{ema:.3f}")
        bar.update(1)
    bar.close()
    seconds = time.time() - start
    vl = val_loss(student, val_ids, n_ctx) if len(val_ids) > 1 else float("nan")
    student.eval()
    return DistillResult(steps=step, seconds=round(seconds, 1), tokens_seen=tokens, train_loss=ema, val_loss=vl)
