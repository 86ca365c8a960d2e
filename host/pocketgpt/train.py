"""Training from scratch or fine-tuning GPT-2 on a text corpus (torch + transformers).

Data: every document is tokenized and followed by <|endoftext|>; a seeded shuffle of whole
documents puts `val_fraction` of them aside (written to OUT/heldout.txt so `pocketgpt eval` can
score the same text later). Training samples random windows of n_ctx+1 tokens from the rest.
Extra corpora (`extra`) are training-only: none of their documents is held out, and any of them
(or of the corpus's training split) equal to a held-out document is dropped. With `chat_mix` > 0
that share of the training windows comes from chat pairs (pocketgpt.chatdata) made from the
training documents only, each window starting at a pair's request; the rest stays plain quotes.
Checkpoints (model, optimizer, step, RNG state) are written atomically to OUT/checkpoint/ and
`--resume` continues from there bit-for-bit with the same data order.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pocketgpt.errors import PocketError, write_text_atomic

if TYPE_CHECKING:
    import torch
    from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast


@dataclass
class TrainConfig:
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_ctx: int = 128
    batch_size: int = 16
    steps: int = 2000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    dropout: float = 0.0
    grad_clip: float = 1.0
    seed: int = 1337
    val_fraction: float = 0.05
    eval_every: int = 250
    eval_batches: int = 16
    checkpoint_every: int = 250
    max_minutes: float | None = None
    threads: int | None = None
    init: str | None = None
    corpus: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    chat_mix: float = 0.0
    chat_pairs: int = 40000


@dataclass
class TrainResult:
    val_loss: float
    train_loss: float
    tokens_seen: int
    steps: int
    seconds: float
    n_params: int
    out: str


def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(round(len(docs) * val_fraction))) if len(docs) > 1 else 0
    val = [docs[i] for i in sorted(order[:n_val])]
    train = [docs[i] for i in sorted(order[n_val:])]
    return train, val


def encode_documents(tok: PreTrainedTokenizerFast, docs: list[str], eos: int) -> np.ndarray:
    ids: list[int] = []
    for enc in tok(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(eos)
    return np.asarray(ids, dtype=np.int64)


def _encode_with_starts(tok: PreTrainedTokenizerFast, docs: list[str], eos: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The documents as one stream (end-of-text after each) and the offsets where a full window
    starting at a document's first token fits."""
    ids: list[int] = []
    starts: list[int] = []
    for enc in tok(docs, add_special_tokens=False)["input_ids"]:
        starts.append(len(ids))
        ids.extend(enc)
        ids.append(eos)
    arr = np.asarray(ids, dtype=np.int64)
    ok = np.asarray([s for s in starts if s + window <= len(arr)], dtype=np.int64)
    if not len(ok):
        raise PocketError(f"the chat pairs hold only {len(arr)} tokens, less than one window of {window}")
    return arr, ok


def warmup_cosine_lr(step: int, progress: float, lr: float, warmup: int, min_lr_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `lr` to `lr * min_lr_ratio` as
    `progress` goes from 0 to 1 (the caller decides what progress is: steps, or wall time)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, max(0.0, progress))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _lr_at(step: int, cfg: TrainConfig) -> float:
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return warmup_cosine_lr(step, progress, cfg.lr, cfg.warmup, cfg.min_lr_ratio)


def _val_windows(val_ids: np.ndarray, n_ctx: int, limit: int) -> list[np.ndarray]:
    """Fixed, non-overlapping windows over the held-out tokens (the same every evaluation)."""
    out = []
    for start in range(0, max(0, len(val_ids) - 1), n_ctx):
        chunk = val_ids[start : start + n_ctx + 1]
        if len(chunk) >= 2:
            out.append(chunk)
        if len(out) >= limit:
            break
    return out


def _evaluate(model: GPT2LMHeadModel, windows: list[np.ndarray]) -> float:
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            x = torch.from_numpy(w[None, :-1])
            y = torch.from_numpy(w[None, 1:])
            logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), reduction="sum")
            total += float(loss)
            count += y.numel()
    model.train()
    return total / max(count, 1)


