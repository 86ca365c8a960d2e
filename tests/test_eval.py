"""pocketgpt eval: the sliding window scores every token once; numbers match a direct computation."""

from __future__ import annotations

import math

import pytest

from support import make_hf_model, pocketgpt_json, write_model


@pytest.mark.parametrize("n,ctx,stride", [(10, 4, 2), (100, 32, 16), (33, 32, 16), (32, 32, 16), (7, 64, 32),
                                          (1000, 128, 64), (50, 8, 8), (50, 8, 1)])
def test_windows_score_each_position_exactly_once(n, ctx, stride):
    from pocketgpt.evaluate import windows

    seen = []
    for start, end, first in windows(n, ctx, stride):
        assert 0 <= start <= first < end <= n and end - start <= ctx
        seen.extend(range(first, end - 1))
    assert seen == list(range(n - 1))


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory):
    from pocketgpt.quant.formats import F16, F32

    model, vocab = make_hf_model(n_embd=64, n_layer=2, n_head=4, n_ctx=32, seed=5)
    d = tmp_path_factory.mktemp("eval")
    f32 = write_model(d / "f32.gguf", model, vocab)
    f16 = write_model(d / "f16.gguf", model, vocab, lambda n, a: F16 if a.ndim == 2 else F32)
    return model, f32, f16


TEXT = ("The quick brown fox jumps over the lazy dog. Naïve café owners sell crème brûlée — "
        "twice on Sundays, 3 times on holidays! ") * 3


@pytest.fixture(scope="module")
def self_scored(model_pair, tmp_path_factory) -> dict:
    """`eval F32 --ref F32 --backend torch` on TEXT: the float model scored, and against itself. Two
    tests below read it (each `pocketgpt eval` costs seconds of start-up and GGUF reading)."""
    _, f32, _ = model_pair
    txt = tmp_path_factory.mktemp("self") / "t.txt"
    txt.write_text(TEXT)
    return pocketgpt_json("eval", str(f32), "--text", str(txt), "--ref", str(f32), "--backend", "torch")


@pytest.mark.slow
def test_perplexity_and_bpb_match_a_direct_computation(model_pair, tmp_path):
    import torch

    model, f32, _ = model_pair
    txt = tmp_path / "t.txt"
    txt.write_text(TEXT)
    res = pocketgpt_json("eval", str(f32), "--text", str(txt), "--backend", "torch", "--stride", "16")
    # direct: the same windows by hand (context 32, stride 16), <|endoftext|> first
    from pocketgpt.tokenizer import gpt2_vocab

    tok = gpt2_vocab().hf_tokenizer()
    ids = [50256] + tok(TEXT)["input_ids"]
    nll, count, scored = 0.0, 0, 0
    start = 0
    while scored < len(ids) - 1:
        end = min(start + 32, len(ids))
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids[start:end]])).logits[0].double(), -1)
        for p in range(scored, end - 1):
            nll -= float(lp[p - start, ids[p + 1]])
            count += 1
        scored = end - 1
        if end == len(ids):
            break
        start += 16
    assert res["tokens"] == count == len(ids) - 1
    assert res["bytes"] == len(TEXT.encode())
    assert res["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert res["bpb"] == pytest.approx(nll / math.log(2) / len(TEXT.encode()), rel=1e-4)


@pytest.mark.slow
def test_the_engine_and_transformers_agree(model_pair, self_scored, tmp_path):
    _, f32, _ = model_pair
    txt = tmp_path / "t.txt"
    txt.write_text(TEXT)
    a = self_scored  # the torch backend's score
    b = pocketgpt_json("eval", str(f32), "--text", str(txt), "--backend", "engine")
    assert a["tokens"] == b["tokens"]
    assert b["ppl"] == pytest.approx(a["ppl"], rel=1e-3)


@pytest.mark.slow
def test_kl_against_a_reference(model_pair, self_scored, tmp_path):
    _, f32, f16 = model_pair
    txt = tmp_path / "t.txt"
    txt.write_text(TEXT)
    same = self_scored
    assert same["kl"] == pytest.approx(0.0, abs=1e-9) and same["top1"] == 1.0
    half = pocketgpt_json("eval", str(f16), "--text", str(txt), "--ref", str(f32), "--backend", "torch")
    assert 0 < half["kl"] < 1e-3 and half["top1"] > 0.9
    assert half["ref_ppl"] == pytest.approx(same["ppl"], rel=1e-6)


@pytest.mark.slow
def test_fortune_files_are_scored_quote_by_quote(model_pair, tmp_path):
    _, f32, _ = model_pair
    quotes = ["Know thyself.", "Nothing in excess.", "A pledge, and ruin is near."]
    txt = tmp_path / "fortunes"
    txt.write_text("\n%\n".join(quotes) + "\n%\n")
    res = pocketgpt_json("eval", str(f32), "--text", str(txt), "--backend", "torch")
    from pocketgpt.tokenizer import gpt2_vocab

    tok = gpt2_vocab().hf_tokenizer()
    n_tokens = sum(len(tok(q)["input_ids"]) for q in quotes) + len(quotes) - 1  # + separators
    assert res["tokens"] == n_tokens
    assert res["bytes"] == sum(len(q) for q in quotes) + len(quotes) - 1
