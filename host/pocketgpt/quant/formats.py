"""GGML tensor formats, defined here once for the whole project.

Every block type is byte-identical to ggml's (ggml-common.h): the same field order, the same
scale encoding and the same rounding. The C engine mirrors these layouts; tests compare our
dequantization with the `gguf` package's reference bit for bit, and our legacy-type quantization
(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with its reference quantizer byte for byte.

How a type is quantized is split in three steps so that every method shares them:

* ``fit``: choose the block header (super-block scale, packed sub-block scales and mins) for
  blocks of weights, optionally weighted by per-weight importance. Without importance this is
  ggml's reference algorithm (``quantize_row_*_ref``: what llama.cpp does without an importance
  matrix); with it, the importance-weighted search of ggml's ``quantize_row_*_impl``.
* ``Grid``: what the header means per sub-block: value = a * q - b for an integer q in [lo, hi].
  GPTQ needs exactly this to quantize one column at a time with error feedback.
* ``pack``: header plus integer levels -> the block bytes.

Rounding conventions follow ggml: ``nearest_int`` (the 1.5 * 2**23 trick) rounds halves to even,
which is ``np.rint``; Q8_0 uses C's ``roundf`` (halves away from zero); the legacy 4/5-bit types
truncate ``x/d + 8.5``. Arithmetic is float32 throughout, as in C.

One job in one file, longer than the others on purpose: the format tables, then every type's fit,
pack and unpack side by side, so a block type is read, and checked against ggml-common.h, in one
place. What uses them (presets.py, quantizer.py) lives beside it in quant/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pocketgpt.errors import PocketError

# ggml type ids (gguf.GGMLQuantizationType values), kept as plain ints so the engine side and the
# relay need not import gguf.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
IQ4_NL = 20

QK_K = 256
GROUP_MAX_EPS = np.float32(1e-15)

# type -> (weights per block, bytes per block)
BLOCK = {
    F32: (1, 4), F16: (1, 2),
    Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22), Q5_1: (32, 24), Q8_0: (32, 34),
    Q2_K: (256, 84), Q3_K: (256, 110), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210),
}

NAMES = {
    F32: "F32", F16: "F16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1", Q8_0: "Q8_0",
    Q2_K: "Q2_K", Q3_K: "Q3_K", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K",
}

# When a row is not a whole number of a type's blocks, the tensor gets this type instead (the
# same choices llama.cpp's quantizer makes: a 32-weight block type with a little more precision to
# make up for the coarser per-block scales). Rows that 32 does not divide fall back to F16.
FALLBACK = {Q2_K: Q4_0, Q3_K: Q4_0, Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0,
            Q4_0: F16, Q4_1: F16, Q5_0: F16, Q5_1: F16, Q8_0: F16}


# Byte offsets, inside one block, of the IEEE half fields that multiply every value of the block
# (d, and the min's scale where there is one: value = d*sc*q - dmin*m, d*q + m, d*(q - 8), ...).
# Multiplying all of them by s multiplies every weight of the block by s, up to half rounding.
SCALE_FIELDS = {
    Q8_0: (0,), Q4_0: (0,), Q5_0: (0,), Q4_1: (0, 2), Q5_1: (0, 2),
    Q2_K: (80, 82), Q3_K: (108,), Q4_K: (0, 2), Q5_K: (0, 2), Q6_K: (208,),
}


def scale_rows(raw: np.ndarray, qtype: int, shape: tuple[int, ...], s: np.ndarray) -> np.ndarray:
    """Stored tensor (rows, cols) with row r multiplied by s[r]: each block's half scale fields
    are rescaled (and rounded to half again), the quantized levels are untouched."""
    rows = int(shape[0])
    s = np.asarray(s, dtype=np.float32).reshape(rows)
    if qtype in (F32, F16):
        return (np.asarray(raw, dtype=np.float32).reshape(shape) * s[:, None]).astype(raw.dtype)
    if qtype not in SCALE_FIELDS:
        raise PocketError(f"tensor type {type_name(qtype)} has no known block scale fields")
    per, nbytes = BLOCK[qtype]
    blocks = np.array(raw, dtype=np.uint8, copy=True).reshape(rows, -1, nbytes)
    for off in SCALE_FIELDS[qtype]:
        field = np.ascontiguousarray(blocks[:, :, off:off + 2]).view(np.float16)[..., 0].astype(np.float32)
        field = (field * s[:, None]).astype(np.float16)
        blocks[:, :, off:off + 2] = field[..., None].view(np.uint8)
    return blocks.reshape(np.asarray(raw).shape)


def type_name(qtype: int) -> str:
    return NAMES.get(qtype, f"type{qtype}")


def type_from_name(name: str) -> int:
    for k, v in NAMES.items():
        if v.lower() == name.lower():
            return k
    raise PocketError(f"unknown tensor type {name!r}; known: {', '.join(NAMES.values())}")


def bits_per_weight(qtype: int) -> float:
    per, nbytes = BLOCK[qtype]
    return 8.0 * nbytes / per


def row_fits(qtype: int, row_len: int) -> bool:
    """True when rows of `row_len` weights split into whole blocks of `qtype`."""
    return row_len % BLOCK[qtype][0] == 0


def fitting_type(qtype: int, row_len: int) -> int:
    """`qtype`, or the documented fallback chain's first type whose blocks divide `row_len`."""
    while not row_fits(qtype, row_len):
        qtype = FALLBACK[qtype]
    return qtype


