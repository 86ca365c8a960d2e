"""Where the relay's text comes from: the embedded engine, or any OpenAI-compatible server.

Every backend turns a `GenRequest` into a `Generation` (generation.py, re-exported here): an
async iterator of text pieces with an `abort()` and, once it ends, `stats` (prompt_tokens,
tokens, finish_reason). The server never knows which backend it talks to.

`EngineBackend` keeps inference off the event loop: with the C engine every live generation
advances one token per step in one batched decode (`BatchScheduler`); an engine without batched
decode (the PyTorch reference) is stepped round robin by worker threads (`TokenScheduler`); both
in scheduler.py. `OpenAIBackend` streams from a remote /v1/completions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

from pocketgpt.relay.generation import Backend, BackendError, Generation, GenRequest, GenStats
from pocketgpt.relay.scheduler import BatchScheduler, TokenScheduler, _BatchJob, _Job

__all__ = ["Backend", "BackendError", "BatchScheduler", "EngineBackend", "GenRequest", "GenStats", "Generation",
           "OpenAIBackend", "TokenScheduler", "load_engine"]

log = logging.getLogger("pocketgpt.relay")


class EngineBackend(Backend):
    """The embedded C engine (pocketgpt.engine.Engine) or anything with the same API.

    An engine with batched decode (`step`) gets the BatchScheduler; one without (the PyTorch
    reference) the round-robin TokenScheduler with `workers` threads.
    """

    name = "engine"

    def __init__(self, engine: Any, model_id: str, workers: int = 2, max_prompt_tokens: int | None = None,
                 max_batch: int = 32, draft: Any = None, steer: bool = True) -> None:
        self.engine = engine
        self.steer = steer  # False (serve --no-steer): no chat reply is subject-steered
        self.model_id = model_id
        self.n_vocab = int(engine.n_vocab)
        self.batched = hasattr(engine, "step")
        self.draft = draft
        self.scheduler: Any = (BatchScheduler(engine, max_batch, max_prompt_tokens, draft=draft) if self.batched
                               else TokenScheduler(engine, workers, max_prompt_tokens))

    async def start(self, req: GenRequest) -> Generation:
        gen = Generation(asyncio.get_running_loop())
        gen._on_abort.append(self.scheduler._wake)
        if not self.steer:
            req = dataclasses.replace(req, steer=False)
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


def load_engine(path: str, threads: int | None, reference: bool = False, kv: str = "f16") -> Any:
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
