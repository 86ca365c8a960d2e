"""Where the relay's text comes from: the embedded engine, or any OpenAI-compatible server.

Every backend turns a `GenRequest` into a `Generation`: an async iterator of text pieces with an
`abort()` and, once it ends, `stats` (prompt_tokens, tokens, finish_reason). The server never
knows which backend it talks to, so batched decode (a later issue) slots in behind the same
interface by replacing `TokenScheduler`.

The engine backend keeps inference off the event loop. With the C engine one scheduler thread
advances every live generation by one token per step through the engine's batched decode
(`Engine.step`: each weight matrix is read once for the whole batch, the engine's own thread pool
splits the rows), so N devices cost far less than N single decodes, no generation can starve
another, and an abort is seen before the next step. Engines without batched decode (the PyTorch
reference) are stepped round robin by a small pool of worker threads instead.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from pocketgpt.engine import Engine, Session, Stream
    from pocketgpt.relay.torch_engine import TorchEngine
    from pocketgpt.speculative import Draft

log = logging.getLogger("pocketgpt.relay")


class BackendError(Exception):
    """A generation that could not run. `code` is a protocol error code (see protocol.ERROR_CODES)."""

    def __init__(self, code: str, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class GenRequest:
    prompt: str
    max_tokens: int = 64
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    repeat_penalty: float = 1.1
    seed: int | None = None
    greedy: bool = False
    stop: tuple[str, ...] = ()
    # a chat request: (role, content) pairs rendered with the model's chat template, replacing
    # `prompt` (kept for logs and limits); the reply stops at the template's stop strings and
    # cannot end before chat_format.MIN_WORDS words
    messages: tuple[tuple[str, str], ...] = ()

    @property
    def chat(self) -> bool:
        return bool(self.messages)

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class GenStats:
    prompt_tokens: int = 0
    tokens: int = 0
    finish_reason: str = "stop"
    first_token_s: float | None = None   # seconds from start() to the first piece
    extra: dict[str, Any] = field(default_factory=dict)


class Generation:
    """One running generation: `async for text in gen`, `gen.abort()`, then `gen.stats`.

    The producer (a worker thread or an HTTP stream reader) calls `_put`/`_finish`/`_fail`
    through the event loop; the consumer iterates. An error ends the iteration by raising
    BackendError.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._aborted = threading.Event()
        self._started = time.perf_counter()
        self.stats = GenStats()
        self.finished = False
        self._on_abort: list[Any] = []

    # producer side (thread-safe)
    def _put_threadsafe(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))
        except RuntimeError:
            pass  # the loop is gone (server stopped): nobody is listening any more

    # consumer side
    @property
    def aborted(self) -> bool:
        return self._aborted.is_set()

    def abort(self) -> None:
        """Stop at the next token boundary; the iteration then ends with finish_reason 'abort'."""
        if not self._aborted.is_set():
            self._aborted.set()
            for cb in self._on_abort:
                cb()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            kind, value = await self._queue.get()
            if kind == "piece":
                if self.stats.first_token_s is None:
                    self.stats.first_token_s = time.perf_counter() - self._started
                if value:
                    yield value
            elif kind == "done":
                self.stats = _merge_stats(self.stats, value)
                self.finished = True
                return
            else:  # "error"
                self.finished = True
                raise value


def _merge_stats(current: GenStats, final: GenStats) -> GenStats:
    final.first_token_s = current.first_token_s
    return final


class Backend:
    """The interface the server uses. `start` must not block the event loop."""

    name = "backend"
    model_id = "model"
    n_vocab: int | None = None  # bounds top_k when known

    async def start(self, req: GenRequest) -> Generation:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_id}

    async def aclose(self) -> None:
        return None


# ---- embedded engine -------------------------------------------------------------------------

class _Job:
    __slots__ = ("gen", "req", "iterator", "session", "prompt_ids")

    def __init__(self, gen: Generation, req: GenRequest) -> None:
        self.gen = gen
        self.req = req
        self.iterator: Generator[Any, None, None] | None = None
        self.session: Any = None
        self.prompt_ids: list[int] = []


