#!/usr/bin/env python3
"""Run the engine on the ESP32-S3 instruction set (QEMU's emulated core) and compare its tokens with
the host engine's.

    python tools/xtensa_check.py [--tokens N] [--count] [--model PATH]

Builds firmware/xtensa's bare-metal harness (the engine's portable `ref-q8` kernels, the harness's
own runtime library rt.c) with the cache's xtensa-esp32s3-elf-gcc, runs it in qemu-system-xtensa
-M sim -cpu esp32s3, and checks its greedy tokens (default repetition penalty) against
pocketgpt's host engine with the same kernel set and KV cache type. --count also measures executed
instructions per decoded token by function (a TCG plugin counting per symbol; two runs of
different lengths, the difference divided by the extra tokens) and writes them with the static
count of the PIE kernel's inner loop to build/xtensa/counts.json (read by `pocketgpt export-c`'s
budget report).

The toolchain cache is made by tools/esp32s3-toolchain.sh (docs/xtensa.md); when it is missing this
prints one line saying so and exits 2. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pocketgpt.srclists import engine_sources

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "firmware" / "engine"
HARNESS = ROOT / "firmware" / "xtensa"
OUT = ROOT / "build" / "xtensa"
DEFAULT_MODEL = ROOT / "host" / "pocketgpt" / "data" / "models" / "device.gguf"
BLOB_ADDR = 0x3E000000
PARAMS_ADDR = 0x3DFFFF00
MAKE_CMD = ("tools/esp32s3-toolchain.sh --dynconfig DIR --overlays DIR --esp-idf DIR "
            "(docs/xtensa.md says where the trees come from)")
# warnings are errors in all of this tool's builds, as in the project's other C builds
WARN = ["-Wall", "-Wextra", "-Werror"]
# the flags of the emulated build: -ffp-contract=off keeps a*b+c two roundings (madd.s would fuse
# them), as on the host, so the two runs can agree bit for bit
XT_CFLAGS = ["-std=c11", "-O2", "-mlongcalls", "-ffp-contract=off", *WARN, f"-I{HARNESS / 'include'}", f"-I{ENGINE}"]

# function -> part of the forward pass, for the per-token table
CATEGORY = [
    ("matmul", r"^(matmul.*|pg_matmul|store_tile.*|quant_row|pg_quantize_act.*|pg_quantize_q8_0|pg_dot_q8.*|dot_q[0-9].*|"
               r"dot_iq.*|dot_blocks_ref|dq_.*|pg_dequant.*|f16|pg_k_rows16_prepare|pg_run_rows|pg_run_tasks|pg_rows_task|scale_min_k4|q3_k_scales)$"),
    ("attention", r"^(attn_task|kv_store|kv_row|axpy_.*|exp_sum_ref|dot_f32_ref|dot_f16_ref)$"),
    ("norm", r"^(layernorm|norm_row|sqrtf)$"),
    ("gelu", r"^(gelu_row|gelu_ref|tanhf|expm1f)$"),
    ("sampler", r"^(pg_sample|argmax.*|heap_down|sort_desc|any8.*|pg_rng.*)$"),
    ("tokenizer", r"^(pg_tokenizer.*|merge_slot.*|lookup_token|classify|utf8_next|spelling_to_bytes|heap_push|pg_textout.*)$"),
    ("runtime (rt.c)", r"^(memcpy|memset|memmove|memcmp|memchr|strlen|__divsf3|pack_round|__truncdfsf2"
                       r"|__u?divdi3|__u?moddi3|udivmod64|fabsf)$"),
]


def say(msg: str) -> None:
    print(f"xtensa-check: {msg}", flush=True)


def cache_dir() -> Path:
    return Path(os.environ.get("POCKETGPT_XTENSA_CACHE", Path.home() / ".cache" / "pocketgpt-xtensa"))


def missing_tools(cache: Path) -> list[str]:
    need = ["bin/xtensa-esp32s3-elf-gcc", "bin/xtensa-esp32s3-elf-ld", "bin/xtensa-esp32s3-elf-objdump",
            "bin/qemu-system-xtensa", "include/qemu-plugin.h"]
    return [n for n in need if not (cache / n).exists()]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"xtensa-check: {' '.join(map(str, cmd[:3]))}... failed (exit {p.returncode})")
    return p


def build(cache: Path) -> tuple[Path, Path]:
    """The harness ELF for the S3 core and the counting plugin."""
    OUT.mkdir(parents=True, exist_ok=True)
    xt = lambda t: str(cache / "bin" / f"xtensa-esp32s3-elf-{t}")  # noqa: E731
    objs = []
    for src in engine_sources(ENGINE, "esp32s3"):  # engine.mk: portable + the chip's (here without PIE)
        o = OUT / f"{src.stem}.o"
        run([xt("gcc"), *XT_CFLAGS, "-c", str(src), "-o", str(o)])
        objs.append(o)
    run([xt("gcc"), *XT_CFLAGS, "-c", str(HARNESS / "harness.c"), "-o", str(OUT / "harness.o")])
    run([xt("gcc"), *XT_CFLAGS, "-ffreestanding", "-fno-builtin", "-fno-tree-loop-distribute-patterns",
         "-c", str(HARNESS / "rt.c"), "-o", str(OUT / "rt.o")])
    run([xt("gcc"), "-c", str(HARNESS / "start.S"), "-o", str(OUT / "start.o")])
    elf = OUT / "harness.elf"
    run([xt("ld"), "-T", str(HARNESS / "link.ld"), "-o", str(elf), str(OUT / "start.o"), str(OUT / "harness.o"),
         str(OUT / "rt.o"), *map(str, objs)])
    plugin = OUT / "insn_count_plugin.so"
    run(["cc", "-O2", *WARN, "-shared", "-fPIC", f"-I{cache / 'include'}", "-o", str(plugin),
         str(HARNESS / "insn_count_plugin.c")])
    return elf, plugin


def build_host(out: Path) -> Path:
    """The same harness and runtime library built for this machine: its logits must be the emulated
    run's bit for bit (same float operations, same expf/tanhf/sqrtf/division code)."""
    exe = out / "harness_host"
    flags = ["-std=c11", "-O2", "-ffp-contract=off", *WARN, f"-I{ENGINE}"]
    run(["cc", *flags, "-ffreestanding", "-fno-builtin", "-fno-tree-loop-distribute-patterns",
         f"-I{HARNESS / 'include'}", "-c", str(HARNESS / "rt.c"), "-o", str(out / "rt_host.o")])
    srcs = [str(p) for p in engine_sources(ENGINE, "x86")]
    run(["cc", *flags, "-DPG_HARNESS_HOST", "-o", str(exe), str(HARNESS / "harness.c"), str(out / "rt_host.o"), *srcs])
    return exe


