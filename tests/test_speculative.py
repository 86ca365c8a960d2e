"""Speculative decoding (pocketgpt.speculative) on the shipped models: builtin:device drafts for
builtin:host. Greedy output must be plain greedy's, token for token; sampled output must keep the
target's distribution (checked against the exact joint distribution of three tokens)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pocketgpt.engine import Engine
from pocketgpt.errors import PocketError
from pocketgpt.speculative import Draft

PROMPTS = ["The meaning of life is", "A man walks into a bar and", "Q: What is love?\nA:", "Never"]


@pytest.fixture(scope="module")
def host() -> Engine:
    return Engine("builtin:host", threads=1)


@pytest.fixture(scope="module")
def draft(host: Engine) -> Draft:
    return Draft(host, "builtin:device", k=4)


def _tokens(eng: Engine, prompt: str, draft: Draft | None = None, **kw) -> tuple[list[int], dict]:
    sess = eng.session()
    stream = sess.stream(prompt, draft=draft, **kw)
    toks = [p.token for p in sess._run(stream)]
    return toks, stream.stats


@pytest.mark.parametrize("k", [1, 4, 7])
def test_greedy_equals_plain_greedy(host: Engine, k: int) -> None:
    d = Draft(host, "builtin:device", k=k)
    proposed = accepted = 0
    for prompt in PROMPTS:
        for penalty in (1.0, 1.1):
            kw = dict(max_tokens=60, greedy=True, repeat_penalty=penalty, stop_at_eos=False)
            plain, _ = _tokens(host, prompt, **kw)
            spec, stats = _tokens(host, prompt, d, **kw)
            assert spec == plain, (prompt, penalty)
            proposed += stats["draft_proposed"]
            accepted += stats["draft_accepted"]
    assert 0 < accepted < proposed  # both the accept and the reject paths ran


def test_greedy_with_a_perfect_draft_accepts_everything(host: Engine) -> None:
    d = Draft(host, Engine("builtin:host", threads=1), k=5)
    kw = dict(max_tokens=40, greedy=True, repeat_penalty=1.0, stop_at_eos=False)
    plain, _ = _tokens(host, PROMPTS[0], **kw)
    spec, stats = _tokens(host, PROMPTS[0], d, **kw)
    assert spec == plain
    assert stats["draft_accepted"] == stats["draft_proposed"] > 0


def test_stops_and_length_as_plain(host: Engine, draft: Draft) -> None:
    for kw in (dict(max_tokens=7), dict(max_tokens=50, stop=["e"]), dict(max_tokens=80)):
        kw.update(greedy=True)
        sess = host.session()
        plain = "".join(p.text for p in sess.generate(PROMPTS[1], **kw))
        reason = sess.last_stats["finish_reason"]
        spec = "".join(p.text for p in sess.generate(PROMPTS[1], draft=draft, **kw))
        assert (spec, sess.last_stats["finish_reason"]) == (plain, reason)


def _exact_joint(eng: Engine, prompt: list[int], n: int, params: dict) -> dict[tuple[int, ...], float]:
    """P(t1..tn) of the target's sampler, from its dist() at every prefix."""
    s = eng.session()._s
    out: dict[tuple[int, ...], float] = {}

    def walk(prefix: list[int], prob: float) -> None:
        if len(prefix) == n:
            out[tuple(prefix)] = prob
            return
        s.reset()
        s.eval(prompt + prefix)
        cand, w, total = s.dist(s.last_logits(), prompt + prefix, **params)
        for c, x in zip(np.frombuffer(cand, dtype=np.int32), np.frombuffer(w, dtype=np.float32)):
            walk(prefix + [int(c)], prob * float(x) / total)

    walk([], 1.0)
    return out


