"""Knowledge distillation of the pruned student from the teacher, on a text corpus.

The teacher's targets are computed once, before training (targets.py): for each position of the
student's token stream, the top-k of the teacher's next-token distribution carried onto the
student's vocabulary (at a teacher token's end; part-way through one, conditioned on the pieces
already emitted: see targets.py), where the teacher read that part of the corpus.
The loss is

    alpha * KL(teacher || student) + (1 - alpha) * cross-entropy(next token)

where alpha can fall linearly to 0 over the first `kl_anneal` of training (soft targets early,
while the student knows little; data alone late, so the student is not held to a teacher it is
about to match); from then on a step skips the KL and costs exactly a from-scratch step. With
the KL over k + 1 bins (the teacher's top-k tokens and "anything else", which holds the
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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from transformers import GPT2LMHeadModel

    from pocketgpt.shrink.targets import TeacherTargets


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
    kl_anneal: float | None = None   # fraction of training over which alpha falls to 0 (None: constant)
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


def kl_weight(cfg: DistillConfig, progress: float) -> float:
    """The KL term's weight at `progress` (0..1) through training."""
    if not cfg.kl_anneal:
        return cfg.alpha
    return cfg.alpha * max(0.0, 1.0 - progress / cfg.kl_anneal)


def _soft_loss(logp: torch.Tensor, targets: TeacherTargets, pos: np.ndarray) -> torch.Tensor:
    """KL(teacher || student) over k + 1 bins, averaged over the positions `pos` that have a target:
    the teacher's top-k student tokens, and one bin for all the rest (the mass the top-k leaves).
    logp: (positions, vocab) the student's log-probabilities (shared with the cross-entropy)."""
    import torch

    has = targets.has[pos]
    p = torch.from_numpy(targets.probs[pos[has]].astype(np.float32))
    rest = (1.0 - p.sum(-1)).clamp_min(1e-6)
    logq = logp[torch.from_numpy(has)].gather(1, torch.from_numpy(targets.ids[pos[has]]).long())
    q_rest = (1.0 - logq.exp().sum(-1)).clamp_min(1e-6)
    pk = p.clamp_min(1e-8)
    kl = (pk * (pk.log() - logq)).sum(-1) + rest * (rest.log() - q_rest.log())
    return kl.mean()


def val_loss(model: GPT2LMHeadModel, ids: np.ndarray, n_ctx: int, max_windows: int = 32) -> float:
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


class Trainer:
    """One student's optimiser, data order and clock, advanced a step at a time.

    `distill` runs one to its bound; bench/distill_vs_scratch.py alternates the steps of two so both
    see the same machine load, each on its own clock (the time its own steps took).
    """

    def __init__(self, student: GPT2LMHeadModel, train_ids: np.ndarray, cfg: DistillConfig,
                 targets: TeacherTargets | None = None) -> None:
        import torch

        torch.manual_seed(cfg.seed)
        self.student, self.ids, self.cfg, self.targets = student, train_ids, cfg, targets
        self.rng = np.random.default_rng(cfg.seed)
        self.n_ctx = student.config.n_positions
        if len(train_ids) < self.n_ctx + 2:
            from pocketgpt.errors import PocketError

            raise PocketError(f"the corpus has {len(train_ids)} training tokens; need more than the context of "
                              f"{self.n_ctx}")
        if targets is not None and len(targets.has) != len(train_ids):
            raise ValueError("teacher targets do not cover the training stream")
        decay = [p for p in student.parameters() if p.dim() >= 2]
        no_decay = [p for p in student.parameters() if p.dim() < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
        student.train()
        self.steps = self.tokens = 0
        self.seconds = 0.0
        self.ema = float("nan")

    def done(self) -> bool:
        budget = self.cfg.max_minutes * 60 if self.cfg.max_minutes else None
        return self.steps >= self.cfg.steps or (budget is not None and self.seconds >= budget)

    def step(self) -> float:
        """One optimiser step; returns its cross-entropy. The learning rate follows the cosine over
        steps or over this trainer's own time, whichever is further along."""
        import torch
        import torch.nn.functional as Fn

        t0 = time.perf_counter()
        cfg, n_ctx, V = self.cfg, self.n_ctx, self.student.config.vocab_size
        budget = cfg.max_minutes * 60 if cfg.max_minutes else None
        prog = max(self.steps / cfg.steps, self.seconds / budget if budget else 0.0)
        for g in self.opt.param_groups:
            g["lr"] = _lr(cfg, prog, self.steps)
        starts = self.rng.integers(0, len(self.ids) - n_ctx - 1, size=cfg.batch_size)
        batch = torch.from_numpy(np.stack([self.ids[s:s + n_ctx + 1] for s in starts]))
        x, y = batch[:, :-1], batch[:, 1:]
        logp = Fn.log_softmax(self.student(input_ids=x).logits.reshape(-1, V), dim=-1)
        ce = Fn.nll_loss(logp, y.reshape(-1))
        pos = (starts[:, None] + np.arange(n_ctx)).reshape(-1)  # stream positions of x
        w = kl_weight(cfg, prog)
        if w > 0 and self.targets is not None and self.targets.has[pos].any():
            loss = w * _soft_loss(logp, self.targets, pos) + (1 - w) * ce
        else:
            loss = ce
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.grad_clip)
        self.opt.step()
        self.steps += 1
        self.tokens += int(y.numel())
        ce_f = float(ce.detach())
        self.ema = ce_f if math.isnan(self.ema) else 0.9 * self.ema + 0.1 * ce_f
        self.seconds += time.perf_counter() - t0
        return ce_f

    def result(self, val_ids: np.ndarray) -> DistillResult:
        vl = val_loss(self.student, val_ids, self.n_ctx) if len(val_ids) > 1 else float("nan")
        self.student.eval()
        return DistillResult(steps=self.steps, seconds=round(self.seconds, 1), tokens_seen=self.tokens,
                             train_loss=self.ema, val_loss=vl)


def distill(student: GPT2LMHeadModel, train_ids: np.ndarray, val_ids: np.ndarray, cfg: DistillConfig,
            targets: TeacherTargets | None = None, progress: bool = True) -> DistillResult:
    """Train `student` in place on windows of `train_ids` (student tokens). See the module docstring.

    targets: a targets.TeacherTargets over `train_ids` (None: cross-entropy only).
    """
    from tqdm import tqdm

    tr = Trainer(student, train_ids, cfg, targets)
    bar = tqdm(total=cfg.steps, disable=not progress, unit="step", dynamic_ncols=True,
               desc="distill" if targets is not None else "train")
    while not tr.done():
        tr.step()
        bar.set_postfix(ce=f"{tr.ema:.3f}")
        bar.update(1)
    bar.close()
    return tr.result(val_ids)