def _prompt_and_params(engine: Engine | TorchEngine, req: GenRequest, max_prompt_tokens: int | None) -> tuple[list[int], dict[str, Any]]:
    """The request's prompt as token ids (refused when empty or too long) and its generation settings."""
    from pocketgpt import chat_format

    stop = tuple(req.stop)
    if req.chat:
        from pocketgpt.errors import PocketError

        try:
            ids = chat_format.prompt_ids(engine, req.chat_messages())
        except PocketError as exc:  # the model file's template is broken: the relay's problem, said once
            raise BackendError("backend_error", str(exc), 500) from None
        stop += tuple(s for s in chat_format.STOP_STRINGS if s not in stop)
    else:
        ids = engine.tokenize(req.prompt)
    if not ids:
        raise BackendError("bad_message", "the prompt has no tokens", 400)
    limit = max_prompt_tokens or engine.n_ctx - 1
    if len(ids) > limit:
        raise BackendError("prompt_too_long", f"prompt is {len(ids)} tokens; this relay takes at most {limit}: "
                           "shorten it", 400)
    room = engine.n_ctx - len(ids)
    kw = dict(max_tokens=max(1, min(req.max_tokens, room)), temperature=req.temperature, top_k=req.top_k,
              top_p=req.top_p, repeat_penalty=req.repeat_penalty, seed=req.seed, greedy=req.greedy,
              stop=stop, stop_at_eos=True)
    if req.chat:
        kw["need_word"] = chat_format.MIN_WORDS
    return ids, kw


class _Scheduler:
    """What both schedulers share: a lock with a wake-up, refusal once closed, and final stats."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False

    def _count(self) -> int:
        raise NotImplementedError

    def _enqueue(self, job: Any) -> None:
        raise NotImplementedError

    @property
    def live(self) -> int:
        with self._cond:
            return self._count()

    def submit(self, job: Any) -> None:
        with self._cond:
            if self._closed:
                raise BackendError("shutting_down", "the engine is shutting down", 503)
            self._enqueue(job)
            self._cond.notify()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @staticmethod
    def _final_stats(raw: dict[str, Any], prompt_ids: list[int], reason: str | None) -> GenStats:
        """GenStats from an engine session's stats dict (tokens as ids or a count)."""
        tokens = raw.get("tokens", 0)
        stats = GenStats(prompt_tokens=int(raw.get("prompt_tokens", len(prompt_ids))),
                         tokens=len(tokens) if isinstance(tokens, (list, tuple)) else int(tokens),
                         finish_reason=reason or str(raw.get("finish_reason", "stop")),
                         extra={k: raw[k] for k in ("prefill_tok_s", "decode_tok_s") if k in raw})
        if stats.finish_reason not in ("stop", "length", "abort"):
            stats.finish_reason = "stop"
        return stats


