"""Host speed of the C engine on the q4 GPT-2 124M-shaped model against llama.cpp's own benchmark
tools on its Q4_0 of the same model (and HF transformers fp32), all in one run, same thread count;
and speculative decoding on builtin:host with builtin:device as its draft.

    bench/setup_llamacpp.sh --tools-only      # once: builds llama-bench, llama-batched-bench, llama-quantize
    python bench/speed.py [--threads 2] [--rounds 3] [--out bench/results/speed.json] [--doc docs/speed.md]

What it does:
  1. builds a GPT-2 124M-shaped model with random weights (transformers' initialisation, seed 0:
     speed depends on shapes and types, never time zeros), writes it as F32 GGUF;
  2. quantizes it with `pocketgpt quantize --type q4` (ours) and with llama.cpp's `llama-quantize`
     to Q4_0 (theirs; llama.cpp keeps the tied embedding at Q6_K and position_embd at F32);
  3. in each of `--rounds` interleaved rounds (a noisy neighbour hits every runtime alike; the best
     round counts, the median is shown too), each runtime in its own fresh process:
       - ours: prefill of 64 and of 512 tokens (pp64, pp512, best of 3 in the process) and decode
         of 128 tokens from an empty context, one `eval` of one token per call from Python (tg128);
       - `llama-bench -p 64,512 -n 128` (llama.cpp's C loop; its own warm-up run first);
       - aggregate decode of 1, 4 and 16 streams, each with its own 64-token prompt, 128 steps of
         one token per stream: ours one `Engine.decode_batch` per step (the forward pass alone, as
         `llama-batched-bench` times it: `-npp 64 -ntg 128 -npl 1,4,16`, its S_TG);
       - speculative decoding on builtin:host: plain greedy and speculative greedy (builtin:device
         drafting) on the same prompts, checked token for token, with the acceptance rate;
       - HF transformers fp32 (pp64/tg128 the same way as ours), unless --no-hf;
       - llama-cpp-python, if it is importable: the old anchor, labelled as such (a Python loop per
         token costs llama.cpp ~1 ms a token there; docs/speed.md explains);
  4. the roofline: bytes of weights read per decoded token (every tensor but the position table)
     times tok/s, against this machine's read bandwidth measured with the same thread count;
  5. resident memory (VmRSS) after filling a 1,024-token context;
  6. prints the table and the ratios, writes the JSON and the results section of docs/speed.md.

The machine is shared: the load average before and after is recorded; compare the ratios, which
come from one run, rather than absolute figures across runs.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT_LEN, DECODE_LEN, MEM_CTX = 64, 128, 1024
PP_LENS = (64, 512)
PP_REPEATS = 3  # a 64-token prefill takes ~0.05 s: the best of 3 per process, for every runtime
STREAMS = (1, 4, 16)
BATCH_PP, BATCH_TG = 64, 128  # llama-batched-bench -npp 64 -ntg 128: each stream's prompt, then steps
CACHE = Path(os.environ.get("CACHE", "~/.cache/pocketgpt-bench")).expanduser()
TOOLS = Path(os.environ.get("LLAMA_TOOLS", str(CACHE / "tools")))
# speculative decoding on builtin:host (128-token context): short prompts, 120 tokens each, greedy
SPEC_PROMPTS = ("The meaning of life is", "A man walks into a bar and", "Q: What is love?\nA:", "Never")
SPEC_TOKENS = 120


def token_ids(n: int, seed: int) -> list[int]:
    """Fixed pseudo-random ids below the special token, the same for every runtime."""
    import random

    rng = random.Random(seed)
    return [rng.randrange(256, 50000) for _ in range(n)]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ---- workers (each runs in a fresh process and prints one JSON line) --------------------------

# The memory workers run in a lean process (`python -c`, not this script, whose own imports cost
# ~4 MiB): a user's process that imports pocketgpt.engine, or the relay's modules ("relay"), then
# fills one 1,024-token session. The worker itself imports nothing before its last reading (json
# and re alone would add ~1 MiB that is the harness's, not the engine's); its token ids come from
# a small linear congruential generator instead of `random`. VmRSS counts the mapped file's pages
# once.
MEMORY_WORKER = """
import sys
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
bare = rss()
model, threads, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "memory-relay":
    import pocketgpt.relay.backends, pocketgpt.relay.server  # what `pocketgpt serve` imports
from pocketgpt.engine import Engine
base = rss()
kv = "f16" if mode == "memory-f16" else "q8_0"
eng = Engine(model, threads=threads, n_ctx=%d, kv=kv)
s = eng.session()
ids, x = [], 3
for _ in range(%d):
    x = (x * 1103515245 + 12345) %% 2147483648
    ids.append(256 + x %% 49744)
