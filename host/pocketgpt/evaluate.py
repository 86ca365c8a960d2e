"""Perplexity, bits per byte and (against a reference model) mean KL divergence and top-1 agreement.

The text is scored with a sliding window over the model's context: windows of `n_ctx` tokens
advancing by `stride`, each token scored once, with as much left context as the window allows.
The token stream starts with <|endoftext|> (GPT-2's document boundary), so every token of the text
is predicted and bits per byte = total negative log-likelihood in bits / UTF-8 bytes of the text.
A fortune file (quotes between `%` lines) is scored as its quotes joined by <|endoftext|>, exactly
as the model was trained; each separator counts as one byte.

bpb is the fair measure across models whose vocabularies differ; KL (nats per token,
KL(reference || model)) is the sharp one for quantization, where perplexity barely moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pocketgpt.errors import PocketError

if TYPE_CHECKING:
    from pocketgpt.gguf_io import ModelFile

LogitsFn = Callable[[np.ndarray], np.ndarray]  # token ids (n,) -> logits (n, n_vocab)


class Scorer(Protocol):
    n_ctx: int
    n_vocab: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...
    def logits(self, ids: np.ndarray) -> np.ndarray: ...


@dataclass
class EvalResult:
    ppl: float
    bpb: float
    nll: float  # mean nats per token
    tokens: int
    bytes: int
    kl: float | None = None
    top1: float | None = None
    ref_ppl: float | None = None
    ref_bpb: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        for k, v in list(d.items()):
            if isinstance(v, float):
                d[k] = round(v, 6) if k != "kl" else float(f"{v:.6g}")
        return d


def token_stream(scorer: Scorer, text: str) -> tuple[np.ndarray, int]:
    """<|endoftext|> + the text's tokens (quotes joined by <|endoftext|>), and the bytes they cover."""
    from pocketgpt.corpus import split_documents

    docs = split_documents(text) if "\n%" in text or text.startswith("%") else [text]
    if not docs:
        raise PocketError("the evaluation text is empty")
    ids = [scorer.eos_id]
    n_bytes = 0
    for i, doc in enumerate(docs):
        if i:
            ids.append(scorer.eos_id)
            n_bytes += 1
        ids.extend(scorer.encode(doc))
        n_bytes += len(doc.encode("utf-8"))
    return np.asarray(ids, dtype=np.int64), n_bytes


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def windows(n_tokens: int, n_ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) spans: ids[start:end] is fed; targets ids[first_scored+1 .. end-1] scored.

    Every position p in [0, n_tokens-1) is scored exactly once (predicting ids[p+1]).
    """
    spans = []
    scored = 0  # next position whose next-token prediction is still unscored
    start = 0
    while scored < n_tokens - 1:
        end = min(start + n_ctx, n_tokens)
        spans.append((start, end, scored))
        scored = end - 1
        if end == n_tokens:
            break
        start = max(start + stride, end - n_ctx) if end - start == n_ctx else end
        start = min(start, scored)
    return spans


def evaluate(scorer: Scorer, text: str, ref: Scorer | None = None, stride: int | None = None,
             progress: bool = False) -> EvalResult:
    from tqdm import tqdm

    ids, n_bytes = token_stream(scorer, text)
    if ref is not None:
        if ref.n_vocab != scorer.n_vocab:
            raise PocketError(f"--ref has {ref.n_vocab} tokens, the model {scorer.n_vocab}: "
                              "KL needs the same vocabulary (compare bpb instead)")
        ref_ids, _ = token_stream(ref, text)
        if not np.array_equal(ref_ids, ids):
            raise PocketError("--ref tokenizes the text differently: KL needs the same tokenizer")
    n_ctx = scorer.n_ctx if ref is None else min(scorer.n_ctx, ref.n_ctx)
    stride = stride or max(1, n_ctx // 2)
    nll = ref_nll = kl = 0.0
    agree = count = 0
    spans = windows(len(ids), n_ctx, stride)
    for start, end, first in tqdm(spans, disable=not progress, unit="window", leave=False):
        window = ids[start:end]
        lp = _log_softmax(scorer.logits(window))
        rows = np.arange(first - start, end - 1 - start)
        targets = window[rows + 1]
        nll -= float(lp[rows, targets].sum())
        count += len(rows)
        if ref is not None:
            rlp = _log_softmax(ref.logits(window))
            ref_nll -= float(rlp[rows, targets].sum())
            p = np.exp(rlp[rows])
            kl += float((p * (rlp[rows] - lp[rows])).sum())
            agree += int((rlp[rows].argmax(-1) == lp[rows].argmax(-1)).sum())
    mean = nll / count
    res = EvalResult(ppl=math.exp(mean), bpb=nll / math.log(2) / n_bytes, nll=mean, tokens=count, bytes=n_bytes)
    if ref is not None:
        res.kl = max(0.0, kl / count)
        res.top1 = agree / count
        res.ref_ppl = math.exp(ref_nll / count)
        res.ref_bpb = ref_nll / math.log(2) / n_bytes
    return res


class TorchScorer:
    """Scores with transformers (float32) — for Hugging Face folders and as the engine's reference."""

    def __init__(self, model_file: ModelFile) -> None:
        from pocketgpt.hf import torch_model

        self.mf = model_file
        self.model = torch_model(model_file)
        self.n_ctx = model_file.cfg.n_ctx
        self.n_vocab = model_file.cfg.n_vocab
        self.eos_id = model_file.vocab.eos_id
        self._tok = model_file.vocab.hf_tokenizer()

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self.model(input_ids=torch.from_numpy(np.asarray(ids, dtype=np.int64)[None]))
        return out.logits[0].float().numpy()


class EngineScorer:
    """Scores with the C engine (the runtime that actually serves the model)."""

    def __init__(self, path: str, threads: int | None = None) -> None:
        from pocketgpt.engine import Engine

        self.engine = Engine(str(path), threads=threads)
        self.n_ctx = self.engine.n_ctx
        self.n_vocab = self.engine.n_vocab
        self.eos_id = self.engine.eos_id

    def encode(self, text: str) -> list[int]:
        return list(self.engine.tokenize(text))

    def logits(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.engine.logits([int(i) for i in ids]), dtype=np.float32)


def engine_available() -> bool:
    try:
        import pocketgpt.engine  # noqa: F401
    except ImportError:
        return False
    return True


def make_scorer(spec: str, backend: str = "auto", threads: int | None = None) -> Scorer:
    """A scorer for a model spec: the C engine for GGUF files when built, else transformers."""
    from pocketgpt import models

    path = models.resolve(spec)
    if path.is_dir():
        if backend == "engine":
            raise PocketError(f"{spec}: the engine reads GGUF files; convert the folder first")
        from pocketgpt.models import from_hf_folder

        return TorchScorer(from_hf_folder(str(path)))
    if backend == "engine" or (backend == "auto" and engine_available()):
        from pocketgpt.gguf_io import read_gguf

        read_gguf(path)  # the same one-line errors for bad files, whichever backend scores
        return EngineScorer(str(path), threads=threads)
    return TorchScorer(models.load(spec))