class TokenScheduler(_Scheduler):
    """Round-robin token steps over all live generations on a fixed pool of worker threads.

    A job is in the run queue only while no worker holds it, so one engine session is never
    stepped by two threads at once; a worker takes the head job, computes exactly one token
    (the first step also does the prefill) and puts the job back at the tail. With W workers and
    N live generations every generation advances once per N/W steps: fair, and an abort flag is
    checked before every step. New jobs enter at the head, once, to keep time to first token short.
    """

    def __init__(self, engine: Engine | TorchEngine, workers: int, max_prompt_tokens: int | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.max_prompt_tokens = max_prompt_tokens
        self._queue: collections.deque[_Job] = collections.deque()
        self._threads = [threading.Thread(target=self._work, name=f"pocketgpt-gen-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def _count(self) -> int:
        return len(self._queue)

    def _enqueue(self, job: _Job) -> None:
        # a new request goes to the front: its first token (the prefill step) comes after at most
        # one step per worker instead of one step of every live generation; then it joins the
        # round robin at the back like everyone else, so it jumps the queue once only
        self._queue.appendleft(job)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            jobs = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in jobs:
            job.gen.abort()
            self._finish(job, "abort")
        for t in self._threads:
            t.join(timeout=5)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
            keep = False
            try:
                keep = self._step(job)
            except BackendError as exc:
                self._close_iter(job)
                job.gen._put_threadsafe("error", exc)
            except Exception as exc:  # an engine failure ends this generation, never the worker
                log.exception("engine failed during a generation")
                self._close_iter(job)
                job.gen._put_threadsafe("error", BackendError("backend_error", f"engine failed: {exc}"))
            if keep:
                with self._cond:
                    if self._closed:
                        keep = False
                    else:
                        self._queue.append(job)
                        self._cond.notify()
                if not keep:
                    self._finish(job, "abort")

    def _step(self, job: _Job) -> bool:
        """Advance one token; True if the job should go back in the queue."""
        if job.gen.aborted:
            self._finish(job, "abort")
            return False
        if job.iterator is None:
            ids, kw = _prompt_and_params(self.engine, job.req, self.max_prompt_tokens)
            job.prompt_ids = ids
            job.session = self.engine.session()
            job.iterator = iter(job.session.generate(ids, **kw))
        try:
            piece = next(job.iterator)
        except StopIteration:
            self._finish(job, None)
            return False
        job.gen._put_threadsafe("piece", piece.text)
        return True

    def _close_iter(self, job: _Job) -> None:
        if job.iterator is not None:
            try:
                job.iterator.close()  # breaking out of the engine's iterator aborts it
            except Exception:
                log.exception("engine iterator failed to close")

    def _finish(self, job: _Job, reason: str | None) -> None:
        if job.gen.finished:
            return
        self._close_iter(job)
        raw = dict(getattr(job.session, "last_stats", None) or {}) if job.session is not None else {}
        stats = self._final_stats(raw, job.prompt_ids, reason)
        job.gen.finished = True  # guards against a second _finish; the consumer sees "done" below
        job.gen._put_threadsafe("done", stats)


def _open_stream(engine: Engine, session: Session, req: GenRequest, max_prompt_tokens: int | None,
                 draft: Draft | None = None) -> tuple[Stream, list[int]]:
    """Tokenize and check a request's prompt, then start its stream on `session` (speculatively
    with `draft`, a pocketgpt.speculative.Draft, when given)."""
    ids, kw = _prompt_and_params(engine, req, max_prompt_tokens)
    if draft is not None:
        kw["draft"] = draft
    return session.stream(ids, **kw), ids


class _BatchJob:
    __slots__ = ("gen", "req", "stream", "session", "prompt_ids")

    def __init__(self, gen: Generation, req: GenRequest) -> None:
        self.gen = gen
        self.req = req
        self.stream: Any = None
        self.session: Any = None
        self.prompt_ids: list[int] = []


class BatchScheduler(_Scheduler):
    """Every live generation advances one token per step, all in one batched decode.

    One thread owns the engine's sessions. Each step: finished and aborted jobs leave (their
    sessions go back to a pool, so a KV cache is allocated once, not per request); at most
    `prefill_per_step` new jobs are admitted and prefilled (a long prompt costs the others one
    step's delay, not one per prompt token); then `Engine.step` decodes one token for every
    running job together, up to `max_batch` of them, the rest taking the next step in turn.
    With a `draft` (pocketgpt.speculative.Draft), a job that starts while no other is live
    decodes speculatively (a single stream gains from it; batched streams already share reads).
    """

    def __init__(self, engine: Engine, max_batch: int = 32, max_prompt_tokens: int | None = None,
                 prefill_per_step: int = 2, draft: Draft | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.draft = draft
        self.max_batch = max(1, max_batch)
        self.max_prompt_tokens = max_prompt_tokens
        self.prefill_per_step = max(1, prefill_per_step)
        self._pending: collections.deque[_BatchJob] = collections.deque()
        self._running: collections.deque[_BatchJob] = collections.deque()
        self._free_sessions: list[Any] = []
        self._inflight: list[_BatchJob] = []  # the jobs the step under way touches (ended on failure)
        self.steps = 0
        self.batched_tokens = 0
        self._thread = threading.Thread(target=self._work, name="pocketgpt-batch", daemon=True)
        self._thread.start()

    def _count(self) -> int:
        return len(self._pending) + len(self._running)

    def _enqueue(self, job: _BatchJob) -> None:
        self._pending.append(job)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        with self._cond:
            jobs = list(self._pending) + list(self._running)
            self._pending.clear()
            self._running.clear()
        for job in jobs:
            job.gen.abort()
            self._finish(job, "abort")

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._running and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                admitted = [self._pending.popleft() for _ in range(min(self.prefill_per_step, len(self._pending)))]
            self._inflight = list(admitted)
            try:
                self._step(admitted)
            except Exception as exc:  # a failure ends the generations it touched, never the scheduler
                log.exception("engine failed during a batched step")
                for job in self._inflight:
                    self._fail(job, BackendError("backend_error", f"engine failed during a step: {exc}"))
            self._inflight = []

    def _step(self, admitted: list[_BatchJob]) -> None:
        # leave: aborted or finished jobs (an abort is honoured before any further token)
        for job in list(self._running):
            if job.gen.aborted or job.stream.done:
                self._running.remove(job)
                self._finish(job, "abort" if job.gen.aborted else None)
        # this step's batch: the running jobs, oldest turn first (taken before the new jobs join
        # the queue, so a new job's first token is its prefill's). If the batched step fails, each
        # of its jobs ends with an error (the _work handler): none is left waiting for a token
        batch = [self._running.popleft() for _ in range(min(len(self._running), self.max_batch))]
        self._inflight = admitted + batch
        # admit: each new job opens and prefills on its own, so a request the engine refuses or
        # fails on ends with an error for that request alone, never for the others in the batch
        for job in admitted:
            if job.gen.aborted:
                self._finish(job, "abort")
                continue
            try:
                job.session = self._free_sessions.pop() if self._free_sessions else self.engine.session()
                # a lone stream (nothing else running or waiting) is drafted when a draft is loaded
                alone = len(admitted) == 1 and not batch and not self._running and not self._pending
                job.stream, job.prompt_ids = _open_stream(self.engine, job.session, job.req, self.max_prompt_tokens,
                                                          self.draft if alone else None)
                piece = self.engine.step([job.stream])[0]  # the prefill and the first token
            except BackendError as exc:
                self._fail(job, exc)
                continue
            except Exception as exc:
                log.exception("engine failed on a new request's prompt")
                self._fail(job, BackendError("backend_error", f"engine failed on this request: {exc}"))
                continue
            self._deliver(job, piece)
        if not batch:
            return
        self._inflight = batch
        pieces = self.engine.step([job.stream for job in batch])
        self._inflight = []
        self.steps += 1
        self.batched_tokens += len(batch)
        for job, piece in zip(batch, pieces):
            self._deliver(job, piece)

    def _deliver(self, job: _BatchJob, piece: Any) -> None:
        if piece is not None:
            job.gen._put_threadsafe("piece", piece.text)
        if job.stream.done:
            self._finish(job, None)
        else:
            self._running.append(job)

    def _fail(self, job: _BatchJob, exc: BackendError) -> None:
        """End a job with an error: its stream closed, its session back in the pool, its client told."""
        if job in self._running:
            self._running.remove(job)
        if job.stream is not None:
            try:
                job.stream.close()
            except Exception:
                log.exception("engine stream failed to close")
        self._release(job)
        if not job.gen.finished:
            job.gen.finished = True
            job.gen._put_threadsafe("error", exc)

    def _release(self, job: _BatchJob) -> None:
        if job.session is not None:
            if len(self._free_sessions) < self.max_batch:  # keep at most one batch of KV caches idle
                self._free_sessions.append(job.session)
            job.session = None

    def _finish(self, job: _BatchJob, reason: str | None) -> None:
        if job.gen.finished:
            self._release(job)
            return
        if job.stream is not None:
            job.stream.close()
        stats = self._final_stats(dict(job.stream.stats) if job.stream is not None else {}, job.prompt_ids, reason)
        self._release(job)
        job.gen.finished = True
        job.gen._put_threadsafe("done", stats)


class EngineBackend(Backend):
    """The embedded C engine (pocketgpt.engine.Engine) or anything with the same API.

    An engine with batched decode (`step`) gets the BatchScheduler; one without (the PyTorch
    reference) the round-robin TokenScheduler with `workers` threads.
    """

    name = "engine"

    def __init__(self, engine: Engine | TorchEngine, model_id: str, workers: int = 2,
                 max_prompt_tokens: int | None = None, max_batch: int = 32, draft: Draft | None = None) -> None:
        self.engine = engine
        self.model_id = model_id
        self.n_vocab = int(engine.n_vocab)
        self.batched = hasattr(engine, "step")
        self.draft = draft
        self.scheduler: Any = (BatchScheduler(cast("Engine", engine), max_batch, max_prompt_tokens, draft=draft)
                               if self.batched else TokenScheduler(engine, workers, max_prompt_tokens))

    async def start(self, req: GenRequest) -> Generation:
        gen = Generation(asyncio.get_running_loop())
        gen._on_abort.append(self.scheduler._wake)
        self.scheduler.submit(_BatchJob(gen, req) if self.batched else _Job(gen, req))
        return gen

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"backend": self.name, "model": self.model_id, "n_ctx": int(self.engine.n_ctx)}
        if self.batched:
            info["max_batch"] = self.scheduler.max_batch
            if self.draft is not None:
                info["draft"] = self.draft.engine.path
        else:
            info["workers"] = len(self.scheduler._threads)
        return info

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.scheduler.close)


def load_engine(path: str, threads: int | None, reference: bool = False, kv: str = "f16") -> Engine | TorchEngine:
    """The C engine for a model file (`kv`: each session's KV cache type, f32/f16/q8_0);
    `reference=True` picks the PyTorch reference engine."""
    if reference:
        from pocketgpt.relay.torch_engine import TorchEngine

        return TorchEngine(path)
    try:
        from pocketgpt.engine import Engine
    except ImportError as exc:
        from pocketgpt.errors import PocketError

        raise PocketError(f"the C engine is not built in this install ({exc}); rebuild with "
                          "'pip install -e .', or use --backend torch (needs the toolchain extra) "
                          "or --backend openai --url URL") from None
    return Engine(path, threads=threads, kv=kv)


# ---- OpenAI-compatible server ----------------------------------------------------------------

class OpenAIBackend(Backend):
    """Forward generation to an OpenAI-compatible /v1/completions (llama.cpp server, vLLM, Ollama).

    Streams with server-sent events; a refused connection, a non-200 answer or a broken stream
    becomes a BackendError the server reports to the device as an error message.
    """

    name = "openai"

    def __init__(self, url: str, model_id: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base = url.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        self.model_id = model_id
        self.api_key = api_key
        self.timeout = timeout
        self._session: Any = None

    def _client(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                                                                sock_read=self.timeout))
        return self._session


    async def start(self, req: GenRequest) -> Generation:
        gen = Generation(asyncio.get_running_loop())
        task = asyncio.create_task(self._pump(gen, req))
        gen._on_abort.append(task.cancel)
        return gen

    async def _pump(self, gen: Generation, req: GenRequest) -> None:
        import aiohttp

        prompt, stop = req.prompt, list(req.stop)
        if req.chat:  # the remote model's own template is unknown here: ours, as for a file without one
            from pocketgpt import chat_format

            prompt = chat_format.render(req.chat_messages())
            stop += [s for s in chat_format.STOP_STRINGS if s not in stop]
        body: dict[str, Any] = {"model": self.model_id, "prompt": prompt, "max_tokens": req.max_tokens,
                                "temperature": 0.0 if req.greedy else req.temperature, "top_p": req.top_p,
                                "stream": True, "stream_options": {"include_usage": True}}
        if req.seed is not None:
            body["seed"] = req.seed
        if stop:
            body["stop"] = stop
        if req.top_k:
            body["top_k"] = req.top_k  # llama.cpp, vLLM and our relay honour it; others ignore it
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        stats = GenStats()
        pieces = 0
        try:
            async with self._client().post(f"{self.base}/completions", json=body, headers=headers) as resp:
                if resp.status != 200:
                    detail = (await resp.text())[:200]
                    raise BackendError("backend_error", f"OpenAI backend {self.base} answered HTTP {resp.status}: {detail}")
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    texts, finish, usage = _parse_chunk(data, self.base)
                    if usage:
                        stats.prompt_tokens, stats.tokens = usage
                    for text in texts:
                        pieces += 1
                        gen._queue.put_nowait(("piece", text))
                    if finish:
                        stats.finish_reason = "length" if finish == "length" else "stop"
            if not stats.tokens:
                stats.tokens = pieces
            gen.finished = True
            gen._queue.put_nowait(("done", stats))
        except asyncio.CancelledError:
            stats.finish_reason = "abort"
            stats.tokens = stats.tokens or pieces
            gen.finished = True
            gen._queue.put_nowait(("done", stats))
        except BackendError as exc:
            gen._queue.put_nowait(("error", exc))
        except (aiohttp.ClientConnectorError, ConnectionError, OSError) as exc:
            gen._queue.put_nowait(("error", BackendError(
                "backend_unavailable", f"OpenAI backend {self.base} is unreachable ({exc.__class__.__name__})", 503)))
        except (aiohttp.ClientError, ValueError, asyncio.TimeoutError) as exc:
            gen._queue.put_nowait(("error", BackendError(
                "backend_error", f"OpenAI backend {self.base} failed mid-stream ({exc.__class__.__name__}: {exc})")))
        except Exception as exc:  # whatever else goes wrong ends this request, never leaves it hanging
            log.exception("OpenAI backend stream failed")
            gen._queue.put_nowait(("error", BackendError(
                "backend_error", f"OpenAI backend {self.base} failed ({exc.__class__.__name__})")))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _parse_chunk(data: str, base: str) -> tuple[list[str], str | None, tuple[int, int] | None]:
    """One server-sent event of an OpenAI completions stream -> (texts, finish reason, usage as
    (prompt_tokens, completion_tokens)). Anything not of that shape is a BackendError: a backend
    sending garbage fails the request, it never hangs it."""
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        raise BackendError("backend_error", f"OpenAI backend {base} sent a chunk that is not JSON") from None
    if not isinstance(chunk, dict):
        raise BackendError("backend_error", f"OpenAI backend {base} sent a chunk that is not a JSON object")
    if "error" in chunk:
        raise BackendError("backend_error", f"OpenAI backend error: {str(chunk['error'])[:200]}")
    usage = chunk.get("usage")
    counts = None
    if usage:
        prompt, completion = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)) \
            if isinstance(usage, dict) else (None, None)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (prompt, completion)):
            raise BackendError("backend_error", f"OpenAI backend {base} sent a malformed usage object")
        counts = (int(prompt or 0), int(completion or 0))  # both checked to be ints >= 0 above
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise BackendError("backend_error", f"OpenAI backend {base} sent choices that are not a list")
    texts: list[str] = []
    finish = None
    for choice in choices:
        text = choice.get("text", "") if isinstance(choice, dict) else None
        if text is None and isinstance(choice, dict):
            text = ""
        if not isinstance(text, str):
            raise BackendError("backend_error", f"OpenAI backend {base} sent a malformed choice")
        texts.append(text)
        if choice.get("finish_reason"):
            finish = str(choice["finish_reason"])
    return texts, finish, counts
