"""The C engine from Python: load a GPT-2 GGUF, tokenize, score and stream generations.

This is what the relay and the demo run, so it needs no torch: the heavy lifting happens in
pocketgpt._engine (firmware/engine compiled by the package install). The model file is mmapped and
its tensors are used in place; each Session owns a KV cache, so several sessions can generate at
once from different threads (the engine releases the GIL while it computes and the threads share
one persistent worker pool per Engine).
"""

from __future__ import annotations

import os
import time
from collections import namedtuple

from pocketgpt.errors import PocketError

# typing (with re and enum behind it, ~1 MiB of RSS) is for type checkers only; numpy is imported
# where logits are returned: generation alone does not need it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    import numpy as np

    from pocketgpt.speculative import Draft


def _native():
    try:
        import pocketgpt._engine as _engine
    except ImportError as exc:  # a source checkout without the compiled extension
        raise PocketError(f"the C engine is not built ({exc}); run: pip install -e .") from None
    return _engine


def default_threads() -> int:
    """All cores this process may use (the machines here have 2)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


Piece = namedtuple("Piece", "token text")
Piece.__doc__ = """One generated token (int) and the complete UTF-8 text (str) it released (may be "").
A collections.namedtuple: a dataclass (inspect, ast, dis...) or typing.NamedTuple would cost the
process ~1 MiB of RSS."""


class Engine:
    """A GPT-2 GGUF loaded into the C engine.

    `path` is a .gguf file or a model spec (`builtin:host`). `n_ctx` caps each session's context
    (default: the model's). `threads` sizes the worker pool (default: every core). `force_ref`
    runs the portable reference kernels (also forced by PG_FORCE_REF=1 in the environment);
    `kernels="ref-q8"` runs the portable reference of the integer-activation paths (int8
    activations with one scale per 32 values, as the chip; per 256 for Q3_K/Q4_K, as x86),
    `kernels="no-avx512"` the fastest set without AVX-512 (AVX2), `kernels="float"` the fastest set
    with float activations only (no int8 activation kernels; closest to the float reference).
    `kv` is how each session stores its KV cache: "f16" (default: half of "f32"'s memory, logits
    within ~1e-3), "f32" (exact), or "q8_0" (27 % of "f32"; models whose head size 32 divides,
    others fall back to "f16").
    """

    def __init__(self, path: str | os.PathLike[str], n_ctx: int | None = None, threads: int | None = None,
                 force_ref: bool = False, n_batch: int = 32, kernels: str = "auto", kv: str = "f16") -> None:
        from pocketgpt.models import resolve

        spec = str(path)
        resolved = resolve(spec) if spec.startswith("builtin:") else os.fspath(path)
        if not os.path.exists(resolved):
            raise PocketError(f"{resolved}: no such model file; give a .gguf path or builtin:host")
        if os.path.isdir(resolved):
            raise PocketError(f"{resolved}: is a folder; convert it with 'pocketgpt convert {resolved} OUT.gguf' first")
        force_ref = force_ref or os.environ.get("PG_FORCE_REF", "") not in ("", "0")
        self.path = str(resolved)
        modes = {"auto": 0, "ref": 1, "ref-q8": 2, "no-avx512": 3, "float": 4}
        if kernels not in modes:
            raise PocketError(f"unknown kernels {kernels!r}; choose one of {', '.join(modes)}")
        mode = 1 if force_ref and kernels == "auto" else modes[kernels]
        if threads is not None and threads < 1:
            raise PocketError(f"threads must be >= 1, got {threads}")
        self._model = _native().Model(self.path, threads=threads or default_threads(), kernels=mode)
        cfg = self._model.config()
        self.n_vocab: int = cfg["n_vocab"]
        self.n_embd: int = cfg["n_embd"]
        self.n_layer: int = cfg["n_layer"]
        self.n_head: int = cfg["n_head"]
        self.n_ff: int = cfg["n_ff"]
        self.eos_id: int = cfg["eos_id"]
        self.bos_id: int = cfg["bos_id"]
        self.kernels: str = cfg["kernels"]
        self.threads: int = cfg["threads"]
        self.model_n_ctx: int = cfg["n_ctx"]
        # the chat layout stored in the file (None: a file without one; chat_format falls back to its own)
        self.chat_template: str | None = self._model.meta_string("tokenizer.chat_template")
        if n_ctx is not None and not 1 <= n_ctx <= self.model_n_ctx:
            raise PocketError(f"n_ctx {n_ctx} outside 1..{self.model_n_ctx} (the model's context)")
        self.n_ctx: int = n_ctx or self.model_n_ctx
        self.n_batch = n_batch
        kv_types = {"f32": 0, "f16": 1, "q8_0": 8}
        if kv not in kv_types:
            raise PocketError(f"unknown kv cache type {kv!r}; choose one of {', '.join(kv_types)}")
        if kv == "q8_0" and (self.n_embd // self.n_head) % 32:
            kv = "f16"
        self.kv: str = kv
        self._kv_type = kv_types[kv]

    # -- tokenizer --------------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        """GPT-2 byte-level BPE, identical to the Hugging Face tokenizer (special: parse <|endoftext|>)."""
        return self._model.tokenize(text.encode("utf-8", "surrogatepass"), special)

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._model.detokenize(list(ids)).decode("utf-8", "replace")

    def token_bytes(self, token: int) -> bytes:
        return self._model.token_bytes(int(token))

    # -- scoring ----------------------------------------------------------------------------
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), n_vocab) float32 of a fresh sequence, every position."""
        import numpy as np

        ids = [int(i) for i in ids]
        if not ids:
            return np.zeros((0, self.n_vocab), dtype=np.float32)
        if len(ids) > self.n_ctx:
            raise PocketError(f"{len(ids)} tokens exceed the {self.n_ctx}-token context")
        out = np.empty((len(ids), self.n_vocab), dtype=np.float32)
        sess = _native().Session(self._model, n_ctx=len(ids), n_batch=min(self.n_batch, len(ids)), kv_type=self._kv_type)
        sess.eval(ids, out)
        return out

    # -- generation -------------------------------------------------------------------------
    def session(self) -> Session:
        return Session(self)

    def generate(self, prompt: str | Sequence[int], **kw: Any) -> Iterator[Piece]:
        """`Session.generate` on a fresh session."""
        return self.session().generate(prompt, **kw)

    # -- batched decode -----------------------------------------------------------------------
    def decode_batch(self, pairs: Sequence[tuple[Session, int]]) -> list[np.ndarray]:
        """Append one token to each session, all in one forward pass, and return each session's
        next-token logits (n_vocab float32 arrays, copies) in the same order.

        Each session keeps its own KV cache and position, so sessions of different lengths batch
        together; every weight matrix is read once for the whole batch, which is what makes N
        streams cost far less than N single decodes. The GIL is released while it computes. A
        session may appear once per call; a full context or a bad token raises PocketError and
        leaves every session as it was.
        """
        import numpy as np

        self._decode([s for s, _ in pairs], [int(t) for _, t in pairs])
        return [np.frombuffer(s._s.last_logits(), dtype=np.float32) for s, _ in pairs]

    def _decode(self, sessions: Sequence[Session], tokens: Sequence[int]) -> None:
        for s in sessions:
            if s.engine is not self:
                raise PocketError("decode_batch: a session of another Engine was given")
        self._model.decode_batch([s._s for s in sessions], tokens)

    def step(self, streams: Sequence[Stream]) -> list[Piece | None]:
        """Advance every live stream by one token and return its Piece (None for a stream that is
        done, or that a newer generation on its session replaced).

        Streams still waiting for their prompt are prefilled one by one (a prompt is already
        matrix-matrix work), and so are streams with a draft (speculative: one verification pass
        settles several tokens, emitted one per step); all the others go through one `decode_batch`. Sampling, stop strings
        and end of text then run per stream with its own settings, exactly as `generate` would.
        """
        out: list[Piece | None] = [None] * len(streams)
        batch: list[int] = []
        for i, st in enumerate(streams):
            if not st._live():
                continue
            if st.needs_prefill or (st._spec is not None and (st._spec.started or st._spec_ready())):
                out[i] = st.advance()
            else:
                batch.append(i)
        if batch:
            t = time.perf_counter()
            self._decode([streams[i].session for i in batch], [streams[i].generated[-1] for i in batch])
            dt = time.perf_counter() - t
            for i in batch:
                streams[i]._count_decode(dt)
                out[i] = streams[i]._sample()
        return out


class Session:
    """One conversation's KV cache. Use one session per thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._s = _native().Session(engine._model, n_ctx=engine.n_ctx, n_batch=engine.n_batch, kv_type=engine._kv_type)
        self.last_stats: dict = {}
        self._generation = 0  # a new generate() ends any earlier iterator of this session

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 64, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, repeat_penalty: float = 1.1, seed: int | None = None, greedy: bool = False,
                 stop: Sequence[str] = (), stop_at_eos: bool = True, repeat_last_n: int = 64,
                 need_word: bool | int = False, draft: Draft | None = None,
                 subject: str | None = None, steer_params: dict | None = None) -> Iterator[Piece]:
        """Stream pieces for `prompt` (text or token ids), starting from an empty context.

        Stops at `max_tokens` ('length'), at the end-of-text token or a stop string ('stop'; the
        stop string itself is not emitted), or when the caller stops iterating ('abort'). The
        context is cut to the last n_ctx - max_tokens prompt tokens when it would overflow.
        `need_word` (chat replies): no end-of-text and no stop string before the reply has a word,
        or that many words when an int (the C engine masks those tokens until then; see
        pg_textout_guard).
        `draft` (a `pocketgpt.speculative.Draft` for this engine) turns on speculative decoding:
        greedy output is the same tokens, sampled output the same distribution, fewer target passes.
        `subject` (chat replies; chat_format.subject_of of the request): subject-steered decoding,
        the reply is pushed to name that word (the C engine's pg_topic_steer: a begun word is
        completed, the word's first token gets a bias growing with the reply's length, and the
        reply cannot end until it named it or PG_TOPIC_CAP tokens passed). None: no steering.
        `steer_params` (bias, slope, cap: the tuning knobs, bench/chat.py) override the C defaults.
        """
        stream = self.stream(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             repeat_penalty=repeat_penalty, seed=seed, greedy=greedy, stop=stop,
                             stop_at_eos=stop_at_eos, repeat_last_n=repeat_last_n, need_word=need_word,
                             draft=draft, subject=subject, steer_params=steer_params)
        return self._run(stream)

    def stream(self, prompt: str | Sequence[int], max_tokens: int = 64, temperature: float = 0.8, top_k: int = 40,
               top_p: float = 0.95, repeat_penalty: float = 1.1, seed: int | None = None, greedy: bool = False,
               stop: Sequence[str] = (), stop_at_eos: bool = True, repeat_last_n: int = 64,
               need_word: bool | int = False, draft: Draft | None = None,
               subject: str | None = None, steer_params: dict | None = None) -> Stream:
        """A generation on this session that the caller advances: `Engine.step([streams])` moves
        several at once with one batched forward pass (what a server with many clients wants);
        `generate` is the same thing stepped alone. Starting a stream ends any earlier one here.
        A stream with a `draft` decodes speculatively and is always advanced on its own."""
        if draft is not None and draft.target is not self.engine:
            raise PocketError("the draft was made for another Engine")
        self._generation += 1
        return Stream(self, self._generation, prompt, max_tokens, dict(
            temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
            repeat_penalty=float(repeat_penalty), repeat_last_n=int(repeat_last_n), greedy=bool(greedy),
            need_word=int(need_word)),
            seed, stop, stop_at_eos, draft, subject, steer_params)

    def _run(self, stream: Stream) -> Iterator[Piece]:
        try:
            while not stream.done:
                if stream.generation != self._generation:
                    return  # a newer generation on this session took over its KV cache ('abort')
                piece = stream.advance()
                if piece is not None:
                    yield piece
        finally:
            stream.close()


class Stream:
    """One generation advanced token by token from outside (made by `Session.stream`).

    `advance()` computes this stream alone (the prompt on the first call, then one token);
    `Engine.step(streams)` advances many with one batched decode. Each call returns the next
    Piece, or None once the stream is done; `finish_reason` is then 'stop' (end of text or a
    stop string), 'length' (max_tokens) or 'abort' (`close()` before the end). `stats` is the
    session's `last_stats` dict.
    """

    def __init__(self, session: Session, generation: int, prompt: str | Sequence[int], max_tokens: int,
                 params: dict, seed: int | None, stop: Sequence[str], stop_at_eos: bool,
                 draft: Draft | None = None, subject: str | None = None,
                 steer_params: dict | None = None) -> None:
        eng = session.engine
        ids = eng.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            ids = [eng.bos_id]
        if max_tokens < 0:
            raise PocketError(f"max_tokens must be >= 0, got {max_tokens}")
        room = eng.n_ctx - max_tokens
        if room < 1:
            raise PocketError(f"max_tokens {max_tokens} leaves no room for the prompt in the {eng.n_ctx}-token context")
        if len(ids) > room:
            ids = ids[-room:]
        stops = [s.encode("utf-8") for s in stop if s]
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        self.session = session
        self.generation = generation
        self.max_tokens = max_tokens
        self.params = params
        self.stop_at_eos = stop_at_eos
        self.prompt_ids = ids
        self.history = list(ids)
        self.generated: list[int] = []
        self.done = False
        self.stats = {"prompt_tokens": len(ids), "tokens": self.generated, "finish_reason": "abort",
                      "prefill_tok_s": 0.0, "decode_tok_s": 0.0}
        self._decode_time = 0.0
        self._spec = None
        if draft is not None:
            from pocketgpt.speculative import SpecState

            self._spec = SpecState(draft, seed)
        s = session._s
        s.reset()
        s.seed(seed & 0xFFFFFFFFFFFFFFFF)
        s.text_begin(stops)
        self.steered = bool(subject) and s.topic_begin(subject, **(steer_params or {}))
        session.last_stats = self.stats
        if max_tokens == 0:
            self._end("length")

    @property
    def finish_reason(self) -> str:
        return str(self.stats["finish_reason"])

    @property
    def needs_prefill(self) -> bool:
        return not self.done and not self.generated

    def _live(self) -> bool:
        if self.done:
            return False
        if self.generation != self.session._generation:  # the session started something newer
            self._end("abort")
            return False
        return True

    def advance(self) -> Piece | None:
        """Compute this stream's next token on its own (prefill first) and return its piece."""
        if not self._live():
            return None
        s = self.session._s
        t = time.perf_counter()
        if not self.generated:
            s.eval(self.prompt_ids)
            self.stats["prefill_tok_s"] = len(self.prompt_ids) / max(time.perf_counter() - t, 1e-9)
            return self._sample()
        if self._spec is not None and not self._spec.started and self._spec_ready():
            self._spec.start(self.prompt_ids + self.generated)
        if self._spec is not None and self._spec.started:
            from pocketgpt.speculative import next_token

            return self._emit(next_token(self))
        else:
            s.eval([self.generated[-1]])
            self._count_decode(time.perf_counter() - t)
        return self._sample()

    def _spec_ready(self) -> bool:
        """Speculation starts once the reply guard (need_word) is satisfied and subject steering is
        over: until then they shape each plain step's logits, which a draft's verification pass
        does not apply."""
        need = self.params["need_word"]
        if self.steered and self.session._s.topic_state()[0]:
            return False  # subject steering shapes each plain step; a draft's verification does not
        return need <= 0 or self.session._s.text_words() >= need

    def _count_decode(self, seconds: float) -> None:
        self._decode_time += seconds
        self.stats["decode_tok_s"] = (len(self.generated)) / max(self._decode_time, 1e-9)

    def _sample(self) -> Piece:
        """Sample from the session's current logits, emit the piece, and end the stream when due."""
        last_n = self.params["repeat_last_n"]
        return self._emit(self.session._s.sample(self.history[-last_n:] if last_n > 0 else self.history, **self.params))

    def _emit(self, tok: int) -> Piece:
        """Append a chosen token, emit its piece, and end the stream when due."""
        s = self.session._s
        self.generated.append(tok)
        self.history.append(tok)
        if self.stop_at_eos and tok == self.session.engine.eos_id:
            self._end("stop")
            return Piece(tok, s.text_flush().decode("utf-8"))
        data, stopped = s.text_push(tok)
        if stopped:
            self._end("stop")
            return Piece(tok, data.decode("utf-8"))
        if len(self.generated) == self.max_tokens:
            data += s.text_flush()
            self._end("length")
        return Piece(tok, data.decode("utf-8"))

    def _end(self, reason: str) -> None:
        self.done = True
        self.stats["finish_reason"] = reason

    def close(self) -> None:
        """Abort: the stream ends now with finish_reason 'abort' (no effect once it is done)."""
        if not self.done:
            self._end("abort")
