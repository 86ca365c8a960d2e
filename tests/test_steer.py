"""Subject-steered chat replies with the shipped models: the relay's chat turns and `pocketgpt chat`
name what the request asks about; --no-steer, `steer: false` and raw continuation do not steer.

The shipped models alone rarely name the subject (docs/chat.md: 0 % and 2.5 % of held-out
requests); the C engine's pg_topic_steer makes the reply name it. Requests here are made from the
training phrasings (chatdata.TRAIN), never the held-out evaluation ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pocketgpt import chat_format
from pocketgpt.chatdata import on_topic
from pocketgpt.relay.auth import TokenStore
from pocketgpt.relay.backends import EngineBackend, load_engine
from pocketgpt.relay.client import RelayClient
from support import RelayThread, chat_reference, pocketgpt

DEV = "aa:bb:cc:00:00:07"
REQUESTS = ["What do you think about money?", "Tell me a joke about cats.", "Give me some advice about love.",
            "Any thoughts on computers?", "Say something funny about coffee."]


@pytest.fixture(scope="module")
def device_engine() -> Any:
    from pocketgpt.models import resolve

    return load_engine(str(resolve("builtin:device")), threads=1)


@pytest.fixture(scope="module")
def relay(device_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("steer-home")
    token = TokenStore(home).add(DEV)
    rt = RelayThread(EngineBackend(device_engine, "device", workers=1), home=home, rate_per_minute=6000,
                     rate_burst=1000)
    yield rt, token
    rt.stop()


def _generate(relay: Any, prompt: str, **params: Any) -> Any:
    rt, token = relay

    async def go() -> Any:
        async with RelayClient(rt.ws_url, token=token, device_id=DEV) as c:
            return await c.generate(prompt, **params)

    return asyncio.run(asyncio.wait_for(go(), 120))


def test_relay_chat_replies_name_the_requests_subject(relay: Any) -> None:
    for i, req in enumerate(REQUESTS):
        subject = chat_format.subject_of(req)
        r = _generate(relay, req, max_tokens=48, seed=100 + i)
        assert r.error is None and len(r.text.split()) >= 3, r
        assert on_topic(r.text, subject), (req, r.text)


def test_steer_false_and_raw_are_the_models_own_reply(relay: Any, device_engine: Any) -> None:
    req = "What do you think about money?"
    messages = chat_format.user_turn(req)
    plain, _ = chat_reference(device_engine, messages, 32, steer=False)
    steered, _ = chat_reference(device_engine, messages, 32)
    assert plain != steered and on_topic(steered, "money")
    assert _generate(relay, req, max_tokens=32, greedy=True).text == steered
    assert _generate(relay, req, max_tokens=32, greedy=True, steer=False).text == plain
    raw = "".join(p.text for p in device_engine.session().generate(device_engine.tokenize(req), max_tokens=16,
                                                                  greedy=True))
    assert _generate(relay, req, max_tokens=16, greedy=True, raw=True).text == raw
    bad = _generate(relay, req, steer="no")
    assert bad.error is not None and "'steer' must be true or false" in bad.error["message"]


def test_small_talk_is_not_steered(device_engine: Any) -> None:
    from pocketgpt.generate import stream_reply

    for req in ("Who are you?", "hello"):
        assert chat_format.subject_of(req) is None
        steered = "".join(stream_reply(device_engine, req, 24, greedy=True))
        plain = "".join(stream_reply(device_engine, req, 24, greedy=True, steer=False))
        assert steered == plain


def test_pocketgpt_chat_steers_the_host_model_unless_no_steer() -> None:
    from pocketgpt.generate import open_engine, stream_reply

    lines = REQUESTS[:3]
    res = pocketgpt("chat", "builtin:host", "-n", "48", "--seed", "5", "--threads", "1",
                    input="\n".join(lines) + "\n")
    assert res.returncode == 0, res.stderr
    replies = [l[len("bot> "):] for l in res.stdout.splitlines() if l.startswith("bot> ")]
    assert len(replies) == len(lines)
    for req, reply in zip(lines, replies):
        assert on_topic(reply, chat_format.subject_of(req)), (req, reply)
    off = pocketgpt("chat", "builtin:host", "-n", "24", "--greedy", "--no-steer", "--threads", "1",
                    input=lines[0] + "\n")
    assert off.returncode == 0, off.stderr
    eng = open_engine("builtin:host", threads=1)
    want = "".join(stream_reply(eng, lines[0], 24, greedy=True, steer=False)).replace("\n", "\n")
    got = off.stdout.split("bot> ", 1)[1]
    assert got.rstrip("\n") == want


def test_speculative_decoding_waits_for_steering_and_keeps_greedy_text() -> None:
    """A draft's verification pass would skip the steering: speculation starts once the subject is said."""
    from pocketgpt.engine import Engine
    from pocketgpt.speculative import Draft

    host = Engine("builtin:host", threads=1)
    draft = Draft(host, "builtin:device", k=4)
    for req in REQUESTS[:3]:
        ids = chat_format.prompt_ids(host, chat_format.user_turn(req))
        kw = dict(max_tokens=48, greedy=True, stop=chat_format.STOP_STRINGS, need_word=chat_format.MIN_WORDS,
                  subject=chat_format.subject_of(req))
        plain = [p.token for p in host.session().generate(ids, **kw)]
        sess = host.session()
        stream = sess.stream(ids, draft=draft, **kw)
        spec = [p.token for p in sess._run(stream)]
        assert spec == plain, req
        assert on_topic(host.detokenize(spec), chat_format.subject_of(req))


def test_the_device_console_steers_its_local_answers(tmp_path: Path) -> None:
    """The firmware's own chat turn (firmware/app/pg_app.c, run as the simulator) with the shipped device model."""
    import os
    import re
    import subprocess
    import sys

    from pocketgpt.models import resolve

    env = {**os.environ, "POCKETGPT_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "pocketgpt", "device", "--model", str(resolve("builtin:device")), "--settings",
           str(tmp_path / "dev.conf"), "--set", "gen.seed=3", "--set", "gen.max_tokens=48"]
    script = "".join(f"/local {r}\n" for r in REQUESTS)
    out = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    replies = re.findall(r"\[local\] (.*?)\n\(local: ", out.stdout, flags=re.S)
    assert len(replies) == len(REQUESTS), out.stdout
    for req, reply in zip(REQUESTS, replies):
        assert on_topic(reply, chat_format.subject_of(req)), (req, reply)