def test_sampling_keeps_the_target_distribution(host: Engine) -> None:
    """Chi-square of 900 seeded speculative runs (first token plain, then one draft round of one
    proposal: accepted + the target's next token, or rejected + the residual draw) against the
    exact joint distribution of three tokens under temperature, top-k and a repetition penalty."""
    params = dict(temperature=1.0, top_k=3, top_p=1.0, repeat_penalty=1.3, repeat_last_n=64, greedy=False)
    prompt = host.tokenize("He said")
    exact = _exact_joint(host, prompt, 3, params)
    d = Draft(host, "builtin:device", k=1)
    counts: dict[tuple[int, ...], int] = {}
    n_runs, proposed, accepted = 900, 0, 0
    sess = host.session()
    for seed in range(n_runs):
        stream = sess.stream(prompt, max_tokens=3, seed=seed, stop_at_eos=False, draft=d, **params)
        toks = tuple(p.token for p in sess._run(stream))
        counts[toks] = counts.get(toks, 0) + 1
        proposed += stream.stats["draft_proposed"]
        accepted += stream.stats["draft_accepted"]
    assert set(counts) <= set(exact)
    assert 0.1 * proposed < accepted < 0.9 * proposed  # both paths ran often
    # cells with an expected count under 5 are pooled into one
    chi2, dof, pooled_e, pooled_o = 0.0, -1, 0.0, 0
    for key, p in exact.items():
        e, o = p * n_runs, counts.get(key, 0)
        if e < 5:
            pooled_e, pooled_o = pooled_e + e, pooled_o + o
            continue
        chi2 += (o - e) ** 2 / e
        dof += 1
    if pooled_e > 0:
        chi2 += (pooled_o - pooled_e) ** 2 / pooled_e
        dof += 1
    assert dof >= 4
    # p = 0.001 critical value, Wilson-Hilferty approximation
    crit = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < crit, (chi2, dof, crit)


def test_bad_drafts_are_refused(host: Engine) -> None:
    with pytest.raises(PocketError, match="another Engine"):
        Draft(host, host)
    with pytest.raises(PocketError, match=">= 1"):
        Draft(host, "builtin:device", k=0)
    other = Engine("builtin:host", threads=1)
    with pytest.raises(PocketError, match="another Engine"):
        host.session().stream("x", draft=Draft(other, "builtin:device"))


@pytest.mark.relay
def test_relay_single_stream_uses_the_draft_with_the_same_greedy_text(host: Engine, draft: Draft) -> None:
    import asyncio

    from pocketgpt.relay.backends import EngineBackend, GenRequest
    from pocketgpt.relay.client import RelayClient
    from support import RelayThread

    d = GenRequest(prompt=PROMPTS[0])
    want = "".join(p.text for p in host.session().generate(
        host.tokenize(PROMPTS[0]), max_tokens=40, temperature=d.temperature, top_k=d.top_k, top_p=d.top_p,
        repeat_penalty=d.repeat_penalty, greedy=True))
    before = draft.proposed
    backend = EngineBackend(host, "host", draft=draft)
    assert backend.describe()["draft"] == draft.engine.path
    rt = RelayThread(backend, open=True)
    try:
        async def go() -> None:
            async with RelayClient(rt.ws_url, device_id="aa:bb:cc:00:00:19") as c:
                r = await c.generate(PROMPTS[0], max_tokens=40, greedy=True, raw=True)  # a continuation, as above
                assert r.error is None and r.text == want

        asyncio.run(asyncio.wait_for(go(), 60))
    finally:
        rt.stop()
    assert draft.proposed > before  # the relay's lone stream was drafted


def test_cli_run_draft_option(tmp_path) -> None:
    import json
    import subprocess
    import sys

    def run(*extra: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "pocketgpt", "run", "builtin:host", "-p", "Life is", "-n", "30",
                               "--greedy", "--json", *extra], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    plain, drafted = run("--draft", "none"), run("--draft", "builtin:device", "--draft-tokens", "2")
    assert drafted["tokens"] == plain["tokens"] and "draft_proposed" in drafted and "draft_proposed" not in plain
    proc = subprocess.run([sys.executable, "-m", "pocketgpt", "run", "builtin:host", "-p", "x", "--draft",
                           str(tmp_path / "missing.gguf")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "missing.gguf" in proc.stderr and "Traceback" not in proc.stderr
