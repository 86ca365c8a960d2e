"""Presets: which block type each tensor of a GPT-2 gets, under a bits-per-weight budget.

A preset is a budget (average bits per weight over the quantized matrices) and a ladder of
types. Expected error of a matrix at type t is modelled as sensitivity * n_weights * 4 ** -bpw(t)
(each extra bit quarters the squared error). The allocator minimises the total under the byte
budget the Lagrangian way: for a price per byte, every matrix takes the rung that minimises
error + price * bytes; the price is bisected until the plan fits, and what is left of the budget
goes, best gain per byte first, to further single-rung upgrades. Unlike a plain greedy fill, this
does not starve a big, sensitive tensor (the tied head) in favour of many small ones.

The q4 budget is the promise "GPT-2 124M in 63 MB" restated per weight: 3.875 bits over the
weight matrices is the most that keeps the 124M file (1.77 MB of tokenizer, 1.3 MB of Q8_0
position embedding and F32 vectors, 123.5M matrix weights) at or under 63,000,000 bytes whatever
the allocation (3.879 is the exact limit), so every model's q4 spends the same bits per weight.

Sensitivities encode what is known about GPT-2 (and what llama.cpp's Q4_K_M mix encodes too):
the tied token embedding is also the output head, whose errors land directly on the logits;
attn_qkv feeds every attention score; the first and last blocks matter most; ffn_up tolerates
the fewest bits. position_embd is small and stays Q8_0; vectors (norms, biases) stay F32.

Rows a type's block does not divide fall back per tensor (formats.FALLBACK), and the allocator
charges the fallback's real size, so the budget holds for any shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from pocketgpt.errors import PocketError
from pocketgpt.quant import formats as F


@dataclass(frozen=True)
class Preset:
    name: str
    ladder: tuple[int, ...]   # cheapest first
    bpw: float | None         # budget over quantized matrices; None = everything at ladder[0]
    about: str


PRESETS = {
    "q8": Preset("q8", (F.Q8_0,), None, "Q8_0 everywhere: indistinguishable from float"),
    "q6": Preset("q6", (F.Q6_K,), None, "Q6_K everywhere"),
    "q5": Preset("q5", (F.Q4_K, F.Q5_K, F.Q6_K), 5.3, "Q4_K..Q6_K mix at 5.3 bits/weight"),
    "q4": Preset("q4", (F.Q3_K, F.Q4_K, F.Q5_K, F.Q6_K), 3.875,
                 "Q3_K..Q6_K mix at 3.875 bits/weight: GPT-2 124M in under 63 MB"),
    "q3": Preset("q3", (F.Q2_K, F.Q3_K, F.Q4_K, F.Q5_K), 3.1, "Q2_K..Q5_K mix at 3.1 bits/weight"),
    "q2": Preset("q2", (F.Q2_K, F.Q3_K, F.Q4_K), 2.75, "Q2_K..Q4_K mix at 2.75 bits/weight"),
}

# Types the measured allocation (quantizer.measure_sensitivity) may choose from, whatever the preset.
MEASURED_LADDER = (F.Q2_K, F.Q3_K, F.Q4_K, F.Q5_K, F.Q6_K, F.Q8_0)

CLASS_SENSITIVITY = {
    "token_embd": 4.0,   # tied: also the output head
    "output": 4.0,
    "attn_qkv": 2.0,
    "attn_output": 1.5,
    "ffn_down": 1.5,
    "ffn_up": 1.0,
}


def is_matrix(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and name.endswith(".weight")


def sensitivity(name: str, n_layer: int, tied: bool) -> float:
    parts = name.split(".")
    if parts[0] == "blk":
        layer, kind = int(parts[1]), parts[2]
        s = CLASS_SENSITIVITY.get(kind, 1.0)
        if layer == 0 or layer == n_layer - 1:
            s *= 2.0
        return s
    if parts[0] == "token_embd":
        return CLASS_SENSITIVITY["token_embd"] if tied else 1.0
    return CLASS_SENSITIVITY.get(parts[0], 1.0)


@dataclass
class Choice:
    qtype: int
    wanted: int        # the type the preset asked for (differs when a fallback was needed)
    note: str = ""


def parse_type(spec: str) -> tuple[Preset | None, int | None]:
    """A preset name (q8, q4, ...) or a single block type name (Q4_K, q4_0, ...)."""
    key = spec.lower()
    if key in PRESETS:
        return PRESETS[key], None
    try:
        return None, F.type_from_name(spec)
    except PocketError:
        raise PocketError(f"unknown --type {spec!r}; presets: {', '.join(PRESETS)}; types: "
                          + ", ".join(n for t, n in F.NAMES.items() if t not in (F.F32,))) from None


def plan(shapes: dict[str, tuple[int, ...]], n_layer: int, tied: bool, spec: str,
         bpw: float | None = None, measured: dict[str, dict[int, float]] | None = None,
         ladder: tuple[int, ...] | None = None) -> dict[str, Choice]:
    """Type per tensor for `spec` (a preset or a type). `bpw` overrides the preset's budget.

    `measured` (from quantizer.measure_sensitivity: per matrix, the mean KL to the float model
    when only that matrix is quantized at a type) replaces the sensitivity model: the allocator
    then minimises the sum of measured KLs, which is what the output distribution really pays.
    `ladder` replaces the preset's ladder of types.
    """
    preset, single = parse_type(spec)
    matrices = [n for n, s in shapes.items() if is_matrix(n, s) and n != "position_embd.weight"]
    if not matrices:
        raise PocketError("the model has no weight matrices of a quantizable shape; nothing to quantize")
    out: dict[str, Choice] = {}
    for name, shape in shapes.items():
        if not is_matrix(name, shape):
            out[name] = Choice(F.F32, F.F32)
    if "position_embd.weight" in shapes:
        shape = shapes["position_embd.weight"]
        want = F.Q8_0 if (single is None or single not in (F.F32, F.F16)) else single
        out["position_embd.weight"] = _choice(want, shape)
    if single is not None:
        for n in matrices:
            out[n] = _choice(single, shapes[n])
        return _check_quantizable(out, matrices, shapes)
    assert preset is not None  # parse_type gives a preset or a single type
    ladder = ladder or preset.ladder
    budget_bpw = bpw if bpw is not None else preset.bpw
    level = {n: 0 for n in matrices}
    if budget_bpw is None:
        for n in matrices:
            out[n] = _choice(ladder[0], shapes[n])
        return _check_quantizable(out, matrices, shapes)
    n_weights = sum(_numel(shapes[n]) for n in matrices)
    budget = budget_bpw * n_weights / 8.0

    def cost(n: str, lvl: int) -> int:
        return F.tensor_bytes(F.fitting_type(ladder[lvl], shapes[n][-1]), shapes[n])

    def bits(n: str, lvl: int) -> float:
        t = F.fitting_type(ladder[lvl], shapes[n][-1])
        return F.bits_per_weight(t) if t not in (F.F32, F.F16) else 16.0

    sens = {n: sensitivity(n, n_layer, tied) for n in matrices}

    def expected_error(n: str, lvl: int) -> float:
        if measured is not None and n in measured:
            t = F.fitting_type(ladder[lvl], shapes[n][-1])
            if t in measured[n]:
                return measured[n][t]
        return sens[n] * _numel(shapes[n]) * 4.0 ** -bits(n, lvl)

    def pick(lam: float) -> dict[str, int]:
        # each matrix takes the rung minimising error + lam * bytes (a point on its convex hull)
        return {n: min(range(len(ladder)), key=lambda l: expected_error(n, l) + lam * cost(n, l))
                for n in matrices}

    def total(levels: dict[str, int]) -> int:
        return sum(cost(n, levels[n]) for n in matrices)

    lo, hi = 0.0, 1.0
    while total(pick(hi)) > budget and hi < 1e30:
        hi *= 4.0
    if total(pick(lo)) <= budget:
        level = pick(lo)
    else:
        for _ in range(60):
            mid = (lo + hi) / 2
            if total(pick(mid)) <= budget:
                hi = mid
            else:
                lo = mid
        level = pick(hi)
    # spend what the price left over, best gain per byte first, never exceeding the budget
    spent = total(level)
    while True:
        best, best_gain = None, 0.0
        for n in matrices:
            for up in range(level[n] + 1, len(ladder)):
                extra = cost(n, up) - cost(n, level[n])
                if extra <= 0 or spent + extra > budget:
                    continue
                gain = (expected_error(n, level[n]) - expected_error(n, up)) / extra
                if gain > best_gain:
                    best, best_gain = (n, up), gain
        if best is None:
            break
        n, up = best
        spent += cost(n, up) - cost(n, level[n])
        level[n] = up
    for n in matrices:
        out[n] = _choice(ladder[level[n]], shapes[n])
    return _check_quantizable(out, matrices, shapes)


def _check_quantizable(out: dict[str, Choice], matrices: list[str], shapes: dict) -> dict[str, Choice]:
    if all(out[n].qtype in (F.F32, F.F16) and out[n].wanted not in (F.F32, F.F16) for n in matrices):
        widths = sorted({shapes[n][-1] for n in matrices})
        raise PocketError(f"no weight matrix has rows a quantization block divides (row lengths "
                          f"{', '.join(map(str, widths))}; blocks need multiples of 32): nothing to quantize")
    return out


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _choice(want: int, shape: tuple[int, ...]) -> Choice:
    got = F.fitting_type(want, shape[-1])
    note = "" if got == want else (f"rows of {shape[-1]} are not a multiple of {F.type_name(want)}'s "
                                   f"{F.BLOCK[want][0]}-weight block: {F.type_name(got)} instead")
    return Choice(got, want, note)


def plan_bytes(shapes: dict[str, tuple[int, ...]], choices: dict[str, Choice]) -> int:
    """Bytes of tensor data the plan stores (without GGUF metadata and alignment)."""
    return sum(F.tensor_bytes(choices[n].qtype, s) for n, s in shapes.items())
