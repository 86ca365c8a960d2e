"""What every relay backend implements: a `GenRequest` in, a `Generation` out.

A `Generation` is an async iterator of text pieces with an `abort()` and, once it ends, `stats`
(prompt_tokens, tokens, finish_reason). The server and the sessions only ever see this interface,
never which backend (backends.py) or scheduler (scheduler.py) produces the text.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any


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
    # a chat request's reply is subject-steered (chat_format.subject_of of the last user message:
    # the C engine's pg_topic_steer); a raw continuation never is
    steer: bool = True

    @property
    def chat(self) -> bool:
        return bool(self.messages)

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def subject(self) -> str | None:
        """What the reply is steered to name: the subject of the last user message (None: raw, steering
        off, or small talk)."""
        from pocketgpt.chat_format import reply_subject

        return reply_subject(self.chat_messages(), self.steer)


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