def tensor_bytes(qtype: int, shape: tuple[int, ...]) -> int:
    per, nbytes = BLOCK[qtype]
    n = int(np.prod(shape))
    return n // per * nbytes


def roundf(x: np.ndarray) -> np.ndarray:
    """C's roundf on float32: halves go away from zero (numpy's round goes to even)."""
    a = np.abs(x)
    fl = np.floor(a)
    return np.sign(x) * (fl + (a - fl >= np.float32(0.5)))


def nearest_int(x: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: round to nearest, halves to even (float result)."""
    return np.rint(x)


def _f16(x: np.ndarray) -> np.ndarray:
    """The value a float32 has after a trip through ggml_half."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def _half_bytes(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).astype(np.float16).reshape(-1, 1).view(np.uint8)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den != 0, out, np.float32(0)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Scale searches (ggml's make_*_quants), vectorised over rows: x (N, n) -> per-row results.
# --------------------------------------------------------------------------------------------

def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)


def _pick_signed_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: |x| max and the signed value that has it (first one, as ggml's strict `>`)."""
    idx = np.abs(x).argmax(axis=1)
    mx = np.take_along_axis(x, idx[:, None], axis=1)[:, 0]
    return np.abs(mx), mx


def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None,
                   rmse: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric scale search: levels in [-nmax, nmax-1]. Returns (scale (N,), L (N, n) signed)."""
    x = x.astype(np.float32, copy=False)
    amax, mx = _pick_signed_max(x)
    zero = amax < GROUP_MAX_EPS
    mx = np.where(zero, np.float32(1), mx)
    w = (x * x) if qw is None else qw
    f_nmax = np.float32(nmax)

    def levels(iscale: np.ndarray) -> np.ndarray:
        v = iscale[:, None] * x
        np.rint(v, out=v)
        return np.clip(v, -nmax, nmax - 1, out=v)

    iscale = (-f_nmax / mx).astype(np.float32)
    L = levels(iscale)
    if not rmse:
        return np.where(zero, 0, 1 / iscale).astype(np.float32), np.where(zero[:, None], 0, L)
    wx = w * x
    sumlx = _rowdot(wx, L)
    suml2 = _rowdot(w * L, L)
    scale = _safe_div(sumlx, suml2)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = (-(f_nmax + np.float32(0.1) * np.float32(step)) / mx).astype(np.float32)
        l = levels(iscale)
        slx = _rowdot(wx, l)
        sl2 = _rowdot(w * l, l)
        better = (sl2 > 0) & (slx * slx > best * sl2)
        if better.any():
            L = np.where(better[:, None], l, L)
            scale = np.where(better, _safe_div(slx, sl2), scale)
            best = np.where(better, scale * slx, best)
    scale = np.where(zero, np.float32(0), scale).astype(np.float32)
    L = np.where(zero[:, None], 0, L)
    return scale, L


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_q3_quants with do_rmse: a signed scale refined one level at a time."""
    x = x.astype(np.float32, copy=False)
    n_rows, n = x.shape
    amax, mx = _pick_signed_max(x)
    zero = amax < GROUP_MAX_EPS
    mx = np.where(zero, np.float32(1), mx)
    iscale = (-np.float32(nmax) / mx).astype(np.float32)
    L = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1).astype(np.float32)
    w = x * x
    sumlx = (w * x * L).sum(axis=1)
    suml2 = (w * L * L).sum(axis=1)
    for _ in range(5):
        changed = np.zeros(n_rows, dtype=bool)
        for i in range(n):
            wi, xi, li = w[:, i], x[:, i], L[:, i]
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            ok = slx > 0
            new_l = np.clip(nearest_int(xi * _safe_div(sl2, slx)), -nmax, nmax - 1)
            ok &= new_l != li
            slx2 = slx + wi * xi * new_l
            sl22 = sl2 + wi * new_l * new_l
            ok &= (sl22 > 0) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
            if ok.any():
                L[:, i] = np.where(ok, new_l, li)
                sumlx = np.where(ok, slx2, sumlx)
                suml2 = np.where(ok, sl22, suml2)
                changed |= ok
        if not changed.any():
            break
    scale = np.where(zero, np.float32(0), _safe_div(sumlx, suml2)).astype(np.float32)
    return scale, np.where(zero[:, None], 0, L)


