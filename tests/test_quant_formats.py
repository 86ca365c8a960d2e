"""Block formats: our bytes are ggml's bytes.

Dequantization must equal the `gguf` package's reference bit for bit (on our own output and on
arbitrary block bytes), the legacy types must quantize to exactly the bytes gguf's reference
quantizer writes, and quantize -> dequantize error must stay within what each type promises.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import quants as gq

from pocketgpt.errors import PocketError
from pocketgpt.quant import formats as F

BLOCK_TYPES = [F.Q8_0, F.Q4_0, F.Q4_1, F.Q5_0, F.Q5_1, F.Q2_K, F.Q3_K, F.Q4_K, F.Q5_K, F.Q6_K]
LEGACY = [F.Q8_0, F.Q4_0, F.Q4_1, F.Q5_0, F.Q5_1]

# relative RMS error promised on Gaussian weights (measured values are ~15 % below these)
MAX_REL_RMS = {F.Q8_0: 0.007, F.Q6_K: 0.021, F.Q5_K: 0.043, F.Q5_1: 0.045, F.Q5_0: 0.051,
               F.Q4_K: 0.083, F.Q4_1: 0.091, F.Q4_0: 0.094, F.Q3_K: 0.175, F.Q2_K: 0.34}


def _gguf_deq(raw: np.ndarray, qtype: int, shape: tuple[int, ...]) -> np.ndarray:
    return gq.dequantize(np.ascontiguousarray(raw), gguf.GGMLQuantizationType(qtype)).reshape(shape)


def _shapes(qtype: int) -> list[tuple[int, ...]]:
    per = F.BLOCK[qtype][0]
    return [(1, per), (7, per * 3), (3, per * 5), (per * 2,)]


def _data(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    flat = x.reshape(-1)
    per = 32
    flat[:per] = 0.0                              # an all-zero block
    if flat.size >= 3 * per:
        flat[per:2 * per] = 0.125                 # a constant block
        flat[2 * per + 5] = 1.5                   # an outlier
        flat[2 * per + 9] = -3.0
    return x


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=F.type_name)
def test_dequantize_equals_gguf_reference_bit_for_bit(qtype):
    for i, shape in enumerate(_shapes(qtype)):
        x = _data(shape, i)
        raw = F.quantize(x, qtype)
        ours = F.dequantize(raw, qtype, shape)
        ref = _gguf_deq(raw, qtype, shape)
        assert ours.dtype == np.float32 and ours.shape == shape
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), (F.type_name(qtype), shape)


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=F.type_name)
def test_dequantize_arbitrary_block_bytes_like_gguf(qtype):
    """Blocks ggml might write that our quantizer never would (any scale bits, any levels)."""
    per, nbytes = F.BLOCK[qtype]
    rng = np.random.default_rng(qtype)
    raw = rng.integers(0, 256, size=(5, 3 * nbytes), dtype=np.uint8)
    blocks = raw.reshape(-1, nbytes)
    # keep every half-precision field finite (exponent bits not all ones)
    half_offsets = {F.Q8_0: [0], F.Q4_0: [0], F.Q5_0: [0], F.Q4_1: [0, 2], F.Q5_1: [0, 2],
                    F.Q2_K: [80, 82], F.Q3_K: [108], F.Q4_K: [0, 2], F.Q5_K: [0, 2], F.Q6_K: [208]}[qtype]
    for off in half_offsets:
        blocks[:, off + 1] &= 0x3B
    shape = (5, 3 * per)
    ours = F.dequantize(raw, qtype, shape)
    ref = _gguf_deq(raw, qtype, shape)
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))


@pytest.mark.parametrize("qtype", LEGACY, ids=F.type_name)
def test_legacy_quantization_matches_gguf_bytes(qtype):
    for i, shape in enumerate(_shapes(qtype)):
        x = _data(shape, 10 + i)
        ours = F.quantize(x, qtype)
        ref = gq.quantize(x, gguf.GGMLQuantizationType(qtype))
        assert np.array_equal(ours.reshape(ref.shape), ref), (F.type_name(qtype), shape)


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=F.type_name)
def test_round_trip_error_is_what_the_type_promises(qtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((64, 1024)) * 0.05).astype(np.float32)
    raw = F.quantize(x, qtype)
    assert raw.nbytes == F.tensor_bytes(qtype, x.shape)
    assert raw.nbytes * 8 / x.size == pytest.approx(F.bits_per_weight(qtype))
    y = F.dequantize(raw, qtype, x.shape)
    rel = float(np.sqrt(((y - x) ** 2).mean() / (x ** 2).mean()))
    assert rel < MAX_REL_RMS[qtype], f"{F.type_name(qtype)} rel rms {rel:.4f}"
    # all-zero rows come back exactly zero; no NaN anywhere
    z = F.dequantize(F.quantize(np.zeros((2, F.BLOCK[qtype][0]), np.float32), qtype), qtype, (2, F.BLOCK[qtype][0]))
    assert not np.isnan(y).any() and np.all(z == 0)


def test_q8_0_error_is_at_most_half_a_step():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    y = F.dequantize(F.quantize(x, F.Q8_0), F.Q8_0, x.shape)
    step = np.abs(x.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    # half a step, plus the scale's own rounding to half precision (2**-11 relative, times 127)
    assert np.all(np.abs((y - x).reshape(-1, 32)) <= step * (0.5 + 127 * 2.0 ** -11) + 1e-7)


@pytest.mark.parametrize("qtype", [F.Q4_0, F.Q4_1, F.Q5_1, F.Q2_K, F.Q3_K, F.Q4_K, F.Q6_K], ids=F.type_name)
def test_importance_lowers_weighted_error(qtype):
    """Weighted fitting must cut the error where the importance says it matters."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((32, 512)) * 0.05).astype(np.float32)
    imp = np.exp(rng.standard_normal(512) * 1.5).astype(np.float32)

    def werr(raw):
        y = F.dequantize(raw, qtype, x.shape)
        return float((imp * (y - x) ** 2).sum())

    assert werr(F.quantize(x, qtype, imp)) < werr(F.quantize(x, qtype))


