"""A PyTorch engine with the C engine's Python API (`Engine`, `session()`, `generate()`).

Why it exists: the relay's reference backend (`pocketgpt serve --backend torch`) for installs
without the C extension, and a second, independent implementation the relay tests can check the
C engine's streams against. It needs the toolchain extra (torch, transformers) and is several
times slower than the C engine; the relay's default stays the C engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Piece:
    token: int
    text: str


class TorchEngine:
    """Same surface as pocketgpt.engine.Engine: n_vocab, n_ctx, eos_id, tokenize, detokenize, session."""

    def __init__(self, path: str, n_ctx: int | None = None, threads: int | None = None) -> None:
        from pocketgpt import hf, models

        mf = models.load(str(path))
        self.n_vocab = mf.cfg.n_vocab
        self.n_ctx = min(n_ctx or mf.cfg.n_ctx, mf.cfg.n_ctx)
        self.eos_id = mf.vocab.eos_id
        self._tokens = mf.vocab.tokens  # GPT-2's byte-to-unicode spelling
        self.chat_template: str | None = (mf.metadata or {}).get("tokenizer.chat_template")
        self._tok = mf.vocab.hf_tokenizer()
        self._tok_lock = threading.Lock()  # the fast tokenizer is not safe to share between threads
        self.model = hf.torch_model(mf)

    def tokenize(self, text: str) -> list[int]:
        with self._tok_lock:
            return list(self._tok.encode(text))

    def detokenize(self, ids: Sequence[int]) -> str:
        with self._tok_lock:
            return self._tok.decode(list(ids), clean_up_tokenization_spaces=False)

    def session(self) -> TorchSession:
        return TorchSession(self)

    def blank_tokens(self) -> list[int]:
        """Ids of the tokens of ASCII whitespace only (the C engine's guard masks them after whitespace)."""
        spell = _byte_spelling()
        chars = {spell[b] for b in b" \t\n\v\f\r"}
        return [i for i, t in enumerate(self._tokens) if t and all(c in chars for c in t)]

    def holding(self, first_bytes: set[int]) -> list[int]:
        """Ids of the tokens that contain any of these bytes (the C engine's pg_textout_guard)."""
        spell = _byte_spelling()
        chars = {spell[b] for b in first_bytes}
        return [i for i, t in enumerate(self._tokens) if any(c in chars for c in t)]


def _byte_spelling() -> dict[int, str]:
    """GPT-2's byte -> printable character map (printable Latin-1 bytes stand for themselves)."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    spell, extra = {}, 0
    for b in range(256):
        if b in keep:
            spell[b] = chr(b)
        else:
            spell[b] = chr(256 + extra)
            extra += 1
    return spell


class TorchSession:
    def __init__(self, engine: TorchEngine) -> None:
        self.engine = engine
        self.last_stats: dict[str, Any] = {}

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 64, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, repeat_penalty: float = 1.1, seed: int | None = None,
                 greedy: bool = False, stop: Sequence[str] = (), stop_at_eos: bool = True,
                 need_word: bool | int = False, subject: str | None = None) -> Iterator[Piece]:
        """As Session.generate, but `subject` is accepted and ignored: the reference engine does
        not steer replies towards the request's subject (the C engine's pg_topic_steer does)."""
        import os
        import time

        import torch

        eng = self.engine
        ids = eng.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        max_tokens = max(0, min(max_tokens, eng.n_ctx - len(ids)))
        gen = torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
        stats = {"prompt_tokens": len(ids), "tokens": 0, "finish_reason": "abort",
                 "prefill_tok_s": 0.0, "decode_tok_s": 0.0}
        self.last_stats = stats
        from pocketgpt.chat_format import count_words

        out: list[int] = []
        emitted = ""
        masked: list[int] | None = None
        blank: list[int] = []
        t0 = time.perf_counter()
        past = None
        inp = torch.tensor([ids], dtype=torch.long)
        t_decode = None
        try:
            with torch.inference_mode():
                while len(out) < max_tokens:
                    res = eng.model(input_ids=inp, cache=past, use_cache=True)
                    past = res["cache"] if "cache" in res else res.past_key_values
                    if t_decode is None:
                        t_decode = time.perf_counter()
                        stats["prefill_tok_s"] = len(ids) / max(t_decode - t0, 1e-9)
                    logits = res.logits[0, -1].float()
                    if need_word and count_words(emitted) < int(need_word):  # as the C engine: no early end
                        if masked is None:
                            masked = [eng.eos_id] + eng.holding({s.encode()[0] for s in stop if s})
                            blank = eng.blank_tokens()
                        logits[masked] = float("-inf")
                        if not emitted or emitted[-1].isspace():  # no run of whitespace tokens before the words
                            logits[blank] = float("-inf")
                    tok = _sample(logits, ids + out, temperature, top_k, top_p, repeat_penalty, greedy, gen)
                    if stop_at_eos and tok == eng.eos_id:
                        stats["finish_reason"] = "stop"
                        return
                    out.append(tok)
                    stats["tokens"] = len(out)
                    text = eng.detokenize(out)
                    if text.endswith("\ufffd"):
                        new = ""  # half a UTF-8 character: wait for the rest
                    else:
                        new, emitted = text[len(emitted):], text
                    hit = next((s for s in stop if s in emitted), None)
                    if hit is not None:
                        cut = emitted.index(hit)
                        new = new[: max(0, len(new) - (len(emitted) - cut))]
                        stats["finish_reason"] = "stop"
                        yield Piece(tok, new)
                        return
                    yield Piece(tok, new)
                    inp = torch.tensor([[tok]], dtype=torch.long)
                stats["finish_reason"] = "length"
        finally:
            if t_decode is not None and len(out) > 1:
                stats["decode_tok_s"] = (len(out) - 1) / max(time.perf_counter() - t_decode, 1e-9)


def _sample(logits: Any, history: list[int], temperature: float, top_k: int, top_p: float,
            repeat_penalty: float, greedy: bool, gen: Any) -> int:
    import torch

    if greedy or temperature <= 0:
        return int(torch.argmax(logits))
    if repeat_penalty != 1.0 and history:
        idx = torch.tensor(sorted(set(history[-64:])), dtype=torch.long)
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / repeat_penalty, vals * repeat_penalty)
    logits = logits / temperature
    if top_k and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[order[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))
