"""The C engine computes what PyTorch computes: greedy text identical to transformers on F32
models, logits within a stated tolerance of the dequantized model for every quantized type, the
reference and fast kernels agreeing, and block decoding bit-exact with the gguf package."""

from __future__ import annotations

import numpy as np
import pytest

from support import make_hf_model, small_vocab, torch_greedy, write_model

# Logits of the engine versus PyTorch running the same (dequantized) weights in float32: both
# compute in float32 (the engine with its exact kv="f32" cache), so only summation order differs. Stated tolerance: max abs difference over
# every position and vocabulary entry.
LOGIT_ATOL = 2e-3

SHAPES = [  # (n_embd, n_layer, n_head, n_ff): includes an n_embd that 32 does not divide
    (64, 2, 4, None),
    (48, 3, 3, 160),
    (96, 1, 6, 200),
]

PROMPT = "The meaning of life is"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"e{s[0]}l{s[1]}h{s[2]}")
def test_greedy_tokens_identical_to_transformers(tmp_path, shape):
    from pocketgpt.engine import Engine

    e, l, h, f = shape
    model, vocab = make_hf_model(n_embd=e, n_layer=l, n_head=h, n_ff=f, n_ctx=160, seed=e)
    eng = Engine(write_model(tmp_path / "m.gguf", model, vocab), threads=2, kv="f32")
    ids = eng.tokenize(PROMPT)
    want = torch_greedy(model, ids, 72)
    got = [p.token for p in eng.generate(ids, max_tokens=72, greedy=True, repeat_penalty=1.0, stop_at_eos=False)]
    assert got == want
    assert len(set(want)) >= 3  # not a single token repeated: the comparison has teeth


def test_logits_every_position_match_transformers(tmp_path):
    import torch

    from pocketgpt.engine import Engine

    model, vocab = make_hf_model(n_embd=64, n_layer=2, n_head=4, n_ctx=64, seed=3)
    eng = Engine(write_model(tmp_path / "m.gguf", model, vocab), threads=2, n_batch=7, kv="f32")  # odd batch: several chunks
    ids = eng.tokenize("Batches of seven tokens, then the rest; every position is checked here.")
    got = eng.logits(ids)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    assert got.shape == (len(ids), vocab.n_vocab)
    diff = float(np.abs(got - want).max())
    print(f"F32 logits max |engine - torch| = {diff:.2e}")
    assert diff < LOGIT_ATOL