s._s.eval(ids)
final = rss()
import json
print(json.dumps({"rss_mb": final, "rss_before_engine_mb": base, "rss_bare_mb": bare, "kernels": eng.kernels,
                  "kv": kv, "session_bytes": s._s.mem_bytes}))
""" % (MEM_CTX, MEM_CTX)  # noqa: UP031 (a program as text: % leaves its braces alone)


def work_ours(model: str, threads: int, mode: str) -> dict:
    from pocketgpt.engine import Engine

    eng = Engine(model, threads=threads, n_ctx=MEM_CTX, kv="q8_0")
    if mode == "batch":
        out = {}
        for n in STREAMS:
            sessions = [eng.session() for _ in range(n)]
            for i, s in enumerate(sessions):  # each stream its own prompt, as llama-batched-bench
                s._s.eval(token_ids(BATCH_PP, 10 + i))
            feed = [token_ids(BATCH_TG, 100 + i) for i in range(n)]
            t = time.perf_counter()
            for step in range(BATCH_TG):
                eng._decode(sessions, [feed[i][step] for i in range(n)])
            out[str(n)] = n * BATCH_TG / (time.perf_counter() - t)
        return {"batch_tok_s": out, "kernels": eng.kernels}
    prompt, feed = token_ids(max(PP_LENS), 1), token_ids(DECODE_LEN, 2)
    s = eng.session()
    s._s.eval(prompt[:8])  # warm-up: page in the weights, start the workers
    res = {"kernels": eng.kernels, "kv": "q8_0"}
    for n in PP_LENS:
        pp = 0.0
        for _ in range(PP_REPEATS):
            s._s.reset()
            t = time.perf_counter()
            s._s.eval(prompt[:n])
            pp = max(pp, n / (time.perf_counter() - t))
        res[f"pp{n}_tok_s"] = pp
    s._s.reset()
    t = time.perf_counter()
    for tok in feed:  # from an empty context, as llama-bench's tg128
        s._s.eval([tok])
    res["tg128_tok_s"] = DECODE_LEN / (time.perf_counter() - t)
    return res


def work_spec(model: str, threads: int, mode: str) -> dict:
    """builtin:host greedy, plain and with builtin:device drafting, alternating per prompt: the
    same tokens (checked), wall time of each whole generation (prompt included)."""
    from pocketgpt.engine import Engine
    from pocketgpt.speculative import DEFAULT_K, Draft

    host = Engine("builtin:host", threads=threads)
    draft = Draft(host, "builtin:device", k=int(mode) if mode.isdigit() else DEFAULT_K)
    sess = host.session()
    kw = dict(max_tokens=SPEC_TOKENS, greedy=True, repeat_penalty=1.0, stop_at_eos=False)
    list(sess.generate(SPEC_PROMPTS[0], **{**kw, "max_tokens": 8}))  # warm-up
    t_plain = t_spec = 0.0
    n = proposed = accepted = 0
    same = True
    for prompt in SPEC_PROMPTS:
        t = time.perf_counter()
        a = [p.token for p in sess.generate(prompt, **kw)]
        t_plain += time.perf_counter() - t
        t = time.perf_counter()
        b = [p.token for p in sess.generate(prompt, draft=draft, **kw)]
        t_spec += time.perf_counter() - t
        st = sess.last_stats
        proposed += st.get("draft_proposed", 0)
        accepted += st.get("draft_accepted", 0)
        same = same and a == b
        n += len(a)
    # what a verification pass costs against a one-token pass (target alone, logits of every row, as
    # spec_round asks): the ceiling of any draft, even one that is always right, is B / cost(B)
    import numpy as np

    s, ids, pass_ms = host.session()._s, list(range(300, 340)), {}
    for b in sorted({1, draft.k + 1, 8}):
        rows, best = np.empty((b, host.n_vocab), dtype=np.float32), float("inf")
        for _ in range(20):
            s.reset()
            s.eval(ids[:20])
            t = time.perf_counter()
            s.eval(ids[20:20 + b], rows)
            best = min(best, time.perf_counter() - t)
        pass_ms[str(b)] = best * 1e3
    return {"plain_tok_s": n / t_plain, "spec_tok_s": n / t_spec, "identical": same, "k": draft.k,
            "acceptance": accepted / max(proposed, 1), "tokens": n, "pass_ms": pass_ms}


def llama_bench(model: str, threads: int, pp: tuple[int, ...] = PP_LENS, tg: int = DECODE_LEN) -> dict:
    """llama.cpp's llama-bench: pp64, pp512 and tg128 in one process (its warm-up run first)."""
    cmd = [str(TOOLS / "llama-bench"), "-m", model, "-t", str(threads), "-p", ",".join(map(str, pp)),
           "-n", str(tg), "-r", "1", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed: {proc.stderr.strip()[-2000:]}")
    res = {}
    for r in json.loads(proc.stdout):
        key = f"pp{r['n_prompt']}_tok_s" if r["n_gen"] == 0 else f"tg{r['n_gen']}_tok_s"
        res[key] = r["avg_ts"]
        res["build"] = f"{r.get('build_commit', '?')} ({r.get('build_number', '?')})"
        res["kv"] = r.get("type_k", "f16")
    return res


def llama_batched_bench(model: str, threads: int) -> dict:
    """llama.cpp's llama-batched-bench: S_TG (aggregate decode tok/s) for 1, 4 and 16 sequences."""
    n_kv = max(STREAMS) * (BATCH_PP + BATCH_TG)
    cmd = [str(TOOLS / "llama-batched-bench"), "-m", model, "-t", str(threads), "-tb", str(threads),
           "-c", str(n_kv), "-b", "2048", "-ub", "512", "-npp", str(BATCH_PP), "-ntg", str(BATCH_TG),
           "-npl", ",".join(map(str, STREAMS)), "--output-format", "jsonl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-batched-bench failed: {proc.stderr.strip()[-2000:]}")
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            out[str(r["pl"])] = r["speed_tg"]
    return {"batch_tok_s": out}


def work_llama(model: str, threads: int, mode: str) -> dict:
    import llama_cpp

    base = rss_mb()
    llm = llama_cpp.Llama(model_path=model, n_ctx=MEM_CTX, n_batch=PROMPT_LEN if mode != "memory" else 512,
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    if mode == "memory":
        ids = token_ids(MEM_CTX, 3)
        llm.eval(ids)
        return {"rss_mb": rss_mb(), "rss_before_engine_mb": base, "version": llama_cpp.__version__}
    prompt, feed = token_ids(PROMPT_LEN, 1), token_ids(DECODE_LEN, 2)
    llm.eval(prompt[:8])
    pp = 0.0
    for _ in range(PP_REPEATS):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        pp = max(pp, PROMPT_LEN / (time.perf_counter() - t))
    t = time.perf_counter()
    for tok in feed:
        llm.eval([tok])
    tg = DECODE_LEN / (time.perf_counter() - t)
    return {"pp64_tok_s": pp, "tg128_tok_s": tg, "version": llama_cpp.__version__}


def work_hf(model: str, threads: int, mode: str) -> dict:
    """transformers fp32 with its KV cache, on a model of the same shapes (values do not matter)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(activation_function="gelu_new")).eval()
    prompt, feed = token_ids(PROMPT_LEN, 1), token_ids(DECODE_LEN, 2)
    with torch.no_grad():
        m(torch.tensor([prompt[:8]]), use_cache=True)
        pp = 0.0
        for _ in range(PP_REPEATS):
            t = time.perf_counter()
            out = m(torch.tensor([prompt]), use_cache=True)
            pp = max(pp, PROMPT_LEN / (time.perf_counter() - t))
        past = out.past_key_values
        t = time.perf_counter()
        for tok in feed:
            out = m(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
        tg = DECODE_LEN / (time.perf_counter() - t)
    return {"pp64_tok_s": pp, "tg128_tok_s": tg, "version": __import__("transformers").__version__}


WORKERS = {"ours": work_ours, "spec": work_spec, "llama": work_llama, "hf": work_hf}


def run_worker(name: str, model: str, threads: int, mode: str = "speed", bytecode: str | None = None) -> dict:
    """One worker in a fresh process. bytecode: a folder for compiled modules (PYTHONPYCACHEPREFIX),
    filled by a first run and read by the measured one, as in a user's process once Python has
    written __pycache__ (or after a wheel install); None leaves the environment's setting (this
    machine sets PYTHONDONTWRITEBYTECODE, so every import compiles from source)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT / "host"))
    if name == "ours" and mode.startswith("memory"):
        cmd = [sys.executable, "-c", MEMORY_WORKER, model, str(threads), mode]
    else:
        cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--threads", str(threads), "--mode", mode]
    if bytecode is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = bytecode
        subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)  # writes the bytecode
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {mode} worker failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def c_memory(model: str, tmp: Path) -> dict | None:
    """The engine's resident memory without Python: firmware/engine/tests/bench_memory.c built with
    the system C compiler (None when there is none), the same file and a Q8_0 KV cache for 1,024
    positions, filled by one evaluation."""
    import shutil

    from pocketgpt.srclists import engine_sources

    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        return None
    eng = ROOT / "firmware" / "engine"
    exe = tmp / "bench_memory"
    srcs = [str(eng / "tests" / "bench_memory.c")] + [str(p) for p in engine_sources(eng)]
    subprocess.run([cc, "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", f"-I{eng}", "-o", str(exe),
                    *srcs, "-lm"], check=True, capture_output=True)
    proc = subprocess.run([str(exe), model, str(MEM_CTX)], capture_output=True, text=True, check=True, timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- set-up ---------------------------------------------------------------------------------

def build_models(tmp: Path, have_tools: bool, have_llama_py: bool) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from pocketgpt import hf
    from pocketgpt.gguf_io import store_tensors, write_gguf
    from pocketgpt.quant import formats
    from pocketgpt.tokenizer import gpt2_vocab

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(activation_function="gelu_new")).eval()
    cfg, tensors, _ = hf.hf_to_tensors(model)
    f32 = tmp / "gpt2-124m-f32.gguf"
    write_gguf(f32, cfg, gpt2_vocab(), store_tensors(tensors, lambda n, a: formats.F32), name="gpt2-124m-random")
    del model, tensors
    ours = tmp / "gpt2-124m-q4.gguf"
    subprocess.run([sys.executable, "-m", "pocketgpt", "quantize", str(f32), str(ours), "--type", "q4"], check=True,
                   capture_output=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "host")))
    out = {"ours": str(ours), "ours_bytes": ours.stat().st_size, "f32": str(f32)}
    if have_tools or have_llama_py:
        theirs = tmp / "gpt2-124m-llamacpp-q4_0.gguf"
        if have_tools:
            subprocess.run([str(TOOLS / "llama-quantize"), str(f32), str(theirs), "Q4_0", "2"], check=True,
                           capture_output=True)
        else:
            import llama_cpp

            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
            p.nthread = 2
            if llama_cpp.llama_model_quantize(str(f32).encode(), str(theirs).encode(), p) != 0:
                raise RuntimeError("llama.cpp's quantizer failed on the F32 model")
        out["llama"] = str(theirs)
        out["llama_bytes"] = theirs.stat().st_size
    return out


