"""Shared pieces of the relay tests: a tiny real GPT-2 file, the engine, a relay on free ports.

Not a test module itself (it holds no tests); the relay test files import from it. Every
server here binds 127.0.0.1 port 0 and is shut down by its fixture.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest


def build_tiny_gguf(path: Path) -> Path:
    """GPT-2 with the real 50,257-token vocabulary and context but n_embd 64, 2 layers (fixed seed).

    The full 1024-token context lets a test keep a generation running long enough to abort it
    or to SIGTERM the relay in the middle of it, even on the fast C engine.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pocketgpt import hf
    from pocketgpt.gguf_io import store_tensors, write_gguf
    from pocketgpt.quant.formats import F32
    from pocketgpt.tokenizer import gpt2_vocab

    torch.manual_seed(1234)
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=64, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(cfg).eval()
    mcfg, tensors, _ = hf.hf_to_tensors(model)
    write_gguf(path, mcfg, gpt2_vocab(), store_tensors(tensors, lambda n, a: F32), name="relay-test-tiny")
    return path


TINY_NAME = "relay-tiny-v1.gguf"  # bump when build_tiny_gguf changes


@pytest.fixture(scope="session")
def tiny_gguf(pytestconfig: pytest.Config) -> Path:
    """Built once and kept in pytest's cache folder: later runs skip importing torch entirely.

    A cached file the engine cannot load (the format changed since) is rebuilt by `engine`.
    """
    path = Path(pytestconfig.cache.mkdir("pocketgpt-relay")) / TINY_NAME
    magic = b""
    if path.exists():
        with path.open("rb") as f:
            magic = f.read(4)
    if magic != b"GGUF":
        build_tiny_gguf(path)  # written atomically: an interrupted run never leaves half a file
    return path


def engine_kind() -> str:
    """'engine' when the C engine is built, else 'torch' (the PyTorch engine with the same API).

    POCKETGPT_RELAY_TEST_ENGINE=torch forces the reference engine (to test the relay against both).
    """
    if os.environ.get("POCKETGPT_RELAY_TEST_ENGINE") == "torch":
        return "torch"
    try:
        from pocketgpt.engine import Engine  # noqa: F401
        return "engine"
    except ImportError:
        return "torch"


@pytest.fixture(scope="session")
def engine(tiny_gguf: Path) -> Any:
    from pocketgpt.errors import PocketError
    from pocketgpt.relay.backends import load_engine

    try:
        return load_engine(str(tiny_gguf), threads=1, reference=engine_kind() == "torch")
    except PocketError:  # a cached file from an older format: build it again
        build_tiny_gguf(tiny_gguf)
        return load_engine(str(tiny_gguf), threads=1, reference=engine_kind() == "torch")


class RelayThread:
    """A real Relay (both listeners) on its own event loop in a background thread."""

    def __init__(self, backend: Any, **cfg: Any) -> None:
        from pocketgpt.relay.server import Relay, RelayConfig

        cfg.setdefault("port", 0)
        cfg.setdefault("http_port", 0)
        cfg.setdefault("host", "127.0.0.1")
        self.relay = Relay(RelayConfig(**cfg), backend)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        self._ready.wait(60)
        if self._error:
            raise self._error

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.relay.start())
        except BaseException as exc:  # surfaced in the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_until_complete(self.relay.wait_stopped())
        # let finished handlers run their last callbacks before the loop goes
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.relay.ws_port}/xiaozhi/v1/"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.relay.http_port}"

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the relay's loop and wait for it (for drain and state checks)."""
        async def wrap() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(30)

    def stop(self) -> None:
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.relay.drain(), self.loop).result(60)
            self.thread.join(30)


def token_env(home: Path) -> dict[str, str]:
    return {**os.environ, "POCKETGPT_HOME": str(home)}
