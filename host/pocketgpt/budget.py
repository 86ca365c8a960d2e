"""The ESP32-S3 device budget: flash, PSRAM, internal RAM and modeled tokens/s of a GPT-2 GGUF.

No board is attached to the machines this project is built on, so the speed here is a *model*:
bytes streamed per token over published bandwidths plus multiply-accumulates over an assumed
achieved SIMD rate, with no overlap between the two (the conservative choice). Every assumption is
a field of `DeviceSpec` and is listed, in words, in every report (and in docs/budget.md).

Memory is not guessed: the engine's buffers are counted the way firmware/engine/gpt2.c and
tokenizer.c lay out their arenas (pg_model_mem_size, pg_state_mem_size), for a 32-bit target,
with the struct sizes measured by compiling the engine with -m32 (tests/test_budget.py checks the
arithmetic against the C functions themselves).

The layout assumed on the device follows the engine's memory contract (one arena for the model,
one per session):
  flash  : the GGUF file in its own data partition (the app image is the firmware's business);
  PSRAM  : the session arena (KV cache, activations, logits), and the weights when copied there
           at boot (weights_in="psram", the faster choice: octal PSRAM outreads quad flash);
  SRAM   : the pg_model and pg_state structs, the model arena (layer table + tokenizer hash
           tables, randomly accessed) and the engine task's stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pocketgpt.errors import PocketError

if TYPE_CHECKING:
    from pocketgpt.gguf_io import GPT2Config, ModelFile
    from pocketgpt.tokenizer import BPEVocab

    # a model not written yet: its configuration and {tensor name: (GGML type, stored bytes)}
    PlannedModel = tuple[GPT2Config, Mapping[str, tuple[int, int]]]

KIB = 1024
MIB = 1024 * 1024

# sizeof() of the engine's structs on a 32-bit target (gcc -m32; the ESP32-S3 is ILP32 too)
SIZEOF_PG_MODEL = 1224
SIZEOF_PG_STATE = 92
SIZEOF_PG_LAYER = 112
SIZEOF_PG_KERNELS = 868    # the model's kernel set, kept in its arena
PG_MAX_TASKS = 16          # gpt2.h: row buffers per matmul task

# GGML type ids the speed model distinguishes (quant/formats.py has them all)
_F32, _F16, _Q8_0 = 0, 1, 8


@dataclass(frozen=True)
class DeviceSpec:
    """Everything the budget model assumes about the chip. Change a field, the report says so."""

    name: str = "ESP32-S3 N16R8 (16 MB quad flash, 8 MB octal PSRAM) at 240 MHz"
    cpu_hz: float = 240e6
    flash_limit: int = 8 * MIB          # model partition budget (of 16 MB; the rest: app, OTA, NVS)
    psram_limit: int = 4 * MIB          # of 8 MB; the rest stays for audio, Wi-Fi buffers, the app
    sram_limit: int = 160 * KIB         # of ~273 KB free heap with Wi-Fi up
    psram_bw: Mapping[int, float] = field(default_factory=lambda: {16: 37e6, 32: 58e6, 64: 84e6})
    flash_bw: float = 40e6              # quad flash at 80 MHz, raw upper bound
    pie_macs_per_instr: int = 16        # EE.VMULAS.S8.ACCX
    q8_cycles_per_mac: float = 2.0      # achieved, Q8_0 PIE path incl. block copy, f16 scale, loads
    scalar_cycles_per_mac: float = 6.0  # every other weight type (portable _ref kernels)
    float_cycles_per_mac: float = 5.1   # attention over the float KV cache (plain C; esp-dsp: 1311/256)
    cycles_per_gelu: float = 60.0       # tanhf in software
    cycles_per_exp: float = 40.0        # expf in softmax
    cycles_per_norm_elem: float = 12.0  # layernorm: two passes + affine
    cycles_per_act_quant: float = 4.0   # int8 quantization of matmul inputs, per element
    cycles_per_logit_sample: float = 30.0  # sampler: softmax + top-k/top-p over the vocabulary
    task_stack: int = 16 * KIB          # the engine task's stack in internal RAM
    target_tok_s: float = 30.0
    partition_align: int = 64 * KIB     # flash partitions start on 64 KiB boundaries


ESP32S3 = DeviceSpec()

# Instructions counted on the ESP32-S3 instruction set (tools/xtensa_check.py --count: the engine
# run in QEMU's S3 core with a per-symbol counting plugin, plus the PIE kernel's disassembly).
COUNTS_FILE = Path(__file__).parent / "data" / "xtensa_counts.json"
# per 32-weight Q8_0 block, kernels_esp32s3.c's dot_q8_0_q8_esp32s3 as GCC 13 compiles it for the S3
# (normal-exponent path of the software f16 conversion; build/xtensa/kernels_esp32s3_pie.dis):
PIE_BLOCK_OUTSIDE_LOOP = 44    # f16 -> f32, scale multiply, read-out, accumulate, block bookkeeping
PIE_BLOCK_MEMCPY = 30          # ASSUMED: the 32-byte copy to the aligned buffer (a memcpy call
                               # with an unaligned source in newlib's Xtensa memcpy)


@dataclass(frozen=True)
class CountedRates:
    """Instructions per unit of work, derived from counted instructions (not from published cycle
    figures). Times = instructions x cpi / clock, plus the same memory streaming as the model."""

    instr_per_q8_mac: float         # PIE kernel (static count of the disassembly)
    instr_per_scalar_mac: float     # portable _ref kernels (counted: ref-q8's Q8_0 dot)
    matmul_glue_per_mac: float      # counted: task split, activation quantization, bias, tiles
    instr_per_attn_mac: float       # counted: scores, softmax (its expf calls), weighted sum, per MAC
    instr_per_gelu: float           # counted: tanhf (its expm1f/expf and division calls) per element
    instr_per_norm_elem: float      # counted: layernorm per element
    instr_per_vocab_entry: float    # counted: greedy sampler with repetition penalty
    other_per_token: float          # counted: forward-pass glue
    pie_loop_instructions: int      # per 16 weights
    counted_instructions_per_token: int  # what was measured (ref kernels, the measured model)
    cpi: float = 1.2                # ASSUMED cycles per instruction (single-issue LX7: taken-branch
                                    # and load-use bubbles; cache misses are the memory term)
    source: str = ""


def counted_rates(path: Path = COUNTS_FILE) -> CountedRates | None:
    """The rates of the last `tools/xtensa_check.py --count` run copied into the package, or None."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    sh, fn, part = d["shape"], d["by_function"], d["by_part"]
    L, E, F, V = sh["n_layer"], sh["n_embd"], sh["n_ff"], sh["n_vocab"]
    macs = L * (3 * E * E + E * E + F * E + E * F) + V * E
    # the harness's decode steps evaluate tokens i = short-1 .. long-2 after a P-token prompt, each
    # attending over P + i + 1 positions
    short, long_ = d["tokens_measured"]
    t_mean = d["prompt_tokens"] + (short - 1 + long_ - 2) / 2 + 1
    ref = sum(fn.get(k, 0) for k in ("dot_q8_0_q8_ref", "f16", "dq_q8_0"))
    pie_block = PIE_BLOCK_OUTSIDE_LOOP + 2 * d["pie_q8_loop"]["loop_instructions"] + PIE_BLOCK_MEMCPY
    return CountedRates(
        instr_per_q8_mac=pie_block / 32,
        instr_per_scalar_mac=ref / macs,
        matmul_glue_per_mac=(part["matmul"] - ref) / macs,
        instr_per_attn_mac=part["attention"] / (2 * L * t_mean * E),
        instr_per_gelu=part["gelu"] / (L * F),
        instr_per_norm_elem=part["norm"] / ((2 * L + 1) * E),
        instr_per_vocab_entry=part["sampler"] / V,
        other_per_token=part.get("other (forward pass glue, harness)", 0) + part.get("runtime (rt.c)", 0),
        pie_loop_instructions=d["pie_q8_loop"]["loop_instructions"],
        counted_instructions_per_token=d["instructions_per_token"],
        source=f"{d['model']} in QEMU's ESP32-S3 core, {d['decode_steps_measured']} decode steps",
    )


