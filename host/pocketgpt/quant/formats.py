"""GGML tensor formats, defined here once for the whole project.

Every block type is byte-identical to ggml's (ggml-common.h): the same field order, the same
scale encoding and the same rounding (C's ``roundf``: halves away from zero). The C engine mirrors
these layouts; tests compare our dequantization with the `gguf` package's reference bit for bit.
"""

from __future__ import annotations

import numpy as np

from pocketgpt.errors import PocketError

# ggml type ids (gguf.GGMLQuantizationType values), kept as plain ints so the engine side and the
# relay need not import gguf.
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
IQ4_NL = 20

# type -> (weights per block, bytes per block)
BLOCK = {F32: (1, 4), F16: (1, 2), Q8_0: (32, 34)}

NAMES = {F32: "F32", F16: "F16", Q8_0: "Q8_0"}


def type_name(qtype: int) -> str:
    return NAMES.get(qtype, f"type{qtype}")


def type_from_name(name: str) -> int:
    for k, v in NAMES.items():
        if v.lower() == name.lower():
            return k
    raise PocketError(f"unknown tensor type {name!r}; known: {', '.join(NAMES.values())}")


def row_fits(qtype: int, row_len: int) -> bool:
    """True when rows of `row_len` weights split into whole blocks of `qtype`."""
    return row_len % BLOCK[qtype][0] == 0


def roundf(x: np.ndarray) -> np.ndarray:
    """C's roundf on float32: halves go away from zero (numpy's round goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def quantize(arr: np.ndarray, qtype: int) -> np.ndarray:
    """Float array (rows, cols) or (n,) -> stored array: float values, or uint8 (rows, bytes)."""
    arr = np.asarray(arr, dtype=np.float32)
    if qtype == F32:
        return np.ascontiguousarray(arr)
    if qtype == F16:
        return arr.astype(np.float16)
    if qtype not in BLOCK:
        raise PocketError(f"tensor type {type_name(qtype)} is not supported by this build")
    if not row_fits(qtype, arr.shape[-1]):
        raise PocketError(f"row length {arr.shape[-1]} is not a multiple of {type_name(qtype)}'s block of {BLOCK[qtype][0]}")
    lead = arr.shape[:-1]
    blocks = arr.reshape(-1, BLOCK[qtype][0])
    if qtype == Q8_0:
        data = _quantize_q8_0(blocks)
    else:  # pragma: no cover - guarded by BLOCK above
        raise AssertionError(qtype)
    return data.reshape(*lead, -1) if lead else data.reshape(-1)


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
    if qtype == Q8_0:
        out = _dequantize_q8_0(blocks)
    else:  # pragma: no cover
        raise AssertionError(qtype)
    return out.reshape(shape)


def _quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    # block_q8_0 { ggml_half d; int8_t qs[32]; }  d = amax/127, q = roundf(x/d)
    amax = np.abs(blocks).max(axis=1, keepdims=True)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = roundf(blocks * inv).astype(np.int8)
    out = np.empty((blocks.shape[0], 34), dtype=np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8)
    out[:, 2:] = q.view(np.uint8)
    return out


def _dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].view(np.int8).astype(np.float32)
    return d * q


def simple_chooser(outtype: str):
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
