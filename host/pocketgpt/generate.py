"""Which runtime generates for a model spec, and a streamed reply on top of it.

GGUF files run on the C engine (`pocketgpt.engine.Engine`). A Hugging Face folder, or an install
without the compiled engine, runs on `TorchEngine`, which has the same API (sessions that yield
pieces of whole UTF-8 characters). Callers see one interface either way.
"""

from __future__ import annotations

from typing import Any, Iterator

from pocketgpt.errors import PocketError


def open_engine(spec: str, backend: str = "auto", threads: int | None = None) -> Any:
    """An Engine (or TorchEngine) for `spec`: a .gguf path, a Hugging Face folder or builtin:NAME."""
    from pocketgpt import models
    from pocketgpt.evaluate import engine_available

    path = models.resolve(spec)
    if not path.is_dir() and (backend == "engine" or (backend == "auto" and engine_available())):
        from pocketgpt.engine import Engine
        from pocketgpt.gguf_io import read_gguf

        read_gguf(path)  # one-line errors for bad files before the engine sees them
        return Engine(str(path), threads=threads)
    if backend == "engine":
        raise PocketError(f"{spec}: the engine reads GGUF files; convert the folder first")
    from pocketgpt.relay.torch_engine import TorchEngine

    return TorchEngine(str(path))


def stream_reply(engine: Any, prompt: str, max_tokens: int, stats: dict | None = None,
                 **sampling: Any) -> Iterator[str]:
    """The model's continuation of `prompt` as text pieces; a quote starts after <|endoftext|>.

    The prompt is cut from the left so prompt plus reply fit the context; `stats` (if given)
    receives the session's last_stats when the stream ends.
    """
    ids = [engine.eos_id] + list(engine.tokenize(prompt))
    ids = ids[-max(1, engine.n_ctx - max_tokens):]
    sess = engine.session()
    try:
        for piece in sess.generate(ids, max_tokens=max_tokens, stop_at_eos=True, **sampling):
            if piece.text:
                yield piece.text
    finally:
        if stats is not None:
            stats.update(sess.last_stats or {})
