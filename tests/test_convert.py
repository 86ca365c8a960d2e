"""HF checkpoint <-> GGUF: llama.cpp's names and keys, bit-exact tensors, same logits back in HF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support import make_hf_model, pocketgpt, pocketgpt_json


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    model, vocab = make_hf_model(n_embd=64, n_layer=2, n_head=4, n_ctx=64, seed=3)
    out = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(out)
    vocab.hf_tokenizer().save_pretrained(out)
    return out


@pytest.mark.slow
def test_gguf_uses_llamacpp_names_keys_and_tokenizer(hf_dir, tmp_path):
    import gguf

    out = tmp_path / "m.gguf"
    info = pocketgpt_json("convert", str(hf_dir), str(out))
    assert info["file_bytes"] == out.stat().st_size
    r = gguf.GGUFReader(str(out))
    f = lambda k: r.fields[k].contents()  # noqa: E731
    assert f("general.architecture") == "gpt2"
    assert f("gpt2.block_count") == 2 and f("gpt2.embedding_length") == 64
    assert f("gpt2.attention.head_count") == 4 and f("gpt2.context_length") == 64
    assert f("gpt2.feed_forward_length") == 256
    assert f("tokenizer.ggml.model") == "gpt2"
    tokens = f("tokenizer.ggml.tokens")
    assert len(tokens) == 50257 and tokens[15496] == "Hello" and tokens[50256] == "<|endoftext|>"
    assert f("tokenizer.ggml.merges")[0] == "Ġ t"
    assert f("tokenizer.ggml.eos_token_id") == 50256
    assert f("tokenizer.ggml.token_type")[50256] == 3
    names = {t.name for t in r.tensors}
    for want in ("token_embd.weight", "position_embd.weight", "blk.0.attn_norm.bias", "blk.1.attn_qkv.weight",
                 "blk.1.attn_output.bias", "blk.0.ffn_norm.weight", "blk.0.ffn_up.weight", "blk.1.ffn_down.bias",
                 "output_norm.weight", "output_norm.bias"):
        assert want in names
    assert "output.weight" not in names  # tied head: llama.cpp reuses token_embd
    qkv = next(t for t in r.tensors if t.name == "blk.0.attn_qkv.weight")
    assert [int(x) for x in qkv.shape] == [64, 192]  # ggml ne0 = input width


def test_hf_to_gguf_reproduces_every_tensor_bit_for_bit(hf_dir, tmp_path):
    from safetensors.numpy import load_file

    from pocketgpt.gguf_io import read_gguf, tensors_to_hf_state

    out = tmp_path / "m.gguf"
    assert pocketgpt("convert", str(hf_dir), str(out)).returncode == 0
    mf = read_gguf(out)
    state = tensors_to_hf_state(mf.f32_tensors(), mf.cfg)
    orig = load_file(str(hf_dir / "model.safetensors"))
    compared = 0
    for k, v in orig.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        assert np.array_equal(state[k], v), k
        compared += 1
    assert compared == len(mf.tensors)


@pytest.mark.slow
def test_gguf_back_to_hf_gives_the_same_logits(hf_dir, tmp_path):
    import torch
    from transformers import GPT2LMHeadModel

    gg = tmp_path / "m.gguf"
    back = tmp_path / "back"
    assert pocketgpt("convert", str(hf_dir), str(gg)).returncode == 0
    res = pocketgpt("convert", str(gg), str(back))
    assert res.returncode == 0, res.stderr
    a = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    b = GPT2LMHeadModel.from_pretrained(back).eval()
    ids = torch.tensor([[15496, 995, 11, 428, 318, 257, 1332, 13]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(back)
    assert tok("Hello world")["input_ids"] == [15496, 995]


@pytest.mark.slow
def test_q8_0_conversion_matches_ggufs_reference_decoder(hf_dir, tmp_path):
    import gguf
    from gguf.quants import dequantize

    from pocketgpt.gguf_io import read_gguf

    out = tmp_path / "q8.gguf"
    info = pocketgpt_json("convert", str(hf_dir), str(out), "--outtype", "q8_0")
    seen = pocketgpt_json("inspect", str(out))
    q8_bytes = seen["bytes_by_type"]
    f32_bytes = 4 * seen["n_params"]  # the same model in float32 (test_inspect checks n_params)
    assert info["file_bytes"] == out.stat().st_size
    # 34 bytes per 32 weights for the matrices, vectors stay F32
    assert q8_bytes["Q8_0"] + q8_bytes["F32"] < 0.3 * f32_bytes
    mf = read_gguf(out)
    for t in gguf.GGUFReader(str(out)).tensors:
        ref = dequantize(t.data, t.tensor_type).reshape(mf.tensors[t.name].shape)
        assert np.array_equal(ref, mf.f32(t.name)), t.name
    assert mf.tensors["blk.0.ffn_up.weight"].qtype == int(gguf.GGMLQuantizationType.Q8_0)
    assert mf.tensors["blk.0.ffn_up.bias"].qtype == int(gguf.GGMLQuantizationType.F32)


@pytest.mark.slow
def test_inspect_reports_the_contract_keys(hf_dir, tmp_path):
    out = tmp_path / "m.gguf"
    pocketgpt("convert", str(hf_dir), str(out), "--outtype", "f16")
    info = pocketgpt_json("inspect", str(out))
    assert info["arch"] == "gpt2" and info["n_layer"] == 2 and info["n_embd"] == 64 and info["n_head"] == 4
    assert info["n_vocab"] == 50257 and info["n_ctx"] == 64 and info["file_bytes"] == out.stat().st_size
    assert info["n_params"] == 50257 * 64 + 64 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 2 * 64
    assert set(info["bytes_by_type"]) == {"F16", "F32"}
    # a Hugging Face folder inspects the same way
    assert pocketgpt_json("inspect", str(hf_dir))["n_params"] == info["n_params"]
