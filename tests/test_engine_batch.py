"""Batched decode (Engine.decode_batch / Engine.step): several sessions, each at its own position
with its own KV cache, advanced by one token in one forward pass must give what each session
would give alone, bit for bit (so a seeded generation does not depend on who else is being
served). This is what the relay runs for concurrent clients."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from support import make_hf_model, write_model


@pytest.fixture(scope="module", params=["f32", "quant"])
def eng(request, tmp_path_factory):
    from pocketgpt.engine import Engine
    from pocketgpt.quant import formats

    model, vocab = make_hf_model(n_embd=256, n_layer=2, n_head=4, n_ctx=96, seed=31)
    if request.param == "f32":
        choose = None
    else:  # the block types the q4 preset uses, so the integer kernels are exercised too
        kinds = [formats.Q4_K, formats.Q6_K, formats.Q3_K, formats.Q5_K, formats.Q8_0]

        def choose(name, arr):
            if arr.ndim != 2:
                return formats.F32
            if name.startswith("position"):
                return formats.Q8_0
            return formats.fitting_type(kinds[sum(map(ord, name)) % len(kinds)], arr.shape[-1])

    path = write_model(tmp_path_factory.mktemp("batch") / f"{request.param}.gguf", model, vocab, choose)
    return Engine(path, threads=2)


def _prompts(eng, n):
    rng = np.random.default_rng(n)
    return [[int(t) for t in rng.integers(0, eng.n_vocab, size=1 + (7 * i) % 23)] for i in range(n)]


# 37 = two 16-row groups, then the 4- and 1-row kernels; 70 crosses the 64-row tiles of the
# K-format path
@pytest.mark.parametrize("n", [1, 3, 16, 37, 70])
def test_batch_equals_each_session_alone(eng, n):
    prompts = _prompts(eng, n)
    solo, batch = [eng.session() for _ in range(n)], [eng.session() for _ in range(n)]
    for p, a, b in zip(prompts, solo, batch):
        a._s.eval(p)
        b._s.eval(p)
    rng = np.random.default_rng(100 + n)
    for step in range(3):
        toks = [int(t) for t in rng.integers(0, eng.n_vocab, size=n)]
        got = eng.decode_batch(list(zip(batch, toks)))
        for i, (s, t) in enumerate(zip(solo, toks)):
            s._s.eval([t])
            want = np.frombuffer(s._s.last_logits(), dtype=np.float32)
            assert got[i].shape == (eng.n_vocab,)
            np.testing.assert_array_equal(got[i], want)  # each row runs the single-row kernels
            assert batch[i]._s.n_past == s._s.n_past == len(prompts[i]) + step + 1


def test_streams_stepped_together_equal_generate_and_end_mid_batch(eng):
    prompts = ["Once upon a time", "The quick brown fox jumps", "Hi", "A long, long prompt about many things " * 3]
    lengths = [12, 3, 20, 7]  # streams finish at different steps; the others carry on
    kw = dict(temperature=0.9, top_k=40, top_p=0.95, stop_at_eos=False)
    want = [[p.token for p in eng.generate(q, max_tokens=m, seed=i, **kw)] for i, (q, m) in enumerate(zip(prompts, lengths))]
    streams = [eng.session().stream(q, max_tokens=m, seed=i, **kw) for i, (q, m) in enumerate(zip(prompts, lengths))]
    got: list[list[int]] = [[] for _ in prompts]
    texts = ["" for _ in prompts]
    steps = 0
    t0 = time.perf_counter()
    while not all(s.done for s in streams):
        for i, piece in enumerate(eng.step(streams)):
            if piece is not None:
                got[i].append(piece.token)
                texts[i] += piece.text
        steps += 1
    elapsed = time.perf_counter() - t0
    assert steps == max(lengths)
    assert got == want
    assert [s.finish_reason for s in streams] == ["length"] * 4
    assert texts == [eng.detokenize(g) for g in got]
    # each stream's decode rate counts its own steps after the first token, done within the loop's time
    assert all(s.stats["decode_tok_s"] * elapsed >= len(s.generated) - 1 > 0 for s in streams if s.generated[1:])
    assert eng.step(streams) == [None] * 4


def test_stop_string_and_abort_inside_a_batch(eng):
    kw = dict(greedy=True, repeat_penalty=1.3, stop_at_eos=False)
    full = "".join(p.text for p in eng.generate("The cat", max_tokens=30, **kw))
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), full
    a = eng.session().stream("The cat", max_tokens=30, stop=[stop], **kw)
    b = eng.session().stream("The dog", max_tokens=30, **kw)
    c = eng.session().stream("The bird", max_tokens=30, **kw)
    text_a = ""
    for k in range(30):
        pieces = eng.step([a, b, c])
        text_a += pieces[0].text if pieces[0] else ""
        if k == 4:
            c.close()
    assert text_a == full[:full.index(stop)] and a.finish_reason == "stop"
    assert c.finish_reason == "abort" and len(c.generated) == 5
    assert b.finish_reason == "length" and len(b.generated) == 30


def test_bad_batches_are_refused_and_change_nothing(eng):
    from pocketgpt.engine import Engine
    from pocketgpt.errors import PocketError

    a, b = eng.session(), eng.session()
    a._s.eval([1, 2, 3])
    b._s.eval([4])
    with pytest.raises(PocketError, match="twice"):
        eng.decode_batch([(a, 5), (b, 6), (a, 7)])
    with pytest.raises(PocketError, match="vocabulary"):
        eng.decode_batch([(a, 5), (b, eng.n_vocab)])
    assert (a._s.n_past, b._s.n_past) == (3, 1)
    b._s.eval([9] * (eng.n_ctx - 1))
    with pytest.raises(PocketError, match="context full"):
        eng.decode_batch([(a, 5), (b, 6)])
    assert (a._s.n_past, b._s.n_past) == (3, eng.n_ctx)
    other = Engine(eng.path, threads=1)
    with pytest.raises(PocketError, match="another Engine"):
        eng.decode_batch([(a, 5), (other.session(), 6)])
    assert eng.decode_batch([]) == []


def test_batches_from_two_threads_at_once(eng):
    """The GIL is released and the batch workspace is shared: concurrent calls on disjoint
    sessions must each still get their own sessions' results."""
    prompts = _prompts(eng, 8)
    groups = [[eng.session() for _ in range(4)] for _ in range(2)]
    solo = [eng.session() for _ in range(8)]
    for p, s, t in zip(prompts, [s for g in groups for s in g], solo):
        s._s.eval(p)
        t._s.eval(p)
    results: list = [None, None]

    def work(g: int) -> None:
        out = []
        for step in range(5):
            out.append(eng.decode_batch([(s, 10 + step) for s in groups[g]]))
        results[g] = out

    threads = [threading.Thread(target=work, args=(g,)) for g in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for step in range(5):
        for i, s in enumerate(solo):
            s._s.eval([10 + step])
            want = np.frombuffer(s._s.last_logits(), dtype=np.float32)
            np.testing.assert_array_equal(results[i // 4][step][i % 4], want)
