"""Streaming text generation behind one small interface, on the C engine or on transformers.

`Generator.stream(prompt, ...)` yields text pieces that are always whole UTF-8 characters, and
records what happened in `last_stats`. The chat and the relay use the engine; the transformers
path serves the toolchain (a model being trained, a Hugging Face folder) and the parity tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

from pocketgpt.errors import PocketError


@dataclass
class Sampling:
    max_tokens: int = 80
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    repeat_penalty: float = 1.1
    seed: int | None = None
    greedy: bool = False
    stop: tuple[str, ...] = field(default_factory=tuple)


class EngineGenerator:
    def __init__(self, path: str, threads: int | None = None) -> None:
        from pocketgpt.engine import Engine

        self.engine = Engine(str(path), threads=threads)
        self.last_stats: dict = {}

    def stream(self, prompt: str, s: Sampling) -> Iterator[str]:
        sess = self.engine.session()
        ids = [self.engine.eos_id] + list(self.engine.tokenize(prompt))
        ids = ids[-max(1, self.engine.n_ctx - s.max_tokens):]
        try:
            for piece in sess.generate(ids, max_tokens=s.max_tokens, temperature=s.temperature, top_k=s.top_k,
                                       top_p=s.top_p, repeat_penalty=s.repeat_penalty, seed=s.seed,
                                       greedy=s.greedy, stop=s.stop, stop_at_eos=True):
                if piece.text:
                    yield piece.text
        finally:
            self.last_stats = dict(sess.last_stats or {})


class TorchGenerator:
    """transformers forward with a KV cache; same sampling rules as the engine's sampler."""

    def __init__(self, model_file) -> None:
        from pocketgpt.hf import torch_model

        self.mf = model_file
        self.model = torch_model(model_file)
        self.tok = model_file.vocab.hf_tokenizer()
        self.eos = model_file.vocab.eos_id
        self.n_ctx = model_file.cfg.n_ctx
        self.last_stats: dict = {}

    def stream(self, prompt: str, s: Sampling) -> Iterator[str]:
        import torch

        gen = torch.Generator().manual_seed(s.seed if s.seed is not None else int(time.time_ns() % (1 << 31)))
        ids = [self.eos] + list(self.tok(prompt, add_special_tokens=False)["input_ids"])
        ids = ids[-max(1, self.n_ctx - s.max_tokens):]
        out: list[int] = []
        text_sent = ""
        past = None
        t0 = time.time()
        t_first = None
        finish = "length"
        x = torch.tensor([ids])
        with torch.no_grad():
            for _ in range(min(s.max_tokens, self.n_ctx - len(ids))):
                res = self.model(input_ids=x, past_key_values=past, use_cache=True)
                past = res.past_key_values
                logits = res.logits[0, -1].double()
                if t_first is None:
                    t_first = time.time()
                nxt = sample_torch(logits, ids + out, s, gen)
                if nxt == self.eos:
                    finish = "stop"
                    break
                out.append(nxt)
                x = torch.tensor([[nxt]])
                text = self.tok.decode(out)
                if text.endswith("\ufffd"):
                    continue  # a character still incomplete: wait for its remaining bytes
                stop_at = _find_stop(text, s.stop)
                if stop_at is not None:
                    text = text[:stop_at]
                    if len(text) > len(text_sent):
                        yield text[len(text_sent):]
                    finish = "stop"
                    break
                if len(text) > len(text_sent):
                    yield text[len(text_sent):]
                    text_sent = text
        t1 = time.time()
        n = len(out)
        self.last_stats = {
            "prompt_tokens": len(ids), "tokens": out, "finish_reason": finish,
            "prefill_tok_s": len(ids) / max((t_first or t1) - t0, 1e-9),
            "decode_tok_s": max(n - 1, 0) / max(t1 - (t_first or t1), 1e-9),
        }


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [text.find(st) for st in stops if st and st in text]
    return min(hits) if hits else None


def sample_torch(logits, history: list[int], s: Sampling, gen) -> int:
    """Repetition penalty (CTRL-style), temperature, top-k, top-p; greedy is argmax."""
    import torch

    logits = logits.clone()
    if s.repeat_penalty and s.repeat_penalty != 1.0 and history:
        idx = torch.tensor(sorted(set(history)))
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / s.repeat_penalty, vals * s.repeat_penalty)
    if s.greedy or s.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / s.temperature
    if s.top_k and s.top_k < logits.numel():
        kth = torch.topk(logits, s.top_k).values[-1]
        logits[logits < kth] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    if s.top_p < 1.0:
        sp, si = torch.sort(probs, descending=True)
        keep = torch.cumsum(sp, 0) - sp < s.top_p
        mask = torch.zeros_like(probs, dtype=torch.bool)
        mask[si[keep]] = True
        probs = torch.where(mask, probs, torch.zeros_like(probs))
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=gen))


def make_generator(spec: str, backend: str = "auto", threads: int | None = None):
    from pocketgpt import models
    from pocketgpt.evaluate import engine_available

    path = models.resolve(spec)
    if not path.is_dir() and (backend == "engine" or (backend == "auto" and engine_available())):
        from pocketgpt.gguf_io import read_gguf

        read_gguf(path)  # one-line errors for bad files before the engine sees them
        return EngineGenerator(str(path), threads=threads)
    if backend == "engine":
        raise PocketError(f"{spec}: the engine reads GGUF files; convert the folder first")
    return TorchGenerator(models.load(spec))
