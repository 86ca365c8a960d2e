"""Knowledge distillation of the pruned student from the teacher, on a text corpus.

The teacher's targets are computed once, before training (targets.py): for each position of the
student's token stream, the top-k of the teacher's next-token distribution carried onto the
student's vocabulary, where a teacher distribution exists (positions that end a teacher token).
The loss is

    alpha * KL(teacher || student) + (1 - alpha) * cross-entropy(next token)

with the KL over k + 1 bins (the teacher's top-k tokens and "anything else", which holds the
probability the top-k leaves out, so the student is not taught that the rest has none), averaged
over the positions that have a target. Without targets (`targets=None`) this
is plain training from the given initialisation: the from-scratch baseline uses the same loop,
data order and bounds, and a step costs the same either way.

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
    grad_clip: float = 1.0
    seed: int = 1337


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


def _soft_loss(logits: Any, targets: Any, pos: np.ndarray) -> Any:
    """KL(teacher || student) over k + 1 bins, averaged over the positions `pos` that have a target:
    the teacher's top-k student tokens, and one bin for all the rest (the mass the top-k leaves)."""
    import torch
    import torch.nn.functional as Fn

    has = targets.has[pos]
    p = torch.from_numpy(targets.probs[pos[has]].astype(np.float32))
    rest = (1.0 - p.sum(-1)).clamp_min(1e-6)
    logq_all = Fn.log_softmax(logits[torch.from_numpy(has)], dim=-1)
    logq = logq_all.gather(1, torch.from_numpy(targets.ids[pos[has]]).long())
    q_rest = (1.0 - logq.exp().sum(-1)).clamp_min(1e-6)
    pk = p.clamp_min(1e-8)
    kl = (pk * (pk.log() - logq)).sum(-1) + rest * (rest.log() - q_rest.log())
    return kl.mean()


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


def distill(student: Any, train_ids: np.ndarray, val_ids: np.ndarray, cfg: DistillConfig,
            targets: Any | None = None, progress: bool = True) -> DistillResult:
    """Train `student` in place on windows of `train_ids` (student tokens). See the module docstring.

    targets: a targets.TeacherTargets over `train_ids` (None: cross-entropy only).
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
    if targets is not None and len(targets.has) != len(train_ids):
        raise ValueError("teacher targets do not cover the training stream")
    decay = [p for p in student.parameters() if p.dim() >= 2]
    no_decay = [p for p in student.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    student.train()
    start = time.time()
    budget = cfg.max_minutes * 60 if cfg.max_minutes else None
    bar = tqdm(total=cfg.steps, disable=not progress, unit="step", dynamic_ncols=True,
               desc="distill" if targets is not None else "train")
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
        pos = (starts[:, None] + np.arange(n_ctx)).reshape(-1)  # stream positions of x
        if targets is not None and targets.has[pos].any():
            soft = _soft_loss(logits.reshape(-1, V), targets, pos)
            loss = cfg.alpha * soft + (1 - cfg.alpha) * ce
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