def bytes_per_token(path: str) -> int:
    """Bytes of tensors one decoded token reads: all of them but the position table (one row)."""
    import gguf

    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors if not t.name.startswith("position_embd"))


BANDWIDTH_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>
#define MB (1u << 20)
static size_t n_per; static char *buf; static volatile long long sink;
static void *reader(void *arg) {
    const __m256i *p = (const __m256i *)(buf + (size_t)arg * n_per);
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < n_per / 32; i += 4) {
        a = _mm256_xor_si256(a, _mm256_load_si256(p + i)); b = _mm256_xor_si256(b, _mm256_load_si256(p + i + 1));
        c = _mm256_xor_si256(c, _mm256_load_si256(p + i + 2)); d = _mm256_xor_si256(d, _mm256_load_si256(p + i + 3));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    sink += _mm256_extract_epi64(a, 0);
    return NULL;
}
int main(int argc, char **argv) {
    int t = atoi(argv[1]); size_t total = (size_t)256 * MB;
    n_per = total / t; buf = aligned_alloc(64, total); memset(buf, 1, total);
    double best = 0;
    for (int r = 0; r < 8; r++) {
        pthread_t th[64]; struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < t; i++) pthread_create(&th[i], NULL, reader, (void *)i);
        for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double s = (b.tv_sec - a.tv_sec) + 1e-9 * (b.tv_nsec - a.tv_nsec);
        if (total / s > best) best = total / s;
    }
    printf("%f\n", best / 1e9);
    return 0;
}
"""


def read_bandwidth(threads: int, tmp: Path) -> float | None:
    """GB/s that `threads` threads read from a 256 MiB buffer (far beyond the caches), best of 8."""
    import shutil

    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        return None
    src, exe = tmp / "bw.c", tmp / "bw"
    src.write_text(BANDWIDTH_C)
    subprocess.run([cc, "-O2", "-mavx2", "-pthread", "-o", str(exe), str(src)], check=True, capture_output=True)
    return float(subprocess.run([str(exe), str(threads)], capture_output=True, text=True, check=True).stdout)


def machine() -> dict:
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        m = re.search(r"model name\s*:\s*(.+)", text)
        name = m.group(1).strip() if m else name
        flags = re.search(r"flags\s*:\s*(.+)", text)
        isa = [x for x in ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni") if flags and x in flags.group(1).split()]
    except OSError:
        isa = []
    return {"cpu": name, "cores": os.cpu_count(), "isa": isa, "os": platform.system(), "python": platform.python_version()}


def summarize(rows: list[dict]) -> dict:
    """best and median of every *_tok_s figure over the rounds."""
    out: dict = {"rounds": rows}
    for key in rows[0]:
        if key.endswith("_tok_s"):
            vals = [r[key] for r in rows]
            out[key[:-6] + "_best"], out[key[:-6] + "_median"] = max(vals), statistics.median(vals)
    for key in ("kernels", "version", "build", "kv"):
        if key in rows[0]:
            out[key] = rows[0][key]
    return out


def per_round(a: dict, b: dict, key: str) -> list[float]:
    """Each round's own ratio of a key between two summarized runtimes: the rounds interleave, so a
    round's two figures come from the same minutes, and a fast round of one side against a slow
    round of the other cannot make best-against-best say more than it is."""
    return [ra[f"{key}_tok_s"] / rb[f"{key}_tok_s"] for ra, rb in zip(a["rounds"], b["rounds"])]


def render(res: dict) -> str:
    r, m, rt = res["results"], res["machine"], res["ratios"]
    o = r["ours"]
    lb = r.get("llama_bench")
    lines = [f"Measured {res['date']} by `bench/speed.py` on {m['cpu']} ({m['cores']} cores; "
             f"{', '.join(m['isa'])}), {res['threads']} threads for every runtime, best of {res['rounds']} interleaved "
             f"rounds (median in brackets). Load average {res['load_before'][0]:.2f} before, "
             f"{res['load_after'][0]:.2f} after (1-minute; the machine is shared: "
             f"{res.get('load_note', 'compare the ratios, which come from the same minutes')}).", ""]
    lines += ["| runtime | file | decode tg128 tok/s | prefill pp64 tok/s | prefill pp512 tok/s |",
              "|---|---|---|---|---|"]

    def cell(d: dict, key: str, fmt: str) -> str:
        if f"{key}_best" not in d:
            return "—"
        return f"{d[key + '_best']:{fmt}} ({d[key + '_median']:{fmt}})"

    def row(name: str, d: dict, size: int | None) -> str:
        f = f"{size / 1e6:.1f} MB" if size else "—"
        return f"| {name} | {f} | {cell(d, 'tg128', '.1f')} | {cell(d, 'pp64', '.0f')} | {cell(d, 'pp512', '.0f')} |"

    lines.append(row(f"pocketgpt engine, q4 ({o['kernels']}, KV cache Q8_0)", o, res["files"]["ours_bytes"]))
    if lb:
        lines.append(row(f"llama.cpp `llama-bench`, Q4_0 (build {lb.get('build', '?')}, KV cache {lb.get('kv', 'f16')})",
                         lb, res["files"].get("llama_bytes")))
    if "llama_py" in r:
        lines.append(row(f"llama.cpp through llama-cpp-python {r['llama_py'].get('version', '')}, Q4_0 (a Python call "
                         "per token: not the anchor)", r["llama_py"], res["files"].get("llama_bytes")))
    if "hf" in r:
        lines.append(row(f"HF transformers {r['hf'].get('version', '')} fp32", r["hf"], None))
    lines += ["", "Ratios (same run; best round against best round, medians in brackets, then each round's "
              "own ratio):", ""]

    rounds_of: dict[str, list[float]] = {}
    if lb:
        for key in ("tg128", "pp64", "pp512"):
            rounds_of[f"{key}_vs_llama_bench"] = per_round(o, lb, key)
    if "llama_batched" in r:
        for n in STREAMS:
            rounds_of[f"batch{n}_vs_llama"] = per_round(r["ours_batch"], r["llama_batched"], str(n))

    def ratio(name: str, goal: str | None = None) -> str:
        b, md = rt[name]
        rounds = rounds_of.get(name)
        each = (f"; each round {', '.join(f'{x:.2f}' for x in rounds)} (median {statistics.median(rounds):.2f}×)"
                if rounds else "")
        return f"**{b:.2f}×** ({md:.2f}×){each}" + (f", goal {goal}" if goal else "")

    if lb:
        lines.append(f"- decode tg128: {ratio('tg128_vs_llama_bench', '≥ 1.5×')} llama-bench")
        lines.append(f"- prefill pp64: {ratio('pp64_vs_llama_bench', '≥ 1×')}; pp512: {ratio('pp512_vs_llama_bench', '≥ 1×')}")
    if "batch4_vs_llama" in rt:
        lines.append(f"- aggregate decode, 4 streams: {ratio('batch4_vs_llama', '≥ 1.5×')} llama-batched-bench; "
                     f"16 streams: {ratio('batch16_vs_llama', '≥ 1.5×')}; 1 stream: {ratio('batch1_vs_llama')}")
    if "tg128_vs_hf" in rt:
        lines.append(f"- decode: {ratio('tg128_vs_hf', '≥ 6.5×')} HF fp32")
    if "tg128_vs_llama_py" in rt:
        lines.append(f"- decode against llama-cpp-python (the old anchor): {ratio('tg128_vs_llama_py')}")
    sp = r.get("spec")
    if sp:
        lines += ["", f"Speculative decoding on builtin:host (greedy, repeat penalty 1, {sp['tokens']} tokens over "
                  f"{len(SPEC_PROMPTS)} short prompts, wall time with the prompt; builtin:device drafts "
                  f"{sp['k']} tokens a round):", "",
                  "| builtin:host | tok/s | |", "|---|---|---|"]
        lh = r.get("llama_bench_host")
        vs = (f"; {rt['plain_vs_llama_bench'][0]:.2f}× ({rt['plain_vs_llama_bench'][1]:.2f}×) llama-bench"
              if lh else "")
        lines += [f"| plain greedy | {sp['plain_best']:.0f} ({sp['plain_median']:.0f}) | {vs[2:]} |",
                  f"| speculative | {sp['spec_best']:.0f} ({sp['spec_median']:.0f}) | "
                  f"**{rt['spec_vs_plain'][0]:.2f}×** ({rt['spec_vs_plain'][1]:.2f}×) plain"
                  + (f", **{rt['spec_vs_llama_bench'][0]:.2f}×** ({rt['spec_vs_llama_bench'][1]:.2f}×) llama-bench"
                     if lh else "")
                  + f", goal ≥ 2×; acceptance {sp['acceptance']:.0%}; tokens identical to plain greedy in every "
                  f"round: {'yes' if sp['identical'] else '**NO**'} |"]
        if lh:
            lines.append(f"| llama.cpp `llama-bench -n {SPEC_TOKENS}` on the same file | "
                         f"{lh[f'tg{SPEC_TOKENS}_best']:.0f} ({lh[f'tg{SPEC_TOKENS}_median']:.0f}) | |")
        pm = sp.get("pass_ms")
        if pm:
            one = pm["1"]
            cells = [f"{b} tokens {pm[b]:.3f} ms ({pm[b] / one:.2f}×, so at most {int(b) / (pm[b] / one):.2f}× with "
                     f"every proposal kept)" for b in sorted(pm, key=int) if b != "1"]
            lines += ["", f"What a verification pass of builtin:host costs (best of 20 per round, logits of every row): "
                      f"1 token {one:.3f} ms; " + "; ".join(cells) + ". A draft that is always right and free would "
                      "still be bounded by these."]
    rf = r.get("roofline")
    if rf:
        lines += ["", f"Roofline (decode tg128, best round; this machine reads {rf['bandwidth_gb_s']:.1f} GB/s with "
                  f"{res['threads']} threads, a 256 MiB buffer):", "",
                  "| runtime | bytes read per token | × tok/s = GB/s | share of the measured bandwidth |",
                  "|---|---|---|---|"]
        for name, key in (("pocketgpt q4", "ours"), ("llama.cpp Q4_0", "llama")):
            if key in rf:
                bpt, gbs = rf[key]["bytes_per_token"], rf[key]["gb_s"]
                lines.append(f"| {name} | {bpt / 1e6:.1f} MB | {gbs:.1f} | {gbs / rf['bandwidth_gb_s']:.0%} |")
    b, lbb = r["ours_batch"], r.get("llama_batched")
    lines += ["", f"Aggregate decode tok/s, each stream with its own {BATCH_PP}-token prompt, then {BATCH_TG} steps "
              "(ours: `Engine.decode_batch`, one forward pass per step for all streams; llama.cpp: "
              f"`llama-batched-bench -npp {BATCH_PP} -ntg {BATCH_TG}`, S_TG):", ""]
    runs = [("ours", b)] + ([("llama-batched-bench Q4_0", lbb)] if lbb else [])
    lines += ["| streams | " + " | ".join(f"{name} aggregate | per stream" for name, _ in runs) + " |",
              "|---|" + "---|---|" * len(runs)]
    for n in STREAMS:
        lines.append(f"| {n} | " + " | ".join(f"{d[str(n) + '_best']:.0f} ({d[str(n) + '_median']:.0f}) | "
                                              f"{d[str(n) + '_best'] / n:.1f}" for _, d in runs) + " |")
    if "ours_memory" in r:
        mem = r["ours_memory"]
        goal = res["files"]["ours_bytes"] / 2**20 + 32
        lines += [""]
        if "ours_memory_c" in r:
            c = r["ours_memory_c"]
            lines.append(f"- memory, engine without Python (firmware/engine/tests/bench_memory.c: mapped file, Q8_0 KV "
                         f"cache, 1,024 tokens evaluated): RSS {c['rss_mib']:.1f} MiB against a goal of file + 32 MiB = "
                         f"{goal:.1f} MiB ({'met' if c['rss_mib'] <= goal else 'missed'})")
        pyc = r.get("ours_memory_pyc")
        if pyc:
            lines.append(f"- memory, Python process with compiled bytecode (as once Python has written __pycache__, "
                         f"or after a wheel install): RSS {pyc['rss_mb']:.1f} MiB "
                         f"({'met' if pyc['rss_mb'] <= goal else 'missed'}); {pyc['rss_before_engine_mb']:.1f} MiB "
                         "with pocketgpt.engine imported")
        how = " compiling every module from source (PYTHONDONTWRITEBYTECODE, as this machine sets it)" if pyc else ""
        lines.append(f"- memory, Python process{how}: RSS {mem['rss_mb']:.1f} MiB ({'met' if mem['rss_mb'] <= goal else 'missed'}); "
                     f"{mem['rss_before_engine_mb']:.1f} MiB with pocketgpt.engine imported; with the default F16 KV "
                     f"cache {r['ours_memory_f16']['rss_mb']:.1f} MiB")
        if "llama_py_memory" in r:
            lines.append(f"- memory, llama-cpp-python: RSS {r['llama_py_memory']['rss_mb']:.0f} MiB")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="leave HF transformers out (saves ~15 s a round)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "speed.md"))
    ap.add_argument("--no-doc", action="store_true", help="print only; do not touch the JSON or the doc")
    ap.add_argument("--json-only", action="store_true", help="write the JSON (--out) but not the doc")
    ap.add_argument("--render", metavar="JSON", help="rewrite the doc's results section from a saved JSON, no timing")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="speed", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.model, args.threads, args.mode)))
        return 0
    if args.render:
        table = render(json.loads(Path(args.render).read_text()))
        print(table)
        if not args.no_doc:
            write_doc(Path(args.doc), table)
        return 0

    have_tools = all((TOOLS / t).exists() for t in ("llama-bench", "llama-batched-bench", "llama-quantize"))
    if not have_tools:
        print(f"llama.cpp's tools are not in {TOOLS}: llama.cpp is left out (run bench/setup_llamacpp.sh --tools-only)")
    try:
        import llama_cpp  # noqa: F401
        have_py = True
    except ImportError:
        have_py = False
    load_before = os.getloadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="pg-speed-") as tmp:
        files = build_models(Path(tmp), have_tools, have_py)
        rounds: dict[str, list[dict]] = {}

        def add(name: str, row: dict) -> None:
            rounds.setdefault(name, []).append(row)
            figs = [f"{k[:-6]} {v:.0f}" for k, v in row.items() if k.endswith("_tok_s") and not isinstance(v, dict)]
            figs += [f"{k} streams {v:.0f}" for k, v in row.get("batch_tok_s", {}).items()]
            figs = ", ".join(figs)
            if name == "spec":
                figs += f", acceptance {row['acceptance']:.2f}, identical {row['identical']}"
            print(f"round {len(rounds[name])}: {name}: {figs or row}", flush=True)

        for _ in range(args.rounds):
            add("ours", run_worker("ours", files["ours"], args.threads))
            if have_tools:
                add("llama_bench", llama_bench(files["llama"], args.threads))
            add("ours_batch", run_worker("ours", files["ours"], args.threads, "batch"))
            if have_tools:
                add("llama_batched", llama_batched_bench(files["llama"], args.threads))
            add("spec", run_worker("spec", "builtin:host", args.threads))
            if have_tools:  # llama.cpp reads builtin:host's file as it is (ggml block types)
                from pocketgpt.models import resolve

                add("llama_bench_host", llama_bench(str(resolve("builtin:host")), args.threads, (8,), SPEC_TOKENS))
            if not args.no_hf:
                add("hf", run_worker("hf", files["f32"], args.threads))
            if have_py:
                add("llama_py", run_worker("llama", files["llama"], args.threads))
        for name, rows in rounds.items():
            if "batch_tok_s" in rows[0]:
                results[name] = summarize([{f"{n}_tok_s": row["batch_tok_s"][str(n)] for n in STREAMS} for row in rows])
            elif name == "spec":
                results[name] = {**summarize(rows), "identical": all(r["identical"] for r in rows), "k": rows[0]["k"],
                                 "tokens": rows[0]["tokens"], "acceptance": statistics.mean(r["acceptance"] for r in rows),
                                 "pass_ms": {b: min(r["pass_ms"][b] for r in rows) for b in rows[0]["pass_ms"]}}
            else:
                results[name] = summarize(rows)
        bw = read_bandwidth(args.threads, Path(tmp))
        if bw:
            rf: dict = {"bandwidth_gb_s": bw}
            for key, name in (("ours", "ours"), ("llama", "llama_bench")):
                if key in files and name in results:
                    bpt = bytes_per_token(files[key])
                    rf[key] = {"bytes_per_token": bpt, "gb_s": bpt * results[name]["tg128_best"] / 1e9}
            results["roofline"] = rf
        results["ours_memory"] = run_worker("ours", files["ours"], args.threads, "memory")
        results["ours_memory_pyc"] = run_worker("ours", files["ours"], args.threads, "memory",
                                                bytecode=str(Path(tmp) / "pycache"))
        results["ours_memory_f16"] = run_worker("ours", files["ours"], args.threads, "memory-f16")
        mem_c = c_memory(files["ours"], Path(tmp))
        if mem_c:
            results["ours_memory_c"] = mem_c
        if have_py:
            results["llama_py_memory"] = run_worker("llama", files["llama"], args.threads, "memory")
        files = {k: v for k, v in files.items() if k.endswith("_bytes")}  # no machine paths in results

    def pair(a: dict, b: dict, key: str) -> list[float]:
        return [a[key + "_best"] / b[key + "_best"], a[key + "_median"] / b[key + "_median"]]


    o = results["ours"]
    ratios: dict = {}
    if "llama_bench" in results:
        for key in ("tg128", "pp64", "pp512"):
            ratios[f"{key}_vs_llama_bench"] = pair(o, results["llama_bench"], key)
    if "llama_batched" in results:
        for n in STREAMS:
            ratios[f"batch{n}_vs_llama"] = pair(results["ours_batch"], results["llama_batched"], str(n))
    if "hf" in results:
        ratios["tg128_vs_hf"] = pair(o, results["hf"], "tg128")
    if "llama_py" in results:
        ratios["tg128_vs_llama_py"] = pair(o, results["llama_py"], "tg128")
    sp = results["spec"]
    per_round = [r["spec_tok_s"] / r["plain_tok_s"] for r in sp["rounds"]]
    ratios["spec_vs_plain"] = [max(per_round), statistics.median(per_round)]
    if "llama_bench_host" in results:
        lh = results["llama_bench_host"]
        ratios["spec_vs_llama_bench"] = [sp["spec_best"] / lh[f"tg{SPEC_TOKENS}_best"],
                                         sp["spec_median"] / lh[f"tg{SPEC_TOKENS}_median"]]
        ratios["plain_vs_llama_bench"] = [sp["plain_best"] / lh[f"tg{SPEC_TOKENS}_best"],
                                          sp["plain_median"] / lh[f"tg{SPEC_TOKENS}_median"]]
    res = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "threads": args.threads, "rounds": args.rounds,
           "machine": machine(), "load_before": list(load_before), "load_after": list(os.getloadavg()),
           "files": files, "results": results, "ratios": ratios}
    table = render(res)
    print()
    print(table)
    if not args.no_doc:
        from pocketgpt.errors import write_bytes_atomic

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out, (json.dumps(res, indent=2) + "\n").encode())
        if args.json_only:
            print(f"\nwrote {out}")
        else:
            write_doc(Path(args.doc), table)
            print(f"\nwrote {out} and the results section of {args.doc}")
    return 0


def write_doc(doc: Path, table: str) -> None:
    """Replace the results section of the doc (between the RESULTS markers), atomically."""
    from pocketgpt.errors import write_bytes_atomic

    text = doc.read_text() if doc.exists() else "# Engine speed on the host\n\n<!-- RESULTS -->\n<!-- /RESULTS -->\n"
    block = f"<!-- RESULTS -->\n{table}\n<!-- /RESULTS -->"
    text = re.sub(r"<!-- RESULTS -->.*?<!-- /RESULTS -->", lambda _: block, text, flags=re.S)
    write_bytes_atomic(doc, text.encode())


if __name__ == "__main__":
    raise SystemExit(main())