@dataclass
class BudgetReport:
    """The budget of one model on one device. A model, not a measurement (no board was used)."""

    model: str
    n_ctx: int
    n_batch: int
    weights_in: str
    cache_line: int
    flash_bytes: int
    psram_bytes: int
    sram_bytes: int
    modeled_tok_s: float          # mean over a full n_ctx generation
    modeled_tok_s_full: float     # at the last position (longest attention)
    counted_tok_s: float | None       # the same memory model, compute from counted instructions
    counted_tok_s_full: float | None
    bytes_per_token: int          # mean over the context
    macs_per_token: int
    fits: bool
    limits: dict[str, Any]
    breakdown: dict[str, Any]
    assumptions: list[str]
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modeled_tok_s"] = round(self.modeled_tok_s, 2)
        d["modeled_tok_s_full"] = round(self.modeled_tok_s_full, 2)
        if self.counted_tok_s is not None:
            d["counted_tok_s"] = round(self.counted_tok_s, 2)
            d["counted_tok_s_full"] = round(self.counted_tok_s_full or 0.0, 2)
        d["note"] = "modeled from published ESP32-S3 figures, not measured on a board"
        return d

    def render(self) -> str:
        lim = self.limits
        ok = "fits" if self.fits else "DOES NOT FIT"
        lines = [
            f"ESP32-S3 budget for {self.model} ({ok}) -- a MODEL from published figures, NOT a measurement:",
            f"  flash  {_mib(self.flash_bytes)} of {_mib(lim['flash'])}   (GGUF partition)",
            f"  PSRAM  {_mib(self.psram_bytes)} of {_mib(lim['psram'])}   "
            f"(KV cache + buffers for {self.n_ctx} tokens{', weights' if self.weights_in == 'psram' else ''})",
            f"  SRAM   {self.sram_bytes / KIB:.1f} KiB of {lim['sram'] / KIB:.0f} KiB   (engine structs, tables, stack)",
            f"  modeled {self.modeled_tok_s:.1f} tok/s mean over {self.n_ctx} tokens "
            f"({self.modeled_tok_s_full:.1f} at the last position; goal >= {lim['tok_s']:.0f}); "
            f"{self.bytes_per_token / 1e6:.2f} MB and {self.macs_per_token / 1e6:.2f} M MACs per token",
            (f"  from counted instructions: {self.counted_tok_s:.1f} tok/s mean ({self.counted_tok_s_full:.1f} at the "
             f"last position): {self.breakdown['counted_instructions_per_token_mid'] / 1e6:.2f} M instructions per token "
             f"with the PIE kernel (ESP32-S3 instruction set in QEMU; CPI and memory stalls assumed)"
             if self.counted_tok_s is not None else
             "  from counted instructions: no counts (run tools/xtensa_check.py --count)"),
            f"  streamed per token: {self.breakdown['weight_bytes_per_token'] / 1e6:.2f} MB of weights (the output "
            f"head {self.breakdown['head_bytes_per_token'] / 1e6:.2f} MB of it) + the KV cache, up to "
            f"{self.breakdown['kv_bytes_last'] / 1e6:.2f} MB at the last position",
        ]
        lines += [f"  problem: {p}" for p in self.problems]
        lines.append("  assumptions:")
        lines += [f"    - {a}" for a in self.assumptions]
        return "\n".join(lines)