def _save_checkpoint(out: Path, model: GPT2LMHeadModel, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    import torch

    final = out / "checkpoint"
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=out))
    try:
        model.save_pretrained(tmp)
        torch.save({"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        old = out / ".checkpoint.old"
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def train(cfg: TrainConfig, out_dir: str, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or fine-tune) and write a Hugging Face folder to `out_dir`. See the module docstring."""
    from pocketgpt.corpus import read_documents
    from pocketgpt.gguf_io import GPT2Config
    from pocketgpt.hf import folder_chat_template, hf_config, load_hf, require_toolchain, save_vocab
    from pocketgpt.tokenizer import gpt2_vocab

    require_toolchain()
    import torch
    from tqdm import tqdm
    from transformers import GPT2LMHeadModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    if resume and not (ckpt / "state.json").exists():
        raise PocketError(f"{ckpt}: no checkpoint to resume from; run without --resume")
    if not resume and ckpt.exists():
        raise PocketError(f"{out}: holds a checkpoint already; pass --resume to continue it or pick a new --out")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    docs = read_documents(cfg.corpus)
    train_docs, val_docs = split_documents(docs, cfg.val_fraction, cfg.seed)
    if cfg.extra:
        train_docs = train_docs + read_documents(cfg.extra)
    held = {d.strip() for d in val_docs}
    train_docs = [d for d in train_docs if d.strip() not in held]
    if not 0.0 <= cfg.chat_mix < 1.0:
        raise PocketError(f"--chat-mix {cfg.chat_mix} must be at least 0 and below 1 (the rest is plain quotes)")
    if not train_docs:
        raise PocketError("the corpus has a single document: nothing left to train on after the held-out split")

    if cfg.init:
        base, vocab = load_hf(cfg.init)
        init_ctx = base.config.n_positions
        if cfg.n_ctx > init_ctx:
            raise PocketError(f"--ctx {cfg.n_ctx} exceeds the initial model's context {init_ctx}")
    else:
        base, vocab = None, gpt2_vocab()
    tok = vocab.hf_tokenizer()
    train_ids = encode_documents(tok, train_docs, vocab.eos_id)
    val_ids = encode_documents(tok, val_docs, vocab.eos_id)
    chat_ids = chat_starts = None
    if cfg.chat_mix > 0:
        from pocketgpt.chatdata import chat_documents

        chat_ids, chat_starts = _encode_with_starts(tok, chat_documents(train_docs, cfg.chat_pairs, cfg.seed),
                                                    vocab.eos_id, cfg.n_ctx + 1)
    if len(train_ids) < cfg.n_ctx + 2:
        raise PocketError(f"corpus has only {len(train_ids)} training tokens; need more than the context of {cfg.n_ctx}")
    write_text_atomic(out / "heldout.txt", "\n%\n".join(val_docs) + "\n")

    if resume:
        model = GPT2LMHeadModel.from_pretrained(ckpt, local_files_only=True)
        state = json.loads((ckpt / "state.json").read_text())
        saved = state["config"]
        for key in ("n_layer", "n_embd", "n_head", "n_ctx", "batch_size", "seed"):
            if saved[key] != getattr(cfg, key):
                raise PocketError(f"--resume with {key}={getattr(cfg, key)} but the checkpoint used {saved[key]}")
    elif base is not None:
        model = base
        if cfg.dropout:
            for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
                setattr(model.config, k, cfg.dropout)
        state = {"step": 0, "tokens_seen": 0}
    else:
        shape = GPT2Config(vocab.n_vocab, cfg.n_ctx, cfg.n_embd, cfg.n_layer, cfg.n_head, 4 * cfg.n_embd)
        if cfg.n_embd % cfg.n_head:
            raise PocketError(f"--embd {cfg.n_embd} is not divisible by --heads {cfg.n_head}")
        model = GPT2LMHeadModel(hf_config(shape, vocab, tied=True, dropout=cfg.dropout))
        state = {"step": 0, "tokens_seen": 0}
    model.train()
    n_params = sum(p.numel() for p in model.parameters())

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(cfg.seed)
    if resume:
        extra = torch.load(ckpt / "optimizer.pt", weights_only=False)
        opt.load_state_dict(extra["optimizer"])
        torch.set_rng_state(extra["torch_rng"])
        rng.bit_generator.state = state["np_rng"]

    windows = _val_windows(val_ids, cfg.n_ctx, cfg.eval_batches * cfg.batch_size)
    step, tokens_seen = int(state["step"]), int(state["tokens_seen"])
    val_loss = float(state.get("val_loss", float("nan")))
    train_loss = float("nan")
    start = time.time()
    deadline = start + cfg.max_minutes * 60 if cfg.max_minutes else None
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    ema = None
    t_last, tok_last = time.time(), 0
    while step < cfg.steps:
        if chat_ids is None:
            starts = rng.integers(0, len(train_ids) - cfg.n_ctx - 1, size=cfg.batch_size)
            batch = np.stack([train_ids[s : s + cfg.n_ctx + 1] for s in starts])
        else:
            assert chat_starts is not None  # made with chat_ids
            rows = []
            for _ in range(cfg.batch_size):
                if rng.random() < cfg.chat_mix:
                    s = int(chat_starts[rng.integers(0, len(chat_starts))])
                    rows.append(chat_ids[s : s + cfg.n_ctx + 1])
                else:
                    s = int(rng.integers(0, len(train_ids) - cfg.n_ctx - 1))
                    rows.append(train_ids[s : s + cfg.n_ctx + 1])
            batch = np.stack(rows)
        x = torch.from_numpy(batch[:, :-1])
        y = torch.from_numpy(batch[:, 1:])
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        tokens_seen += int(y.numel())
        tok_last += int(y.numel())
        train_loss = float(loss)
        ema = train_loss if ema is None else 0.95 * ema + 0.05 * train_loss
        now = time.time()
        if now - t_last >= 2 or step == cfg.steps:
            bar.set_postfix(loss=f"{ema:.3f}", val=f"{val_loss:.3f}", tok_s=f"{tok_last / (now - t_last):.0f}")
            t_last, tok_last = now, 0
        bar.update(1)
        last = step == cfg.steps or (deadline is not None and now >= deadline)
        if windows and (step % cfg.eval_every == 0 or last):
            val_loss = _evaluate(model, windows)
        if step % cfg.checkpoint_every == 0 or last:
            _save_checkpoint(out, model, opt, {
                "step": step, "tokens_seen": tokens_seen, "val_loss": val_loss,
                "np_rng": rng.bit_generator.state, "config": asdict(cfg),
            })
        if last:
            break
    bar.close()
    seconds = time.time() - start
    model.eval()
    model.save_pretrained(out)
    save_vocab(vocab, out, folder_chat_template(cfg.init) if cfg.init and Path(cfg.init).is_dir() else None)
    result = TrainResult(val_loss=val_loss, train_loss=train_loss, tokens_seen=tokens_seen, steps=step,
                         seconds=round(seconds, 1), n_params=n_params, out=str(out))
    write_text_atomic(out / "train.json", json.dumps({**asdict(result), "config": asdict(cfg)}, indent=2))
    return result