def qemu(cache: Path, elf: Path, model: Path, n_gen: int, plugin: str | None = None) -> str:
    cmd = [str(cache / "bin" / "qemu-system-xtensa"), "-M", "sim", "-cpu", "esp32s3", "-nographic",
           "-monitor", "none", "-semihosting",
           "-device", f"loader,file={elf},cpu-num=0",
           "-device", f"loader,file={model},addr={BLOB_ADDR:#x},force-raw=on",
           "-device", f"loader,addr={PARAMS_ADDR:#x},data={model.stat().st_size},data-len=4",
           "-device", f"loader,addr={PARAMS_ADDR + 4:#x},data={n_gen},data-len=4"]
    if plugin:
        cmd += ["-plugin", plugin]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        cause = f" (Xtensa exception cause {p.returncode - 100})" if 100 <= p.returncode < 164 else ""
        raise SystemExit(f"xtensa-check: the harness failed in QEMU with exit {p.returncode}{cause}")
    return p.stdout


def parse(out: str) -> tuple[list[int], list[int], str, str]:
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    if "tokens" not in lines:
        raise SystemExit(f"xtensa-check: the harness printed no tokens:\n{out}")
    return ([int(t) for t in lines["prompt"].split()], [int(t) for t in lines["tokens"].split()],
            lines.get("kernels", "?"), lines.get("logits-hash", "?"))


def host_tokens(model: Path, prompt: list[int], n_gen: int) -> list[int]:
    """The host engine (Python binding) with the harness's settings: ref-q8 kernels, F32 KV cache,
    prefill in chunks of 8, greedy with the default repetition penalty."""
    sys.path.insert(0, str(ROOT / "host"))
    import numpy as np

    from pocketgpt.engine import Engine, _native

    e = Engine(str(model), kernels="ref-q8", kv="f32", threads=1, n_batch=8)
    s = _native().Session(e._model, n_ctx=min(256, e.model_n_ctx), n_batch=8, kv_type=0)
    out = np.empty((len(prompt), e.n_vocab), np.float32)
    s.eval(prompt, out)
    hist, gen = list(prompt), []
    one = np.empty((1, e.n_vocab), np.float32)
    for i in range(n_gen):
        t = s.sample(hist, greedy=True)
        gen.append(t)
        hist.append(t)
        if i + 1 < n_gen:
            s.eval([t], one)
    return gen


