"""Which runtime generates for a model spec, and a streamed reply on top of it.

GGUF files run on the C engine (`pocketgpt.engine.Engine`). A Hugging Face folder, or an install
without the compiled engine, runs on `TorchEngine`, which has the same API (sessions that yield
pieces of whole UTF-8 characters). Callers see one interface either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pocketgpt.errors import PocketError

if TYPE_CHECKING:
    from pocketgpt.engine import Engine
    from pocketgpt.relay.torch_engine import TorchEngine


def open_engine(spec: str, backend: str = "auto", threads: int | None = None) -> Engine | TorchEngine:
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


def stream_reply(engine: Engine | TorchEngine, prompt: str, max_tokens: int, stats: dict | None = None,
                 raw: bool = False, steer: bool = True, **sampling: Any) -> Iterator[str]:
    """The model's reply to the request `prompt` as text pieces.

    The request goes through the model's chat template (`tokenizer.chat_template` in its file;
    chat_format.CHAT_TEMPLATE for a file without one), the reply stops at end-of-text or the next
    request line, cannot end before three words (MIN_WORDS, chat_format.count_words), is cut back to
    its last sentence end when max_tokens cuts it and three words remain, and is never empty
    (chat_format.ReplyShaper). `raw=True` continues
    `prompt` as text instead (a quote starts after <|endoftext|>), as `pocketgpt run` does.
    A chat reply is subject-steered unless `steer=False`: pushed to name what the request asks
    about (chat_format.subject_of; the C engine's pg_topic_steer). Raw continuation never is.
    The prompt is cut from the left so prompt plus reply fit the context; `stats` (if given)
    receives the session's last_stats when the stream ends.
    """
    from pocketgpt import chat_format

    if raw:
        ids = [engine.eos_id] + list(engine.tokenize(prompt))
        kw: dict[str, Any] = {}
    else:
        messages = chat_format.user_turn(prompt)
        ids = chat_format.prompt_ids(engine, messages)
        kw = {"stop": chat_format.STOP_STRINGS, "need_word": chat_format.MIN_WORDS}
        subject = chat_format.reply_subject(messages, steer)
        if subject:
            kw["subject"] = subject
    ids = ids[-max(1, engine.n_ctx - max_tokens):]
    sess = engine.session()
    shaper = None if raw else chat_format.ReplyShaper()
    try:
        for piece in sess.generate(ids, max_tokens=max_tokens, stop_at_eos=True, **kw, **sampling):
            text = piece.text if shaper is None else shaper.feed(piece.text)
            if text:
                yield text
        if shaper is not None:
            text = shaper.finish((sess.last_stats or {}).get("finish_reason", "stop"))
            if text:
                yield text
    finally:
        if stats is not None:
            stats.update(sess.last_stats or {})
