"""What the test files share, other than fixtures (those are in conftest.py).

Plain functions and classes, imported by name (`from support import pocketgpt`):

- the real `pocketgpt` command line in a subprocess, and the one-line-error check;
- tiny GPT-2 models made on the spot (no downloads): transformers builds a GPT2LMHeadModel from a
  fixed torch seed, written to a GGUF with the code path `pocketgpt convert` uses;
- `built_once`: a file made once per source state and kept in pytest's cache, under a file lock, so
  that parallel test workers (pytest-xdist) never build it twice or read half of it;
- a real relay on free ports in a background thread, the engine's own greedy text to compare
  relay answers with, and `run` for a test's coroutine (with a time limit, so a hang fails);
- optional system packages (libopus) turned into skips that name what to install.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------
# The command line, as a user runs it


def pocketgpt(*args: str, input: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m pocketgpt ARGS` in a subprocess (offline), its output captured as text."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pocketgpt", *args], input=input, capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def pocketgpt_json(*args: str, **kw: Any) -> dict:
    """`pocketgpt ARGS --json`, which must succeed; its last stdout line, parsed."""
    res = pocketgpt(*args, "--json", **kw)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: non-zero exit, no traceback, one line on stderr that says what failed."""
    assert res.returncode != 0, res.stdout
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


def token_env(home: Path) -> dict[str, str]:
    """This process's environment with POCKETGPT_HOME (the relay's token store) set to `home`."""
    return {**os.environ, "POCKETGPT_HOME": str(home)}


# ---------------------------------------------------------------------------------------------
# Files built once for the whole run (and for later runs), safe under parallel workers


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) across processes: pytest-xdist's workers
    share pytest's cache folder, and only one of them may build a file there at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def built_once(path: Path, build: Callable[[Path], Any], usable: Callable[[Path], bool] = Path.exists) -> Path:
    """`path`, after `build(path)` if it is not `usable` yet: the first worker builds it under a lock,
    the others wait and use its file. `build` must write atomically (temporary file, then rename)."""
    if usable(path):
        return path
    with file_lock(path.with_name(path.name + ".lock")):
        if not usable(path):
            build(path)
    return path


def is_gguf(path: Path) -> bool:
    """Whether `path` starts with the GGUF magic (a cached model from an interrupted run does not)."""
    try:
        with path.open("rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Tiny GPT-2 models


def make_hf_model(n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_ctx: int = 128, seed: int = 0,
                  vocab: Any = None, n_ff: int | None = None) -> tuple[Any, Any]:
    """(GPT2LMHeadModel in eval mode, BPEVocab); random weights scaled so generations vary."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pocketgpt.tokenizer import gpt2_vocab

    vocab = vocab or gpt2_vocab()
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab.n_vocab, n_positions=n_ctx, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                     n_inner=n_ff, activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, bos_token_id=vocab.bos_id, eos_token_id=vocab.eos_id, tie_word_embeddings=True)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # wider weights than the default init: peaked, input-dependent logits
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.25 if "wte" in name or "wpe" in name else 0.08)
            elif "bias" in name:
                p.normal_(0.0, 0.02)
            else:
                p.normal_(1.0, 0.1)
    model.eval()
    return model, vocab


def write_model(path: Path, model: Any, vocab: Any, choose: Callable[[str, np.ndarray], int] | None = None) -> Path:
    """The model as a GGUF at `path` (written atomically), each matrix in the type `choose` picks."""
    from pocketgpt import hf
    from pocketgpt.gguf_io import store_tensors, write_gguf
    from pocketgpt.quant.formats import F32

    cfg, tensors, _ = hf.hf_to_tensors(model)
    stored = store_tensors(tensors, choose or (lambda n, a: F32))
    write_gguf(path, cfg, vocab, stored, name="engine-test")
    return path


def float_gpt2_gguf(path: Path, n_embd: int, n_layer: int = 1, n_ctx: int = 64) -> Path:
    """A small real GPT-2 shape (random weights, the full GPT-2 vocabulary) as a float GGUF."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pocketgpt import hf
    from pocketgpt.gguf_io import store_tensors, write_gguf
    from pocketgpt.quant import formats
    from pocketgpt.tokenizer import gpt2_vocab

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=n_ctx, n_embd=n_embd, n_layer=n_layer,
                                       n_head=4, activation_function="gelu_new"))
    cfg, tensors, _ = hf.hf_to_tensors(model)
    write_gguf(path, cfg, gpt2_vocab(), store_tensors(tensors, lambda n, a: formats.F32))
    return path


