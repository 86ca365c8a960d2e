"""How the engine backend runs generations off the event loop: one engine, many requests.

With the C engine one scheduler thread (`BatchScheduler`) advances every live generation by one
token per step through the engine's batched decode (`Engine.step`: each weight matrix is read
once for the whole batch, the engine's own thread pool splits the rows), so N devices cost far
less than N single decodes, no generation can starve another, and an abort is seen before the
next step. Engines without batched decode (the PyTorch reference) are stepped round robin by a
small pool of worker threads instead (`TokenScheduler`). Both hand pieces to a `Generation`
through the event loop; `backends.EngineBackend` picks one.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Generator
from typing import Any

from pocketgpt.relay.generation import BackendError, Generation, GenRequest, GenStats

log = logging.getLogger("pocketgpt.relay")


class _Job:
    __slots__ = ("gen", "req", "iterator", "session", "prompt_ids")

    def __init__(self, gen: Generation, req: GenRequest) -> None:
        self.gen = gen
        self.req = req
        self.iterator: Generator[Any, None, None] | None = None
        self.session: Any = None
        self.prompt_ids: list[int] = []


def _prompt_and_params(engine: Any, req: GenRequest, max_prompt_tokens: int | None) -> tuple[list[int], dict[str, Any]]:
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
        subject = req.subject()
        if subject:
            kw["subject"] = subject
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

    def __init__(self, engine: Any, workers: int, max_prompt_tokens: int | None = None) -> None:
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


def _open_stream(engine: Any, session: Any, req: GenRequest, max_prompt_tokens: int | None,
                 draft: Any = None) -> tuple[Any, list[int]]:
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

    def __init__(self, engine: Any, max_batch: int = 32, max_prompt_tokens: int | None = None,
                 prefill_per_step: int = 2, draft: Any = None) -> None:
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