def _mib(n: int) -> str:
    return f"{n / MIB:.2f} MiB"


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class _Arena:
    """pg_arena_take's arithmetic (counting mode): alignment padding included."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, n: int, align: int) -> None:
        self.used = _align(self.used, align) + n


def _pow2_at_least(n: int) -> int:
    c = 16
    while c < n and c < 0x80000000:
        c <<= 1
    return c


def _token_raw_len(spelling: str) -> int:
    """Bytes the tokenizer reserves for a token: its spelling's UTF-8 length as stored in the GGUF."""
    return len(spelling.encode("utf-8"))


def _table_cap(n: int) -> int:
    """tokenizer.c table_cap: linear-probing tables at most 80 % full."""
    return _pow2_at_least(n + n // 4 + 1)


def model_arena_bytes(n_layer: int, n_vocab: int, n_merges: int, token_bytes: int,
                      sizeof_layer: int = SIZEOF_PG_LAYER, sizeof_kernels: int = SIZEOF_PG_KERNELS) -> int:
    """pg_model_mem_size: the layer table, then the tokenizer's byte table, offsets, token hash,
    merge hash (8-byte packed entries), merged ids and per-token classes, then the kernel set."""
    a = _Arena()
    a.take(n_layer * sizeof_layer, 8)
    a.take(token_bytes + 1, 1)
    a.take((n_vocab + 1) * 4, 4)
    a.take(_table_cap(n_vocab) * 4, 4)
    a.take(_table_cap(n_merges) * 8, 8)
    a.take(n_merges * 4, 4)
    a.take(n_vocab, 1)  # the per-token classes (PG_TOK_*)
    a.take(sizeof_kernels, 8)
    return a.used


KV_TYPES = ("f32", "f16")


def kv_row_bytes(n_embd: int, kv: str = "f32") -> int:
    """Bytes of one position's K (or V) values as the engine stores them (gpt2.c kv_row_bytes)."""
    if kv not in KV_TYPES:
        raise PocketError(f"KV cache type {kv!r}: choose one of {', '.join(KV_TYPES)}")
    return n_embd * (4 if kv == "f32" else 2)


def state_arena_bytes(n_layer: int, n_embd: int, n_ff: int, n_head: int, n_vocab: int,
                      n_ctx: int, n_batch: int, kv: str = "f32") -> int:
    """pg_state_mem_size_kv: KV cache, activations, row buffers, logits and sampler scratch.
    kv "f32" is pg_state_mem_size (what the firmware's pg_state_init uses)."""
    E, F, V, B, T = n_embd, n_ff, n_vocab, n_batch, n_ctx
    widest = max(E, F)
    a = _Arena()
    kv_bytes = n_layer * T * kv_row_bytes(E, kv)
    score_rows = min(B * n_head, PG_MAX_TASKS)  # one row of attention scores per task
    for n in (kv_bytes, kv_bytes, B * E * 4, B * E * 4, B * 3 * E * 4, B * E * 4, B * F * 4, score_rows * T * 4,
              PG_MAX_TASKS * widest * 4, B * widest, B * (widest // 32 + 1) * 4, V * 4, V * 4, V * 4):
        a.take(n, 64)
    return a.used


def _gguf_overhead_estimate(n_vocab: int, n_merges: int, token_bytes: int, n_tensors: int) -> int:
    """Header + metadata bytes of a GGUF without its tensors (used only when no file exists yet)."""
    tokens = n_vocab * 8 + token_bytes * 1.3          # length prefixes + spellings
    merges = n_merges * 8 + n_merges * 7              # "a b" strings, ~7 bytes each
    types = n_vocab * 4
    tensor_info = n_tensors * 64
    return int(4096 + tokens + merges + types + tensor_info + 32 * n_tensors)


def estimate(model: ModelFile | PlannedModel, n_ctx: int = 256, cache_line: int = 64, weights_in: str = "psram",
             n_batch: int = 1, spec: DeviceSpec = ESP32S3, vocab: BPEVocab | None = None,
             kv: str = "f32") -> BudgetReport:
    """The device budget of `model` for an `n_ctx`-token session.

    `model` is a pocketgpt.gguf_io.ModelFile, or a pair (GPT2Config, {tensor name: (GGML type,
    stored bytes)}) for a model not written yet (then `vocab`, a BPEVocab, sizes the tokenizer
    tables; without it they are estimated). weights_in: "psram" (copied from flash at boot) or
    "flash" (read in place through the cache). kv: the KV cache's storage ("f32", as the
    firmware keeps it today; or "f16", which the engine also offers through pg_state_init_kv).
    """
    from pocketgpt.gguf_io import ModelFile, tensor_names

    if weights_in not in ("flash", "psram"):
        raise PocketError(f"weights_in {weights_in!r}: choose 'flash' or 'psram'")
    if cache_line not in spec.psram_bw:
        raise PocketError(f"cache line {cache_line} bytes: the ESP32-S3 data cache takes "
                          + ", ".join(str(c) for c in sorted(spec.psram_bw)))
    if n_ctx < 1 or n_batch < 1:
        raise PocketError(f"n_ctx {n_ctx} and n_batch {n_batch} must be >= 1")

    if isinstance(model, ModelFile):
        cfg = model.cfg
        types: Mapping[str, tuple[int, int]] = {n: (t.qtype, t.n_bytes) for n, t in model.tensors.items()}
        vocab = model.vocab
        label = str(model.path)
        file_bytes = model.file_bytes
    else:
        cfg, types = model
        label = "planned model"
        file_bytes = 0
    tied = "output.weight" not in types
    missing = [n for n in tensor_names(cfg, tied) if n not in types]
    if missing:
        raise PocketError(f"{label}: tensors missing for the budget: {', '.join(missing[:3])}")

    L, E, F, H, V = cfg.n_layer, cfg.n_embd, cfg.n_ff, cfg.n_head, cfg.n_vocab
    if vocab is not None:
        token_bytes = sum(_token_raw_len(t) for t in vocab.tokens)
        n_merges = len(vocab.merges)
    else:
        n_merges = max(0, V - 257)
        token_bytes = 256 + 6 * n_merges + 13
    if not file_bytes:
        file_bytes = sum(b for _, b in types.values()) + _gguf_overhead_estimate(V, n_merges, token_bytes, len(types))

    problems: list[str] = []
    if n_ctx > cfg.n_ctx:
        problems.append(f"the model has {cfg.n_ctx} positions, fewer than the {n_ctx}-token context budgeted")

    # ---- memory ------------------------------------------------------------------------------
    state = state_arena_bytes(L, E, F, H, V, n_ctx, n_batch, kv)
    kv_row = kv_row_bytes(E, kv)
    model_arena = model_arena_bytes(L, V, n_merges, token_bytes)
    flash = _align(file_bytes, spec.partition_align)
    psram = state + (file_bytes if weights_in == "psram" else 0)
    sram = SIZEOF_PG_MODEL + SIZEOF_PG_STATE + model_arena + spec.task_stack

    # ---- bytes streamed per token -------------------------------------------------------------
    def row_bytes(name: str, rows: int) -> int:
        return types[name][1] // rows

    weight_read = 0
    macs_q8 = macs_scalar = 0
    matrices = []
    for i in range(L):
        for part, rows in (("attn_qkv", 3 * E), ("attn_output", E), ("ffn_up", F), ("ffn_down", E)):
            matrices.append((f"blk.{i}.{part}.weight", rows))
    head = "token_embd.weight" if tied else "output.weight"
    matrices.append((head, V))
    for name, rows in matrices:
        qtype, nbytes = types[name]
        weight_read += nbytes
        cols = E if not name.endswith("ffn_down.weight") else F
        n_mac = rows * cols
        if qtype == _Q8_0 and cols % 32 == 0:
            macs_q8 += n_mac
        else:
            macs_scalar += n_mac
    # the embedding lookups read one row each; the vectors (norms, biases) are read whole
    weight_read += row_bytes("token_embd.weight", V) if not tied else 0
    weight_read += row_bytes("position_embd.weight", cfg.n_ctx)
    weight_read += sum(b for n, (_, b) in types.items() if n.endswith((".bias", "norm.weight")))

    rates = counted_rates()

    def counted_instructions(pos: int) -> float:
        t = pos + 1
        r = rates
        assert r is not None
        return (macs_q8 * r.instr_per_q8_mac + macs_scalar * r.instr_per_scalar_mac
                + (macs_q8 + macs_scalar) * r.matmul_glue_per_mac
                + 2 * L * t * E * r.instr_per_attn_mac + L * F * r.instr_per_gelu
                + (2 * L + 1) * E * r.instr_per_norm_elem + V * r.instr_per_vocab_entry + r.other_per_token)

    def memory_seconds(pos: int) -> float:
        kv_read = 2 * L * (pos + 1) * kv_row
        w_bw = spec.psram_bw[cache_line] if weights_in == "psram" else spec.flash_bw
        return weight_read / w_bw + kv_read / spec.psram_bw[cache_line]

    def per_token(pos: int) -> tuple[float, int, int]:
        """Seconds, bytes read and MACs for the token at position `pos` (0-based)."""
        t = pos + 1
        kv_read = 2 * L * t * kv_row
        attn_macs = 2 * L * t * E
        seconds = memory_seconds(pos)
        cycles = (macs_q8 * spec.q8_cycles_per_mac + macs_scalar * spec.scalar_cycles_per_mac
                  + attn_macs * spec.float_cycles_per_mac
                  + L * H * t * spec.cycles_per_exp
                  + L * F * spec.cycles_per_gelu
                  + (2 * L + 1) * E * spec.cycles_per_norm_elem
                  + L * (3 * E + F) * spec.cycles_per_act_quant + E * spec.cycles_per_act_quant
                  + V * spec.cycles_per_logit_sample)
        seconds += cycles / spec.cpu_hz
        return seconds, weight_read + kv_read, macs_q8 + macs_scalar + attn_macs

    total_s = 0.0
    total_bytes = 0
    for p in range(n_ctx):
        s, b, _ = per_token(p)
        total_s += s
        total_bytes += b
    mean_tok_s = n_ctx / total_s
    counted_tok_s = counted_tok_s_full = None
    if rates is not None:
        counted_s = [memory_seconds(p) + counted_instructions(p) * rates.cpi / spec.cpu_hz for p in range(n_ctx)]
        counted_tok_s, counted_tok_s_full = n_ctx / sum(counted_s), 1.0 / counted_s[-1]
    last_s, _, last_macs = per_token(n_ctx - 1)
    mid = per_token(n_ctx // 2)

    limits = {"flash": spec.flash_limit, "psram": spec.psram_limit, "sram": spec.sram_limit,
              "tok_s": spec.target_tok_s}
    if flash > spec.flash_limit:
        problems.append(f"flash {_mib(flash)} exceeds {_mib(spec.flash_limit)}")
    if psram > spec.psram_limit:
        problems.append(f"PSRAM {_mib(psram)} exceeds {_mib(spec.psram_limit)}")
    if sram > spec.sram_limit:
        problems.append(f"internal RAM {sram / KIB:.1f} KiB exceeds {spec.sram_limit / KIB:.0f} KiB")
    if mean_tok_s < spec.target_tok_s:
        problems.append(f"modeled {mean_tok_s:.1f} tok/s is below the {spec.target_tok_s:.0f} tok/s goal")
    elif 1.0 / last_s < spec.target_tok_s:
        problems.append(f"modeled {1.0 / last_s:.1f} tok/s at the last position (the longest attention) is below "
                        f"the {spec.target_tok_s:.0f} tok/s goal")

    breakdown = {
        "file_bytes": file_bytes,
        "model_arena_bytes": model_arena,
        "state_arena_bytes": state,
        "kv_cache_bytes": 2 * L * n_ctx * kv_row,
        "weight_bytes_per_token": weight_read,
        "head_bytes_per_token": types[head][1],
        "kv_bytes_last": 2 * L * n_ctx * kv_row,
        "q8_pie_macs": macs_q8,
        "scalar_macs": macs_scalar,
        "attention_macs_last": last_macs - macs_q8 - macs_scalar,
        "seconds_per_token_mid": round(mid[0], 6),
        "counted_instructions_per_token_mid": round(counted_instructions(n_ctx // 2)) if rates else None,
        "counted_rates": asdict(rates) if rates else None,
    }
    assumptions = describe(spec, weights_in, cache_line, n_batch, kv)
    return BudgetReport(
        model=label, n_ctx=n_ctx, n_batch=n_batch, weights_in=weights_in, cache_line=cache_line,
        flash_bytes=flash, psram_bytes=psram, sram_bytes=sram,
        modeled_tok_s=mean_tok_s, modeled_tok_s_full=1.0 / last_s,
        counted_tok_s=counted_tok_s, counted_tok_s_full=counted_tok_s_full,
        bytes_per_token=int(total_bytes / n_ctx), macs_per_token=int(mid[2]),
        fits=not problems, limits=limits, breakdown=breakdown, assumptions=assumptions, problems=problems,
    )


def describe(spec: DeviceSpec = ESP32S3, weights_in: str = "psram", cache_line: int = 64, n_batch: int = 1,
             kv: str = "f32") -> list[str]:
    """The assumptions behind a report, one sentence each (docs/budget.md lists the same)."""
    w_bw = spec.psram_bw[cache_line] if weights_in == "psram" else spec.flash_bw
    return [
        "this is a model built from published ESP32-S3 figures, not a measurement: no board was attached",
        f"device: {spec.name}",
        f"limits: model partition <= {_mib(spec.flash_limit)}, PSRAM <= {_mib(spec.psram_limit)}, "
        f"engine internal RAM <= {spec.sram_limit // KIB} KiB, goal >= {spec.target_tok_s:.0f} tok/s",
        f"weights are read from {'PSRAM' if weights_in == 'psram' else 'flash'} at {w_bw / 1e6:.0f} MB/s every token"
        + (" (copied from flash to PSRAM at boot)" if weights_in == "psram" else " (in place through the cache)"),
        f"octal PSRAM reads {spec.psram_bw[cache_line] / 1e6:.0f} MB/s with {cache_line}-byte data cache lines "
        f"(published: " + ", ".join(f"{v / 1e6:.0f} MB/s at {k} B" for k, v in sorted(spec.psram_bw.items()))
        + f"); quad flash <= {spec.flash_bw / 1e6:.0f} MB/s raw",
        "every weight matrix is streamed once per token (the tied output head included), plus one row of each "
        "embedding and all norm/bias vectors; nothing stays in the 32 KB data cache between tokens",
        ("the KV cache is float32 (as the firmware's pg_state_init keeps it)" if kv == "f32" else
         f"the KV cache is stored {kv.upper()} (pg_state_init_kv; its conversion cost is not modeled)")
        + " and read whole up to the current position for attention",
        "memory streaming and arithmetic do not overlap (times add): conservative",
        f"Q8_0 matrices run the PIE int8 kernel ({spec.pie_macs_per_instr} MACs per EE.VMULAS.S8.ACCX) at an "
        f"achieved {spec.q8_cycles_per_mac} cycles per MAC (block copy to an aligned buffer, f16 scale, "
        f"accumulator read-out: "
        f"{spec.pie_macs_per_instr * spec.q8_cycles_per_mac:.0f}x below one instruction per cycle); other weight types take the portable "
        f"kernels at {spec.scalar_cycles_per_mac} cycles per MAC",
        f"attention over the float KV cache at {spec.float_cycles_per_mac} cycles per MAC (plain C, "
        f"esp-dsp's published plain-C float dot product); expf {spec.cycles_per_exp:.0f}, tanh GELU "
        f"{spec.cycles_per_gelu:.0f}, layernorm {spec.cycles_per_norm_elem:.0f} and activation quantization "
        f"{spec.cycles_per_act_quant:.0f} cycles per element; sampling {spec.cycles_per_logit_sample:.0f} "
        f"cycles per vocabulary entry",
        f"one core at {spec.cpu_hz / 1e6:.0f} MHz (splitting a matvec over both cores costs ~34 us per hand-off "
        "and is not counted as a gain)",
        "the counted figure replaces those cycle constants by instructions counted on the ESP32-S3 "
        "instruction set (tools/xtensa_check.py --count: builtin:device run in QEMU's S3 core, instructions per "
        "symbol) scaled to this model's shapes, the PIE kernel's instructions from its disassembly (5 per 16 "
        f"weights in the loop, {PIE_BLOCK_OUTSIDE_LOOP} more per 32-weight block, an assumed "
        f"{PIE_BLOCK_MEMCPY} for the block copy), times an assumed CPI of {CountedRates.cpi}; expf, tanhf and float "
        "division are the harness's own runtime (soft division), not newlib/libgcc; the memory term is the same",
        "tokens/s is the mean over generating a full context from position 0; the goal must also hold at the "
        "last position (the longest attention), which is shown too",
        f"memory counts the engine's own arenas (pg_model_mem_size, pg_state_mem_size) with 32-bit struct sizes, "
        f"n_batch {n_batch}; the session arena (KV cache, activations, logits, sampler scratch) lives in PSRAM; "
        f"the pg_model/pg_state structs, the model arena (layer table, tokenizer tables) and a "
        f"{spec.task_stack // KIB} KiB engine task stack live in internal RAM",
        f"flash counts the GGUF file rounded up to a {spec.partition_align // KIB} KiB partition; the "
        "application image, OTA slots and NVS are outside this budget",
    ]