def torch_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    """Greedy continuation with transformers (no repetition penalty), n new tokens."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             num_beams=1, repetition_penalty=1.0, pad_token_id=0,
                             eos_token_id=None)
    return out[0, len(ids):].tolist()


def small_vocab(n_merges: int = 300) -> Any:
    """A trimmed GPT-2 vocabulary: 256 byte tokens, the first merges, <|endoftext|> (~560 tokens)."""
    from pocketgpt.tokenizer import BPEVocab, gpt2_vocab

    full = gpt2_vocab()
    merges = full.merges[:n_merges]
    keep = set(full.tokens[:256])
    for m in merges:
        a, b = m.split(" ")
        keep.add(a + b)
    tokens = [t for t in full.tokens if t in keep] + ["<|endoftext|>"]
    return BPEVocab(tokens=tokens, merges=merges, eos_id=len(tokens) - 1, bos_id=len(tokens) - 1)


def quant_subject(d: Path) -> str:
    """The quantizer tests' subject: d/float.gguf (1 layer, n_embd 256 so K-quant blocks divide the
    rows, a 300-merge vocabulary) and text to calibrate and score on: Debian's fortunes when
    installed, else a repeated pangram (at least 20,000 characters either way)."""
    from pocketgpt.quant import formats as F

    model, vocab = make_hf_model(n_embd=256, n_layer=1, n_ctx=128, vocab=small_vocab(300))
    write_model(d / "float.gguf", model, vocab, lambda n, a: F.F32)
    fortunes = Path("/usr/share/games/fortunes/fortunes")
    text = fortunes.read_text(encoding="utf-8", errors="replace") if fortunes.exists() else ""
    if len(text) < 20000:
        text = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs. " * 400
    return text


def build_tiny_gguf(path: Path) -> Path:
    """The relay tests' model: GPT-2 with the real 50,257-token vocabulary and context but n_embd 64,
    2 layers (fixed seed). The full 1024-token context lets a test keep a generation running long
    enough to abort it or to SIGTERM the relay in the middle of it, even on the fast C engine."""
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


def build_device_gguf(path: Path) -> Path:
    """A device-sized model: trimmed ~560-token vocabulary, 128-token context."""
    model, vocab = make_hf_model(n_embd=64, n_layer=2, n_head=4, n_ctx=128, seed=7, vocab=small_vocab())
    return write_model(path, model, vocab)


DEVICE_NAME = "device-tiny-v1.gguf"  # bump when build_device_gguf changes
DEVICE_ID = "02:00:00:00:00:2a"  # the simulated device the firmware tests register on their relay


# ---------------------------------------------------------------------------------------------
# The relay


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


def run(coro: Any, timeout: float = 60) -> Any:
    """Run a test's coroutine to its end on a new event loop; past `timeout` seconds it fails."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class RelayThread:
    """A real Relay (both listeners) on its own event loop in a background thread, on 127.0.0.1
    free ports unless told otherwise; `stop()` drains and shuts it down."""

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


async def serve_completions(handler: Any) -> tuple[Any, str]:
    """An OpenAI-style backend on 127.0.0.1 whose POST /v1/completions is `handler` (aiohttp):
    (its runner, for cleanup(); its base URL for `--url` / OpenAIBackend)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


def reference_run(engine: Any, prompt: str, max_tokens: int) -> tuple[str, int, str]:
    """The engine's own greedy answer to `prompt` with the relay's default options:
    (text, tokens generated, finish reason)."""
    from pocketgpt.relay.backends import GenRequest

    d = GenRequest(prompt=prompt)
    sess = engine.session()
    text = "".join(p.text for p in sess.generate(engine.tokenize(prompt), max_tokens=max_tokens,
                                                 temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
                                                 repeat_penalty=d.repeat_penalty, greedy=True))
    return text, len(sess.last_stats["tokens"]), sess.last_stats["finish_reason"]


def reference(engine: Any, prompt: str, max_tokens: int) -> str:
    """The engine's own greedy text for `prompt`, with the relay's default options."""
    return reference_run(engine, prompt, max_tokens)[0]


def chat_reference(engine: Any, messages: list[dict[str, str]], max_tokens: int, steer: bool = True) -> tuple[str, int]:
    """The shown greedy reply to `messages` in the model's chat template (steered to the last user
    message's subject, as the relay does unless told not to), and the prompt's token count."""
    from pocketgpt import chat_format

    ids = chat_format.prompt_ids(engine, messages)
    sess = engine.session()
    subject = chat_format.reply_subject(messages, steer)
    pieces = [p.text for p in sess.generate(ids, max_tokens=max_tokens, greedy=True, subject=subject,
                                            stop=chat_format.STOP_STRINGS, need_word=chat_format.MIN_WORDS)]
    return chat_format.shape_reply(pieces, sess.last_stats["finish_reason"]), len(ids)


def readline_within(proc: subprocess.Popen, seconds: float) -> str:
    """The process's next stdout line, or "" if none comes in time (a hung start fails, not hangs)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        return proc.stdout.readline() if sel.select(timeout=seconds) else ""
    finally:
        sel.close()


# ---------------------------------------------------------------------------------------------
# Optional system packages, found without failing collection
#
# `pytest.importorskip("opuslib")` is not enough on a machine without Debian's libopus0: opuslib
# imports, then raises a plain Exception ("Could not find Opus library") that stops pytest at
# collection. These turn every such absence into a skip that names the package to install.

OPUS_HINT = "needs Debian's libopus0 and the voice extra (apt-get install libopus0; pip install -e '.[voice]')"


def opus_problem() -> str | None:
    """Why opuslib cannot run here (None: it can)."""
    try:
        import opuslib
        import opuslib.api  # noqa: F401  (loads libopus)
    except Exception as exc:  # ImportError, OSError, or opuslib's bare Exception for a missing libopus
        return f"{OPUS_HINT} ({exc.__class__.__name__}: {exc})"
    return None


def need_opuslib() -> Any:
    """The opuslib module, or a skip (module-level: skips the whole file) naming libopus0."""
    problem = opus_problem()
    if problem:
        pytest.skip(problem, allow_module_level=True)
    import opuslib

    return opuslib