QTYPES = ["F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
INT8_TYPES = ["Q8_0", "Q3_K", "Q4_K"]  # types whose fast kernels take int8 activations (dot_q8)
INT_PATH_TYPES = INT8_TYPES + ["Q6_K"]  # and those with only the K-format integer path (dot_q8k)


@pytest.fixture(scope="module")
def quant_base():
    # n_embd 256 so the K-quants' 256-weight super-blocks fit every matrix; a trimmed vocabulary
    model, vocab = make_hf_model(n_embd=256, n_layer=1, n_head=4, n_ff=512, n_ctx=64, seed=11, vocab=small_vocab())
    return model, vocab


def _quant_file(tmp_path, quant_base, qname):
    from pocketgpt.quant import formats

    qtype = formats.type_from_name(qname)
    model, vocab = quant_base
    return write_model(tmp_path / f"{qname}.gguf", model, vocab,
                       lambda n, a: qtype if a.ndim == 2 else formats.F32)


@pytest.mark.parametrize("qname", QTYPES)
def test_quantized_logits_match_dequantized_torch(tmp_path, quant_base, qname):
    import torch

    from pocketgpt.engine import Engine
    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.hf import torch_model

    path = _quant_file(tmp_path, quant_base, qname)
    ref = torch_model(read_gguf(path))  # the file's weights, dequantized by the Python toolchain
    eng = Engine(path, threads=2, kv="f32")
    ids = eng.tokenize(PROMPT + " and other things, said the quantized model.")
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
    for kernels in ("float", "ref"):  # float activations: the fast kernels and the reference
        got = Engine(path, threads=1, kernels=kernels, kv="f32").logits(ids)
        diff = float(np.abs(got - want).max())
        print(f"{qname} {kernels}: max |engine - torch(dequantized)| = {diff:.2e}")
        assert diff < LOGIT_ATOL


@pytest.mark.parametrize("qname", ["F32"] + QTYPES)
def test_reference_and_fast_kernels_give_the_same_greedy_text(tmp_path, quant_base, qname):
    from pocketgpt.engine import Engine

    path = _quant_file(tmp_path, quant_base, qname)
    ref = Engine(path, threads=2, force_ref=True, kv="f32")
    assert ref.kernels == "ref"
    kw = dict(max_tokens=40, greedy=True, repeat_penalty=1.0, stop_at_eos=False)
    want = "".join(p.text for p in ref.generate(PROMPT, **kw))
    # the integer-activation path has its own portable definition (ref-q8), which the fast integer
    # kernels must reproduce; float activations must reproduce the float reference
    want_int = "".join(p.text for p in Engine(path, threads=2, kernels="ref-q8", kv="f32").generate(PROMPT, **kw))
    for kernels in ("auto", "no-avx512", "float"):  # VNNI where the CPU has it, AVX2, float only
        fast = Engine(path, threads=2, kernels=kernels, kv="f32")
        expect = want_int if (kernels != "float" and qname in INT_PATH_TYPES) else want
        assert "".join(p.text for p in fast.generate(PROMPT, **kw)) == expect, fast.kernels


def _random_blocks(rng: np.random.Generator, qtype: int, n_blocks: int) -> np.ndarray:
    """Random block bytes with finite, modest half-precision scales where ggml puts them."""
    from pocketgpt.quant import formats

    per, nbytes = formats.BLOCK.get(qtype, (32, 18))
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    scales = rng.uniform(-0.1, 0.1, size=(n_blocks, 2)).astype(np.float16).view(np.uint8)
    half_at = {formats.Q2_K: [80, 82], formats.Q3_K: [108], formats.Q4_K: [0, 2], formats.Q5_K: [0, 2],
               formats.Q6_K: [208], formats.Q4_1: [0, 2], formats.Q5_1: [0, 2]}.get(qtype, [0])
    for i, off in enumerate(half_at):
        raw[:, off:off + 2] = scales[:, 2 * i:2 * i + 2]
    return raw


@pytest.mark.parametrize("qname", QTYPES[1:] + ["IQ4_NL"])
def test_block_decoding_bit_exact_with_gguf(qname):
    import gguf
    import gguf.quants

    from pocketgpt import _engine

    qtype = int(gguf.GGMLQuantizationType[qname])
    per, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[qname]]
    rng = np.random.default_rng(qtype)
    raw = _random_blocks(rng, qtype, 64)
    want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qname]).reshape(-1).astype(np.float32)
    got = np.frombuffer(_engine.dequantize(qtype, raw.tobytes(), per * 64), dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    x = rng.standard_normal(per * 64).astype(np.float32)
    exact = float(np.dot(want.astype(np.float64), x.astype(np.float64)))
    for mode in (1, 4):  # reference, best with float activations
        got_dot = _engine.dot(qtype, raw.tobytes(), x.tobytes(), mode)
        assert abs(got_dot - exact) <= 1e-4 * (1 + abs(exact)), mode
    # int8 activations: the fast kernels (VNNI here, AVX2) compute the portable definition's sums
    want_q8 = _engine.dot_q8(qtype, raw.tobytes(), x.tobytes(), 2)
    assert (want_q8 is not None) == (qname in INT8_TYPES)
    if want_q8 is not None:
        assert abs(want_q8 - exact) <= 0.02 * float(np.abs(want).sum() * np.abs(x).max() / 127 + 1e-3) + 0.01 * abs(exact)
        for mode in (0, 3):
            got_q8 = _engine.dot_q8(qtype, raw.tobytes(), x.tobytes(), mode)
            assert abs(got_q8 - want_q8) <= 1e-5 * (1 + abs(want_q8)), mode


def test_row_lengths_blocks_do_not_divide_fall_back_like_the_converter(tmp_path):
    """n_embd 48: Q8_0 cannot hold 48-weight rows, the converter stores them F16; greedy text
    still equals transformers on the dequantized weights."""
    from pocketgpt.engine import Engine
    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.hf import torch_model
    from pocketgpt.quant.formats import F16, simple_chooser

    model, vocab = make_hf_model(n_embd=48, n_layer=2, n_head=4, n_ctx=96, seed=5)
    path = write_model(tmp_path / "q8.gguf", model, vocab, simple_chooser("q8_0"))
    mf = read_gguf(path)
    assert mf.tensors["blk.0.attn_qkv.weight"].qtype == F16
    eng = Engine(path, threads=2, kv="f32")
    ids = eng.tokenize(PROMPT)
    want = torch_greedy(torch_model(mf), ids, 64)
    got = [p.token for p in eng.generate(ids, max_tokens=64, greedy=True, repeat_penalty=1.0, stop_at_eos=False)]
    assert got == want


@pytest.mark.parametrize("qname", INT8_TYPES)
def test_integer_activation_path_stays_close_to_float(tmp_path, quant_base, qname):
    """The integer-activation path (weights x int8 activations: the host's fast path and the
    chip's; for Q3_K/Q4_K one activation scale per 256 values, else per 32) against the
    dequantized float model: activation rounding costs a little accuracy, within 5 % of the logit
    range, and the top token agrees wherever the float model's choice is clear (it leads the
    runner-up by more than 1 % of the logit range; a random model has near-ties that rounding may
    flip). The fast kernels reproduce the portable definition (ref-q8) up to float summation order."""
    import torch

    from pocketgpt.engine import Engine
    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.hf import torch_model

    path = _quant_file(tmp_path, quant_base, qname)
    eng = Engine(path, threads=2, kernels="ref-q8", kv="f32")
    assert eng.kernels == "ref-q8"
    ids = eng.tokenize(PROMPT + " and other things, said the quantized model.")
    with torch.no_grad():
        want = torch_model(read_gguf(path))(torch.tensor([ids])).logits[0].numpy()
    got = eng.logits(ids)
    span = float(want.max() - want.min())
    diff = float(np.abs(got - want).max())
    print(f"{qname} x int8 activations: max |diff| = {diff:.3f} of a logit range {span:.1f}")
    assert diff < 0.05 * span
    top2 = np.sort(want, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.01 * span
    assert clear.mean() >= 0.5  # the check below covers most positions
    assert (got.argmax(1) == want.argmax(1))[clear].all()
    for kernels in ("auto", "no-avx512"):
        fast = Engine(path, threads=2, kernels=kernels, kv="f32")
        assert "int8" in fast.kernels
        fast_logits = fast.logits(ids)
        # summation order can move an activation across an int8 rounding boundary in a later layer,
        # which shifts that position's logits by a rounding step; most positions agree to float
        # precision, and all stay as close to the float model as the definition does
        d = np.abs(fast_logits - got).max(axis=1)
        assert float(np.median(d)) < LOGIT_ATOL, fast.kernels
        assert float(np.abs(fast_logits - want).max()) < 0.05 * span, fast.kernels
        assert (fast_logits.argmax(1) == want.argmax(1))[clear].all(), fast.kernels


IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)


def _quantize_iq4_nl(arr: np.ndarray) -> np.ndarray:
    """A plain (not optimal) IQ4_NL encoding: scale so the largest weight maps to -127 or 113's
    side, every weight to the nearest table value. Enough to exercise the engine's decoder."""
    blocks = arr.reshape(-1, 32).astype(np.float32)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d = (amax / 127.0).astype(np.float16).astype(np.float32)
    scaled = np.where(d == 0, 0.0, blocks / np.where(d == 0, 1.0, d))
    idx = np.abs(scaled[..., None] - IQ4_NL_VALUES).argmin(-1).astype(np.uint8)
    out = np.empty((blocks.shape[0], 18), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8)
    out[:, 2:] = idx[:, :16] | (idx[:, 16:] << 4)
    return out.reshape(arr.shape[0], -1)


def test_iq4_nl_logits_match_dequantized_torch(tmp_path, quant_base):
    """IQ4_NL has no quantizer in the toolchain yet: encode one here, decode it with the gguf
    package for PyTorch, and compare."""
    import gguf
    import gguf.quants
    import torch
    from transformers import GPT2LMHeadModel

    from pocketgpt import hf
    from pocketgpt.engine import Engine
    from pocketgpt.gguf_io import StoredTensor, tensors_to_hf_state, write_gguf
    from pocketgpt.quant.formats import F32

    model, vocab = quant_base
    cfg, tensors, _ = hf.hf_to_tensors(model)
    stored, floats = {}, {}
    for name, arr in tensors.items():
        if arr.ndim == 2:
            raw = _quantize_iq4_nl(arr)
            stored[name] = StoredTensor(name, 20, arr.shape, raw)
            floats[name] = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.IQ4_NL).reshape(arr.shape)
        else:
            stored[name] = StoredTensor(name, F32, arr.shape, arr)
            floats[name] = arr
    path = tmp_path / "iq4nl.gguf"
    write_gguf(path, cfg, vocab, stored)
    ref = GPT2LMHeadModel(hf.hf_config(cfg, vocab)).eval()
    ref.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors_to_hf_state(floats, cfg).items()},
                        strict=False)
    ref.tie_weights()
    eng = Engine(path, threads=2, kv="f32")
    ids = eng.tokenize(PROMPT + " in four bits, non-linear.")
    with torch.no_grad():
        want = ref(torch.tensor([ids])).logits[0].numpy()
    for kernels in ("auto", "ref"):
        got = Engine(path, threads=1, kernels=kernels, kv="f32").logits(ids)
        diff = float(np.abs(got - want).max())
        print(f"IQ4_NL {kernels}: max |engine - torch(dequantized)| = {diff:.2e}")
        assert diff < LOGIT_ATOL