def test_fallback_chain_for_rows_blocks_do_not_divide():
    assert F.fitting_type(F.Q4_K, 768) == F.Q4_K
    assert F.fitting_type(F.Q4_K, 64) == F.Q5_0
    assert F.fitting_type(F.Q3_K, 96) == F.Q4_0
    assert F.fitting_type(F.Q2_K, 64) == F.Q4_0
    assert F.fitting_type(F.Q6_K, 320) == F.Q8_0
    assert F.fitting_type(F.Q4_K, 40) == F.F16
    assert F.fitting_type(F.Q8_0, 33) == F.F16
    with pytest.raises(PocketError, match="not a multiple"):
        F.quantize(np.zeros((2, 64), np.float32), F.Q4_K)


def test_type_names_round_trip_and_unknown_names_fail():
    for t in BLOCK_TYPES + [F.F32, F.F16]:
        assert F.type_from_name(F.type_name(t).lower()) == t
    with pytest.raises(PocketError, match="unknown tensor type"):
        F.type_from_name("Q7_Z")


@pytest.mark.parametrize("qtype", sorted(F.SCALE_FIELDS), ids=lambda t: F.type_name(t))
def test_scale_rows_multiplies_each_row_by_its_gain_in_a_file_gguf_reads_alike(qtype):
    """Row gains (tune_float) are folded into the blocks' half scale fields: every row comes back
    multiplied by its gain up to half rounding, and gguf's reference dequantization agrees bit for bit."""
    rng = np.random.default_rng(7)
    W = rng.standard_normal((6, 512)).astype(np.float32)
    s = rng.uniform(0.7, 1.3, 6).astype(np.float32)
    raw = F.quantize(W, qtype)
    scaled = F.scale_rows(raw, qtype, W.shape, s)
    assert scaled.shape == raw.shape and scaled.dtype == raw.dtype
    a = F.dequantize(raw, qtype, W.shape)
    b = F.dequantize(scaled, qtype, W.shape)
    assert np.abs(b - a * s[:, None]).max() <= 2e-3 * np.abs(a).max()
    ref = gguf.quants.dequantize(scaled, gguf.GGMLQuantizationType(qtype)).reshape(W.shape)
    assert np.array_equal(b, ref)