def host_shape(model: Path) -> dict[str, int]:
    sys.path.insert(0, str(ROOT / "host"))
    from pocketgpt.engine import Engine

    e = Engine(str(model), threads=1)
    return {"n_layer": e.n_layer, "n_embd": e.n_embd, "n_ff": e.n_ff, "n_head": e.n_head, "n_vocab": e.n_vocab}


def symbol_ranges(cache: Path, elf: Path, path: Path) -> None:
    nm = run([str(cache / "bin" / "xtensa-esp32s3-elf-nm"), "-S", "--defined-only", str(elf)]).stdout
    rows = []
    for line in nm.splitlines():
        f = line.split()
        if len(f) == 4 and f[2] in "tT":
            start, size = int(f[0], 16), int(f[1], 16)
            if size > 3:  # a windowed function starts with its 3-byte ENTRY: counting it counts calls
                rows.append(f"{start:x} {start + 3:x} {f[3]}@calls")
                rows.append(f"{start + 3:x} {start + size:x} {f[3]}")
            elif size:
                rows.append(f"{start:x} {start + size:x} {f[3]}")
    path.write_text("\n".join(rows) + "\n")


def counts(cache: Path, elf: Path, plugin: Path, model: Path, n_gen: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        ranges, out = Path(tmp) / "ranges.txt", Path(tmp) / "counts.txt"
        symbol_ranges(cache, elf, ranges)
        qemu(cache, elf, model, n_gen, f"{plugin},ranges={ranges},out={out}")
        res: dict[str, int] = {}
        for line in out.read_text().splitlines():
            c, name = line.split(" ", 1)
            res[name] = int(c)
        # instructions per function include its ENTRY; calls are kept apart as "NAME@calls"
        for name in [n for n in res if n.endswith("@calls")]:
            res[name[:-6]] = res.get(name[:-6], 0) + res[name]
        return res


def category(fn: str) -> str:
    for cat, pat in CATEGORY:
        if re.match(pat, fn):
            return cat
    return "other (forward pass glue, harness)"


# the harness's float runtime serves several parts: split by calls. Attention calls expf once per
# score (one dot_f32_ref per score with the F32 KV cache); GELU's tanhf calls expm1f -> expf and
# divides once per element; what is left stays "runtime (rt.c)"
SHARED = {"expf": ("expf", "pow2i"), "div": ("__divsf3", "pack_round")}


def by_part(per_fn: dict[str, float], calls: dict[str, float]) -> dict[str, float]:
    per_cat: dict[str, float] = {}
    shared = {f for fs in SHARED.values() for f in fs}
    for fn, v in per_fn.items():
        if fn not in shared:
            per_cat[category(fn)] = per_cat.get(category(fn), 0.0) + v

    def split(key: str, entry: str, witness: str, first: str, rest: str) -> None:
        """Share the instructions of the shared functions by calls of entry: as many as the
        witness's calls go to first, the others to rest."""
        total = sum(per_fn.get(f, 0.0) for f in SHARED[key])
        n = calls.get(entry, 0.0)
        if n:
            part = min(n, calls.get(witness, 0.0))
            per_cat[first] = per_cat.get(first, 0.0) + total * part / n
            per_cat[rest] = per_cat.get(rest, 0.0) + total * (n - part) / n

    split("expf", "expf", "dot_f32_ref", "attention", "gelu")
    split("div", "__divsf3", "tanhf", "gelu", "runtime (rt.c)")
    return per_cat


def pie_loop(cache: Path) -> dict:
    """Assemble the PIE kernel (kernels_esp32s3.c with PG_TARGET_ESP32S3) and count its inner loop."""
    o = OUT / "kernels_esp32s3_pie.o"
    run([str(cache / "bin" / "xtensa-esp32s3-elf-gcc"), *XT_CFLAGS, "-DPG_TARGET_ESP32S3", "-c",
         str(ENGINE / "kernels_esp32s3.c"), "-o", str(o)])
    dis = run([str(cache / "bin" / "xtensa-esp32s3-elf-objdump"), "-d", str(o)]).stdout
    (OUT / "kernels_esp32s3_pie.dis").write_text(dis)
    insns = [ln.split("\t") for ln in dis.splitlines() if re.match(r"^\s+[0-9a-f]+:\t", ln)]
    ops = [(int(i[0].strip().rstrip(":"), 16), i[2].strip() if len(i) > 2 else "") for i in insns]
    # the loop: from the first ee.vld.128.ip to the backward bnez that closes it
    start = next(k for k, (_, op) in enumerate(ops) if op.startswith("ee.vld.128.ip"))
    end = next(k for k in range(start, len(ops)) if ops[k][1].startswith("bnez"))
    body = [op.split()[0] for _, op in ops[start:end + 1]]
    return {"loop_instructions": len(body), "loop_ops": body, "bytes_per_iteration": 16,
            "instructions_per_weight": round(len(body) / 16, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=40, help="tokens to generate (default 40)")
    ap.add_argument("--count", action="store_true", help="also count instructions per token by function")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF model (default builtin:device)")
    a = ap.parse_args(argv)
    cache = cache_dir()
    miss = missing_tools(cache)
    if miss:
        say(f"no ESP32-S3 toolchain in {cache} (missing {miss[0]}); make it with: {MAKE_CMD}")
        return 2
    if not a.model.is_file():
        say(f"{a.model}: no such model file")
        return 2
    if a.tokens < 1:
        say("--tokens must be at least 1")
        return 2
    elf, plugin = build(cache)
    prompt, dev, kern, dev_hash = parse(qemu(cache, elf, a.model, a.tokens))
    host = host_tokens(a.model, prompt, len(dev))
    p = subprocess.run([str(build_host(OUT)), str(a.model), str(a.tokens)], capture_output=True, text=True)
    _, native, _, native_hash = parse(p.stdout)
    say(f"{len(prompt)}-token prompt, {len(dev)} tokens generated on the emulated ESP32-S3 (kernels {kern})")
    say(f"device: {' '.join(map(str, dev))}")
    if dev != host:
        k = next(i for i, (x, y) in enumerate(zip(dev, host)) if x != y)
        say(f"host:   {' '.join(map(str, host))}")
        say(f"MISMATCH at token {k}: device {dev[k]}, host {host[k]}")
        return 1
    say(f"same {len(dev)} tokens as the host engine (ref-q8, F32 KV cache)")
    if native != dev or native_hash != dev_hash:
        say(f"MISMATCH with the harness built for this machine: logits hash {native_hash} here, {dev_hash} emulated")
        return 1
    say(f"logits of all {len(dev)} steps bit-identical to the same harness built for this machine (hash {dev_hash})")
    if a.count:
        short, long_ = 8, a.tokens
        if long_ <= short:
            say("--count needs --tokens above 8")
            return 2
        c1, c2 = counts(cache, elf, plugin, a.model, short), counts(cache, elf, plugin, a.model, long_)
        # the harness evaluates every generated token but the last: long_ - short more decode steps
        steps = long_ - short
        per = {fn: (c2.get(fn, 0) - c1.get(fn, 0)) / steps for fn in set(c1) | set(c2)}
        calls = {fn[:-6]: v for fn, v in per.items() if fn.endswith("@calls")}
        per_fn = {fn: v for fn, v in per.items() if not fn.endswith("@calls")}
        per_cat = by_part(per_fn, calls)
        total = sum(per_fn.values())
        shape = host_shape(a.model)
        res = {"model": str(a.model.relative_to(ROOT) if a.model.is_relative_to(ROOT) else a.model),
               "shape": shape, "tokens_measured": [short, long_],
               "prompt_tokens": len(prompt), "decode_steps_measured": steps,
               "positions": [len(prompt) + short, len(prompt) + long_],
               "kernels": kern, "instructions_per_token": round(total),
               "by_part": {k: round(v) for k, v in sorted(per_cat.items(), key=lambda kv: -kv[1])},
               "by_function": {k: round(v) for k, v in sorted(per_fn.items(), key=lambda kv: -kv[1]) if v >= 1},
               "calls_per_token": {k: round(v, 1) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.5},
               "prefill_and_setup_instructions": c1 and sum(c1.values()),
               "pie_q8_loop": pie_loop(cache),
               "tokens_equal_host": True}
        (OUT / "counts.json").write_text(json.dumps(res, indent=1) + "\n")
        say(f"{total:,.0f} instructions per decoded token (positions {res['positions'][0]}..{res['positions'][1]}):")
        for k, v in res["by_part"].items():
            say(f"  {k:36s} {v:>12,}  {100 * v / total:5.1f} %")
        p = res["pie_q8_loop"]
        say(f"PIE Q8 inner loop: {p['loop_instructions']} instructions per 16 int8 weights ({' '.join(p['loop_ops'])})")
        say(f"wrote {OUT / 'counts.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