def test_half_and_8_bit_kv_caches_stay_close_to_the_exact_one(tmp_path):
    """kv="f16" (the default) and kv="q8_0" store the attention keys and values in 2 and ~1.06
    bytes: the logits move by a small fraction of their range and the top token stays."""
    from pocketgpt.engine import Engine

    model, vocab = make_hf_model(n_embd=128, n_layer=2, n_head=4, n_ctx=96, seed=13)  # head size 32
    path = write_model(tmp_path / "m.gguf", model, vocab)
    ids = Engine(path, threads=1).tokenize(PROMPT + " and the keys and values are stored in fewer bits.")
    exact = Engine(path, threads=2, kv="f32")
    want = exact.logits(ids)
    span = float(want.max() - want.min())
    full = exact.session()._s.mem_bytes
    for kv, share in (("f16", 0.5), ("q8_0", 34 / 128)):
        eng = Engine(path, threads=2, kv=kv)
        assert eng.kv == kv
        got = eng.logits(ids)
        diff = float(np.abs(got - want).max())
        print(f"kv {kv}: max |logits - exact| = {diff:.2e} of a range {span:.1f}")
        assert diff < (0.002 if kv == "f16" else 0.02) * span
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
        kv_bytes = 2 * 2 * 96 * 128 * 4  # layers * positions * n_embd * float32, keys and values
        assert eng.session()._s.mem_bytes == pytest.approx(full - kv_bytes * (1 - share), abs=256)
    # a head size 32 does not divide (16 here) cannot use Q8_0 blocks: the engine keeps F16
    small, v = make_hf_model(n_embd=64, n_layer=1, n_head=4, n_ctx=32, seed=2)
    assert Engine(write_model(tmp_path / "s.gguf", small, v), threads=1, kv="q8_0").kv == "f16"