def make_qkx_quants(x: np.ndarray, nmax: int, w: np.ndarray, rmin: float, rdelta: float,
                    nstep: int, use_mad: bool, clamp_v: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric (scale, min) search of ggml's make_qkx2/qkx3_quants.

    Levels are in [0, nmax]; value = scale * L - the_min. Returns (scale, the_min, L).
    `clamp_v` selects qkx3's flat-block test (max <= min). Squared errors of candidates come from
    the weighted sums already at hand rather than a second pass over the weights.
    """
    x = x.astype(np.float32, copy=False)
    w = w.astype(np.float32, copy=False)
    mn = np.minimum(x.min(axis=1), 0).astype(np.float32)
    mx = x.max(axis=1)
    sum_w = w.sum(axis=1)
    sum_x = _rowdot(w, x)
    sum_x2 = _rowdot(w * x, x).astype(np.float64)
    flat = (mx <= mn) if clamp_v else (mx == mn)
    f_nmax = np.float32(nmax)

    def levels(iscale: np.ndarray, mn: np.ndarray) -> np.ndarray:
        v = x - mn[:, None]
        v *= iscale[:, None]
        np.clip(v, 0, f_nmax, out=v)
        return np.rint(v, out=v)

    def err(s, m, l, sum_l, sum_l2, sum_xl):
        if use_mad:
            d = s[:, None] * l + m[:, None] - x
            return _rowdot(w, np.abs(d)).astype(np.float64)
        s, m = s.astype(np.float64), m.astype(np.float64)
        return (s * s * sum_l2 + 2 * s * m * sum_l - 2 * s * sum_xl + m * m * sum_w
                - 2 * m * sum_x + sum_x2)

    rng = np.where(flat, np.float32(1), mx - mn)
    iscale = (f_nmax / rng).astype(np.float32)
    scale = (1 / iscale).astype(np.float32)
    L = levels(iscale, mn)
    wl = w * L
    best = err(scale, mn, L, wl.sum(axis=1).astype(np.float64), _rowdot(wl, L).astype(np.float64),
               _rowdot(wl, x).astype(np.float64))
    for step in range(nstep + 1):
        rng = np.where(flat, np.float32(1), mx - mn)
        iscale = ((np.float32(rmin) + np.float32(rdelta) * np.float32(step) + f_nmax) / rng).astype(np.float32)
        l = levels(iscale, mn)
        wl = w * l
        sum_l = wl.sum(axis=1)
        sum_l2 = _rowdot(wl, l)
        sum_xl = _rowdot(wl, x)
        D = sum_w * sum_l2 - sum_l * sum_l
        this_scale = _safe_div(sum_w * sum_xl - sum_x * sum_l, D)
        this_min = _safe_div(sum_l2 * sum_x - sum_l * sum_xl, D)
        pos = this_min > 0
        this_min = np.where(pos, np.float32(0), this_min)
        this_scale = np.where(pos, _safe_div(sum_xl, sum_l2), this_scale)
        cur = err(this_scale, this_min, l, sum_l.astype(np.float64), sum_l2.astype(np.float64),
                  sum_xl.astype(np.float64))
        better = (D > 0) & (cur < best) & ~flat
        if better.any():
            L = np.where(better[:, None], l, L)
            best = np.where(better, cur, best)
            scale = np.where(better, this_scale, scale)
            mn = np.where(better, this_min, mn)
    scale = np.where(flat, np.float32(0), scale).astype(np.float32)
    L = np.where(flat[:, None], 0, L)
    return scale, (-mn).astype(np.float32), L


def make_qp_quants(x: np.ndarray, nmax: int, qw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive-only scale for a set of non-negative values (the sub-block scales). Returns (scale, L)."""
    x = x.astype(np.float32, copy=False)
    n_rows, n = x.shape
    mx = np.maximum(x.max(axis=1), 0)
    zero = mx < GROUP_MAX_EPS
    mx = np.where(zero, np.float32(1), mx)
    f_nmax = np.float32(nmax)
    iscale = (f_nmax / mx).astype(np.float32)
    L = nearest_int(iscale[:, None] * x)
    scale = 1 / iscale
    best = (qw * (x - scale[:, None] * L) ** 2).sum(axis=1)
    for step in range(-4, 5):
        if step == 0:
            continue
        isc = ((np.float32(0.1) * np.float32(step) + f_nmax) / mx).astype(np.float32)
        l = np.minimum(nearest_int(isc[:, None] * x), nmax)
        mse = (qw * (x - (1 / isc)[:, None] * l) ** 2).sum(axis=1)
        better = mse < best
        best = np.where(better, mse, best)
        iscale = np.where(better, isc, iscale)
    L = np.minimum(nearest_int(iscale[:, None] * x), nmax)
    sumlx = (qw * x * L).sum(axis=1)
    suml2 = (qw * L * L).sum(axis=1)
    for _ in range(5):
        changed = np.zeros(n_rows, dtype=bool)
        for i in range(n):
            wi, xi, li = qw[:, i], x[:, i], L[:, i]
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            ok = (slx > 0) & (sl2 > 0)
            new_l = np.minimum(nearest_int(xi * _safe_div(sl2, slx)), nmax)
            ok &= new_l != li
            slx2 = slx + wi * xi * new_l
            sl22 = sl2 + wi * new_l * new_l
            ok &= slx2 * slx2 * suml2 > sumlx * sumlx * sl22
            if ok.any():
                L[:, i] = np.where(ok, new_l, li)
                sumlx = np.where(ok, slx2, sumlx)
                suml2 = np.where(ok, sl22, suml2)
                changed |= ok
        if not changed.any():
            break
    scale = np.where(zero, np.float32(0), _safe_div(sumlx, suml2)).astype(np.float32)
    return scale, np.where(zero[:, None], 0, L)


# --------------------------------------------------------------------------------------------
# Per-type fit / grid / pack
# --------------------------------------------------------------------------------------------

@dataclass
class Fit:
    """A block header chosen for `nb` blocks, and what it means per sub-block.

    value = a[:, s] * q - b[:, s] for an integer level q in [lo, hi] (sub-block s of `sub` weights).
    `q` may carry the levels the reference algorithm chose itself (legacy types round their own
    way); otherwise levels are the nearest grid point (`levels`).
    """

    header: dict[str, np.ndarray]
    a: np.ndarray
    b: np.ndarray
    lo: int
    hi: int
    sub: int
    q: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def levels(self, x: np.ndarray, sub_index: slice | int | None = None) -> np.ndarray:
        """Nearest level per weight for x (nb, k) in the sub-blocks `sub_index` covers."""
        if sub_index is None:
            a = np.repeat(self.a, self.sub, axis=1)
            b = np.repeat(self.b, self.sub, axis=1)
        else:
            a, b = self.a[:, sub_index], self.b[:, sub_index]
            if a.ndim == 1:
                a, b = a[:, None], b[:, None]
        q = nearest_int(_safe_div(x + b, a))
        return np.clip(q, self.lo, self.hi)

    def values(self, q: np.ndarray, sub_index: slice | int | None = None) -> np.ndarray:
        if sub_index is None:
            a = np.repeat(self.a, self.sub, axis=1)
            b = np.repeat(self.b, self.sub, axis=1)
        else:
            a, b = self.a[:, sub_index], self.b[:, sub_index]
            if a.ndim == 1:
                a, b = a[:, None], b[:, None]
        return (a * q - b).astype(np.float32)


def _row_sigma2(x: np.ndarray, scale: float) -> np.ndarray:
    return (scale * (x * x).sum(axis=1) / np.float32(x.shape[1])).astype(np.float32)


def _imatrix_weights(x: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """ggml's importance weighting: qw * sqrt(sigma2 + x^2), sigma2 per block."""
    return (qw * np.sqrt(sigma2[:, None] + x * x)).astype(np.float32)


# --- legacy 32-weight types -------------------------------------------------------------------

def _fit_q8_0(x, qw):
    amax = np.abs(x).max(axis=1)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = _safe_div(np.ones_like(d), d)
    q = roundf(x * inv[:, None])
    return Fit({"d": d}, _f16(d)[:, None], np.zeros((len(d), 1), np.float32), -128, 127, 32, q)


def _pack_q8_0(h, q):
    return np.concatenate([_half_bytes(h["d"]), q.astype(np.int8).view(np.uint8)], axis=1)


def _fit_q4_0(x, qw, nmax=8):
    if qw is None:
        _, mx = _pick_signed_max(x)
        d = (mx / np.float32(-nmax)).astype(np.float32)
        inv = _safe_div(np.ones_like(d), d)
        q = np.minimum(np.trunc(x * inv[:, None] + np.float32(nmax + 0.5)), 2 * nmax - 1) - nmax
    else:
        d, _ = make_qx_quants(x, nmax, qw)
        q = None  # requantize on the stored half scale
    return Fit({"d": d}, _f16(d)[:, None], np.zeros((len(d), 1), np.float32), -nmax, nmax - 1, 32, q)


def _nibbles(L: np.ndarray) -> np.ndarray:
    """32 levels per block -> 16 bytes: weight j in the low nibble, weight j+16 in the high one."""
    L = L.astype(np.uint8)
    return (L[:, :16] & 0xF) | ((L[:, 16:] & 0xF) << 4)


def _pack_q4_0(h, q):
    return np.concatenate([_half_bytes(h["d"]), _nibbles(q + 8)], axis=1)


def _fit_q5_0(x, qw):
    return _fit_q4_0(x, qw, nmax=16)


def _qh_bits(L: np.ndarray) -> np.ndarray:
    """Fifth bit of 32 levels -> uint32 little-endian bit field, as 4 bytes."""
    return np.packbits((L.astype(np.uint8) >> 4) & 1, axis=1, bitorder="little")


def _pack_q5_0(h, q):
    L = (q + 16).astype(np.uint8)
    return np.concatenate([_half_bytes(h["d"]), _qh_bits(L), _nibbles(L)], axis=1)


def _fit_q4_1(x, qw, nmax=15):
    if qw is None:
        mn = x.min(axis=1)
        mx = x.max(axis=1)
        d = ((mx - mn) / np.float32(nmax)).astype(np.float32)
        inv = _safe_div(np.ones_like(d), d)
        q = np.minimum(np.trunc((x - mn[:, None]) * inv[:, None] + np.float32(0.5)), nmax)
        m = mn
    else:
        d, negm, _ = make_qkx_quants(x, nmax, qw, -0.9, 0.05, 36, False, clamp_v=True)
        m = -negm
        q = None
    return Fit({"d": d, "m": m}, _f16(d)[:, None], -_f16(m)[:, None], 0, nmax, 32, q)


def _pack_q4_1(h, q):
    return np.concatenate([_half_bytes(h["d"]), _half_bytes(h["m"]), _nibbles(q)], axis=1)


def _fit_q5_1(x, qw):
    return _fit_q4_1(x, qw, nmax=31)


def _pack_q5_1(h, q):
    L = q.astype(np.uint8)
    return np.concatenate([_half_bytes(h["d"]), _half_bytes(h["m"]), _qh_bits(L), _nibbles(L)], axis=1)


# --- k-quants (256-weight super-blocks) --------------------------------------------------------

def _sub(x: np.ndarray, n: int) -> np.ndarray:
    return x.reshape(-1, n)


def _fit_q2_k(x, qw):
    nb = x.shape[0]
    xs = _sub(x, 16)
    if qw is None:
        scales, mins, _ = make_qkx_quants(xs, 3, np.abs(xs), -0.5, 0.1, 15, True)
        scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
        max_scale = np.maximum(scales.max(axis=1), 0)
        max_min = np.maximum(mins.max(axis=1), 0)
        q4 = np.float32(15)
        ls = np.where(max_scale[:, None] > 0, nearest_int(_safe_div(q4, max_scale)[:, None] * scales), 0)
        lm = np.where(max_min[:, None] > 0, nearest_int(_safe_div(q4, max_min)[:, None] * mins), 0)
        d = np.where(max_scale > 0, max_scale / q4, 0).astype(np.float32)
        dmin = np.where(max_min > 0, max_min / q4, 0).astype(np.float32)
    else:
        sigma2 = _row_sigma2(x, 1.0)
        w = _imatrix_weights(x, qw, sigma2).reshape(-1, 16)
        scales, mins, _ = make_qkx_quants(xs, 3, w, -0.9, 0.05, 36, False, clamp_v=True)
        sw = w.sum(axis=1).reshape(nb, 16)
        d, ls = make_qp_quants(scales.reshape(nb, 16), 15, sw)
        dmin, lm = make_qp_quants(mins.reshape(nb, 16), 15, sw)
    ls, lm = np.clip(ls, 0, 15).astype(np.uint8), np.clip(lm, 0, 15).astype(np.uint8)
    a = _f16(d)[:, None] * ls
    b = _f16(dmin)[:, None] * lm
    return Fit({"d": d, "dmin": dmin, "scales": ls | (lm << 4)}, a, b, 0, 3, 16)


def _pack_2bit(L: np.ndarray) -> np.ndarray:
    """256 2-bit levels -> 64 bytes: byte l of each 32-byte half holds weights l, l+32, l+64, l+96."""
    L = L.astype(np.uint8).reshape(-1, 2, 4, 32)
    out = L[:, :, 0] | (L[:, :, 1] << 2) | (L[:, :, 2] << 4) | (L[:, :, 3] << 6)
    return out.reshape(-1, 64)


def _pack_q2_k(h, q):
    return np.concatenate([h["scales"], _pack_2bit(q), _half_bytes(h["d"]), _half_bytes(h["dmin"])], axis=1)


def _fit_q3_k(x, qw):
    nb = x.shape[0]
    xs = _sub(x, 16)
    if qw is None:
        scales, _ = make_q3_quants(xs, 4)
        scales = scales.reshape(nb, 16)
        _, max_scale = _pick_signed_max(scales)
        has = max_scale != 0
        iscale = _safe_div(np.full(nb, -32, np.float32), max_scale)
        l = np.clip(nearest_int(iscale[:, None] * scales), -32, 31) + 32
        l = np.where(has[:, None], l, 0)
        d = np.where(has, _safe_div(np.ones(nb, np.float32), iscale), 0).astype(np.float32)
    else:
        sigma2 = _row_sigma2(x, 2.0)
        w = _imatrix_weights(x, qw, sigma2).reshape(-1, 16)
        scales, _ = make_qx_quants(xs, 4, w)
        sw = w.sum(axis=1).reshape(nb, 16)
        d, l = make_qx_quants(scales.reshape(nb, 16), 32, sw)
        l = l + 32
    l = l.astype(np.uint8)
    packed = np.zeros((nb, 12), np.uint8)
    packed[:, :8] = (l[:, :8] & 0xF) | ((l[:, 8:] & 0xF) << 4)
    hi = (l >> 4).reshape(nb, 4, 4)  # [j // 4, j % 4]
    packed[:, 8:] = hi[:, 0] | (hi[:, 1] << 2) | (hi[:, 2] << 4) | (hi[:, 3] << 6)
    a = _f16(d)[:, None] * (l.astype(np.float32) - 32)
    return Fit({"d": d, "scales": packed}, a, np.zeros_like(a), -4, 3, 16)


def _pack_q3_k(h, q):
    nb = q.shape[0]
    L = (q + 4).astype(np.uint8)
    hbit = (L >> 2) & 1  # weight j: bit j // 32 of hmask[j % 32]
    hmask = np.zeros((nb, 32), np.uint8)
    hb = hbit.reshape(nb, 8, 32)
    for k in range(8):
        hmask |= hb[:, k] << k
    return np.concatenate([hmask, _pack_2bit(L & 3), h["scales"], _half_bytes(h["d"])], axis=1)


def _pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> ggml's 12-byte k4 packing."""
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = (ls[:, :4] & 63) | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = (lm[:, :4] & 63) | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _fit_qk_asym(x, qw, nmax, ref_params):
    nb = x.shape[0]
    xs = _sub(x, 32)
    if qw is None:
        av = np.sqrt((xs * xs).sum(axis=1) / np.float32(32)).astype(np.float32)
        w = av[:, None] + np.abs(xs)
        rmin, rdelta, nstep = ref_params
        scales, mins, _ = make_qkx_quants(xs, nmax, w, rmin, rdelta, nstep, False)
        scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
        max_scale = np.maximum(scales.max(axis=1), 0)
        max_min = np.maximum(mins.max(axis=1), 0)
        inv_s = np.where(max_scale > 0, _safe_div(np.float32(63), max_scale), 0).astype(np.float32)
        inv_m = np.where(max_min > 0, _safe_div(np.float32(63), max_min), 0).astype(np.float32)
        ls = np.minimum(nearest_int(inv_s[:, None] * scales), 63)
        lm = np.minimum(nearest_int(inv_m[:, None] * mins), 63)
        d = (max_scale / np.float32(63)).astype(np.float32)
        dmin = (max_min / np.float32(63)).astype(np.float32)
    else:
        sigma2 = _row_sigma2(x, 2.0)
        w = _imatrix_weights(x, qw, sigma2).reshape(-1, 32)
        scales, mins, _ = make_qkx_quants(xs, nmax, w, -0.9, 0.05, 36, False, clamp_v=True)
        sw = w.sum(axis=1).reshape(nb, 8)
        d, ls = make_qp_quants(scales.reshape(nb, 8), 63, sw)
        dmin, lm = make_qp_quants(mins.reshape(nb, 8), 63, sw)
    ls, lm = np.clip(ls, 0, 63), np.clip(lm, 0, 63)
    a = _f16(d)[:, None] * ls.astype(np.float32)
    b = _f16(dmin)[:, None] * lm.astype(np.float32)
    return Fit({"d": d, "dmin": dmin, "scales": _pack_scale_min_k4(ls, lm)}, a, b, 0, nmax, 32)


def _fit_q4_k(x, qw):
    return _fit_qk_asym(x, qw, 15, (-1.0, 0.1, 20))


def _fit_q5_k(x, qw):
    return _fit_qk_asym(x, qw, 31, (-0.5, 0.1, 15))


def _pack_q4_k(h, q):
    L = q.astype(np.uint8).reshape(-1, 4, 2, 32)
    qs = (L[:, :, 0] | (L[:, :, 1] << 4)).reshape(-1, 128)
    return np.concatenate([_half_bytes(h["d"]), _half_bytes(h["dmin"]), h["scales"], qs], axis=1)


def _pack_q5_k(h, q):
    L = q.astype(np.uint8).reshape(-1, 4, 2, 32)
    qs = ((L[:, :, 0] & 0xF) | ((L[:, :, 1] & 0xF) << 4)).reshape(-1, 128)
    hi = L >> 4  # (nb, chunk k, half, 32): bit 2k + half of qh[j]
    qh = np.zeros((L.shape[0], 32), np.uint8)
    for k in range(4):
        qh |= (hi[:, k, 0] << (2 * k)) | (hi[:, k, 1] << (2 * k + 1))
    return np.concatenate([_half_bytes(h["d"]), _half_bytes(h["dmin"]), h["scales"], qh, qs], axis=1)


def _fit_q6_k(x, qw):
    nb = x.shape[0]
    xs = _sub(x, 16)
    scales, _ = make_qx_quants(xs, 32, None if qw is None else qw.reshape(-1, 16))
    scales = scales.reshape(nb, 16)
    amax, max_scale = _pick_signed_max(scales)
    has = amax >= GROUP_MAX_EPS
    iscale = _safe_div(np.full(nb, -128, np.float32), np.where(has, max_scale, 1))
    d = np.where(has, _safe_div(np.ones(nb, np.float32), iscale), 0).astype(np.float32)
    sc = np.where(has[:, None], np.minimum(nearest_int(iscale[:, None] * scales), 127), 0).astype(np.int8)
    a = _f16(d)[:, None] * sc.astype(np.float32)
    return Fit({"d": d, "scales": sc}, a, np.zeros_like(a), -32, 31, 16)


def _pack_q6_k(h, q):
    nb = q.shape[0]
    L = (q + 32).astype(np.uint8).reshape(nb, 2, 4, 32)  # [half of 128, quarter, l]
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
    hi = L >> 4
    qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    return np.concatenate([ql, qh, h["scales"].view(np.uint8), _half_bytes(h["d"])], axis=1)


FIT: dict[int, Callable] = {
    Q8_0: _fit_q8_0, Q4_0: _fit_q4_0, Q5_0: _fit_q5_0, Q4_1: _fit_q4_1, Q5_1: _fit_q5_1,
    Q2_K: _fit_q2_k, Q3_K: _fit_q3_k, Q4_K: _fit_q4_k, Q5_K: _fit_q5_k, Q6_K: _fit_q6_k,
}
PACK: dict[int, Callable] = {
    Q8_0: _pack_q8_0, Q4_0: _pack_q4_0, Q5_0: _pack_q5_0, Q4_1: _pack_q4_1, Q5_1: _pack_q5_1,
    Q2_K: _pack_q2_k, Q3_K: _pack_q3_k, Q4_K: _pack_q4_k, Q5_K: _pack_q5_k, Q6_K: _pack_q6_k,
}


def fit_blocks(blocks: np.ndarray, qtype: int, importance: np.ndarray | None = None) -> Fit:
    """Choose headers for blocks (nb, block) of `qtype`; importance (nb, block) or None."""
    blocks = np.ascontiguousarray(blocks, dtype=np.float32)
    if importance is not None:
        importance = np.ascontiguousarray(importance, dtype=np.float32)
        if qtype == Q8_0:
            importance = None  # one scale per 32 weights at 8 bits: nothing to weigh
        elif qtype in (Q4_0, Q5_0, Q4_1, Q5_1):
            sigma2 = (blocks * blocks).mean(axis=1).astype(np.float32)
            importance = _imatrix_weights(blocks, importance, sigma2)
    return FIT[qtype](blocks, importance)


def pack_blocks(fit: Fit, q: np.ndarray, qtype: int) -> np.ndarray:
    return PACK[qtype](fit.header, q)


def quantize_blocks(blocks: np.ndarray, qtype: int, importance: np.ndarray | None = None) -> np.ndarray:
    fit = fit_blocks(blocks, qtype, importance)
    q = fit.q if fit.q is not None else fit.levels(blocks)
    return pack_blocks(fit, q, qtype)


CHUNK_WEIGHTS = 1 << 18  # blocks are fitted in chunks of this many weights to bound memory


def quantize(arr: np.ndarray, qtype: int, importance: np.ndarray | None = None) -> np.ndarray:
    """Float array (rows, cols) or (n,) -> stored array: float values, or uint8 (rows, bytes).

    `importance` (cols,) weighs each input column's error (mean squared activation from
    calibration, as llama.cpp's importance matrix); None gives ggml's reference quantization.
    """
    arr = np.asarray(arr, dtype=np.float32)
    if qtype == F32:
        return np.ascontiguousarray(arr)
    if qtype == F16:
        return arr.astype(np.float16)
    if qtype not in BLOCK:
        raise PocketError(f"tensor type {type_name(qtype)} is not supported by this build")
    per = BLOCK[qtype][0]
    if not row_fits(qtype, arr.shape[-1]):
        raise PocketError(f"row length {arr.shape[-1]} is not a multiple of {type_name(qtype)}'s block of {per}")
    lead = arr.shape[:-1]
    blocks = arr.reshape(-1, per)
    imp = None
    if importance is not None:
        importance = np.asarray(importance, dtype=np.float32).reshape(-1)
        if importance.shape[0] != arr.shape[-1]:
            raise PocketError(f"importance has {importance.shape[0]} entries, rows have {arr.shape[-1]}")
        imp = np.broadcast_to(importance.reshape(1, -1), arr.reshape(-1, arr.shape[-1]).shape).reshape(-1, per)
    step = max(1, CHUNK_WEIGHTS // per)
    parts = [quantize_blocks(blocks[i:i + step], qtype, None if imp is None else imp[i:i + step])
             for i in range(0, blocks.shape[0], step)]
    data = np.concatenate(parts, axis=0) if parts else np.zeros((0, BLOCK[qtype][1]), np.uint8)
    return data.reshape(*lead, -1) if lead else data.reshape(-1)


# --------------------------------------------------------------------------------------------
# Dequantization
# --------------------------------------------------------------------------------------------

def _unnibble(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0xF, qs >> 4], axis=1)


def _half(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def _unpack_2bit(qs: np.ndarray) -> np.ndarray:
    q = qs.reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    return (q & 3).reshape(-1, 256)


def _scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ls = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    lm = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return ls.astype(np.float32), lm.astype(np.float32)


def _deq_blocks(b: np.ndarray, qtype: int) -> np.ndarray:
    nb = b.shape[0]
    if qtype == Q8_0:
        return _half(b[:, :2]) * b[:, 2:].view(np.int8).astype(np.float32)
    if qtype == Q4_0:
        return _half(b[:, :2]) * (_unnibble(b[:, 2:]).astype(np.float32) - 8)
    if qtype == Q4_1:
        return _half(b[:, :2]) * _unnibble(b[:, 4:]).astype(np.float32) + _half(b[:, 2:4])
    if qtype in (Q5_0, Q5_1):
        off = 2 if qtype == Q5_0 else 4
        hb = np.unpackbits(b[:, off:off + 4], axis=1, bitorder="little")
        q = (_unnibble(b[:, off + 4:]) | (hb << 4)).astype(np.float32)
        if qtype == Q5_0:
            return _half(b[:, :2]) * (q - 16)
        return _half(b[:, :2]) * q + _half(b[:, 2:4])
    if qtype == Q2_K:
        sc = b[:, :16]
        q = _unpack_2bit(b[:, 16:80]).astype(np.float32).reshape(nb, 16, 16)
        d, dmin = _half(b[:, 80:82]), _half(b[:, 82:84])
        dl = (d * (sc & 0xF).astype(np.float32))[:, :, None]
        ml = (dmin * (sc >> 4).astype(np.float32))[:, :, None]
        return (dl * q - ml).reshape(nb, 256)
    if qtype == Q3_K:
        hmask, qs, s, d = b[:, :32], b[:, 32:96], b[:, 96:108], _half(b[:, 108:110])
        low = np.concatenate([s[:, :8] & 0xF, s[:, :8] >> 4], axis=1)
        high = (s[:, 8:12].reshape(nb, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)) & 3
        sc = (low | (high.reshape(nb, 16) << 4)).astype(np.float32) - 32
        hbit = (hmask.reshape(nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1
        q = _unpack_2bit(qs).astype(np.float32) - 4 * (1 - hbit.reshape(nb, 256).astype(np.float32))
        return ((d * sc)[:, :, None] * q.reshape(nb, 16, 16)).reshape(nb, 256)
    if qtype in (Q4_K, Q5_K):
        d, dmin = _half(b[:, 0:2]), _half(b[:, 2:4])
        ls, lm = _scale_min_k4(b[:, 4:16])
        if qtype == Q4_K:
            qs = b[:, 16:144].reshape(nb, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
            q = (qs & 0xF).reshape(nb, 8, 32).astype(np.float32)
        else:
            qh, qs = b[:, 16:48], b[:, 48:176]
            lo = (qs.reshape(nb, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0xF
            hi = (qh.reshape(nb, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1
            q = (lo.reshape(nb, 8, 32) | (hi << 4)).astype(np.float32)
        return ((d * ls)[:, :, None] * q - (dmin * lm)[:, :, None]).reshape(nb, 256)
    if qtype == Q6_K:
        ql, qh, sc, d = b[:, :128], b[:, 128:192], b[:, 192:208].view(np.int8), _half(b[:, 208:210])
        lo = (ql.reshape(nb, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)) & 0xF
        lo = lo.reshape(nb, 2, 4, 32)  # quarter order: (l, l+32 low nibble), (l, l+32 high nibble)
        hi = (qh.reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3
        q = (lo | (hi << 4)).astype(np.float32) - 32
        return ((d * sc.astype(np.float32))[:, :, None] * q.reshape(nb, 16, 16)).reshape(nb, 256)
    raise AssertionError(qtype)  # pragma: no cover


def dequantize(raw: np.ndarray, qtype: int, shape: tuple[int, ...]) -> np.ndarray:
    """Stored array -> float32 array of `shape`."""
    if qtype == F32:
        return np.asarray(raw, dtype=np.float32).reshape(shape)
    if qtype == F16:
        return np.asarray(raw).view(np.float16).astype(np.float32).reshape(shape)
    if qtype not in BLOCK:
        raise PocketError(f"tensor type {type_name(qtype)} is not supported by this build")
    per, nbytes = BLOCK[qtype]
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, nbytes)
    step = max(1, CHUNK_WEIGHTS // per)
    out = np.concatenate([_deq_blocks(blocks[i:i + step], qtype) for i in range(0, blocks.shape[0], step)]
                         or [np.zeros((0, per), np.float32)], axis=0)
    return out.astype(np.float32, copy=False).reshape(shape)


def simple_chooser(outtype: str) -> Callable[[str, np.ndarray], int]:
    """Type choice for plain conversion: vectors stay F32; matrices as `outtype` (f32, f16, q8_0).

    A matrix whose rows a block does not divide falls back to F16 (reported by `inspect`).
    """
    outtype = outtype.lower()
    if outtype not in ("f32", "f16", "q8_0"):
        raise PocketError(f"unknown --outtype {outtype!r}; use f32, f16 or q8_0 (quantize for more)")
    want = {"f32": F32, "f16": F16, "q8_0": Q8_0}[outtype]

    def choose(name: str, arr: np.ndarray) -> int:
        if arr.ndim < 2:
            return F32
        if want in BLOCK and BLOCK[want][0] > 1 and not row_fits(want, arr.shape[-1]):
            return F16
        return want

    return choose
