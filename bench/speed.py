"""Host speed of the C engine on the q4 GPT-2 124M-shaped model, beside HF transformers fp32 and
llama.cpp (through llama-cpp-python, when it is importable) on its own Q4_0 of the same model, all
measured in one run with the same token ids and the same thread count.

    python bench/speed.py [--threads 2] [--rounds 3] [--out bench/results/speed.json] [--doc docs/speed.md]

What it does:
  1. builds a GPT-2 124M-shaped model with random weights (transformers' initialisation, seed 0:
     speed depends on shapes and types, never time zeros), writes it as F32 GGUF;
  2. quantizes it with `pocketgpt quantize --type q4` (ours) and with llama.cpp's quantizer to
     Q4_0 (theirs; llama.cpp keeps the tied embedding at Q6_K and position_embd at F32);
  3. times, each runtime in its own fresh process, `--rounds` times in turn (interleaved, so a
     noisy neighbour hits all of them alike; the best round counts): prefill of 64 tokens (pp64,
     best of 3 in each process) and decode of 128 tokens after that prompt (tg128), fed one
     token per call from Python;
  4. times our batched decode (Engine.step: one forward pass per token for all streams, sampling
     included) with 1, 4 and 16 streams at different positions: aggregate tokens/s; and
     llama.cpp's own batched decode (one llama_decode of all sequences per step) the same way;
  5. measures resident memory (VmRSS) after filling a 1,024-token context, for ours and llama.cpp;
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
PP_REPEATS = 3  # a 64-token prefill takes ~0.1 s: the best of 3 per process, for every runtime
STREAMS = (1, 4, 16)


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
""" % (MEM_CTX, MEM_CTX)


def work_ours(model: str, threads: int, mode: str) -> dict:
    from pocketgpt.engine import Engine

    eng = Engine(model, threads=threads, n_ctx=MEM_CTX, kv="q8_0")
    prompt, feed = token_ids(PROMPT_LEN, 1), token_ids(DECODE_LEN, 2)
    if mode == "batch":
        out = {}
        for n in STREAMS:
            streams = []
            for i in range(n):  # each stream at its own position: prompts of different lengths
                streams.append(eng.session().stream(token_ids(8 + 5 * i, 10 + i), max_tokens=48, greedy=True,
                                                    stop_at_eos=False))
            eng.step(streams)  # prefill + first token of every stream
            t = time.perf_counter()
            steps = 0
            while not all(s.done for s in streams):
                eng.step(streams)
                steps += 1
            out[str(n)] = n * steps / (time.perf_counter() - t)
        return {"batch_tok_s": out, "kernels": eng.kernels}
    s = eng.session()
    s._s.eval(prompt[:8])  # warm-up: page in the weights, start the workers
    pp = 0.0
    for _ in range(PP_REPEATS):
        s._s.reset()
        t = time.perf_counter()
        s._s.eval(prompt)
        pp = max(pp, PROMPT_LEN / (time.perf_counter() - t))
    t = time.perf_counter()
    for tok in feed:
        s._s.eval([tok])
    tg = DECODE_LEN / (time.perf_counter() - t)
    return {"pp64_tok_s": pp, "tg128_tok_s": tg, "kernels": eng.kernels, "kv": "q8_0"}


def llama_batch(model: str, threads: int) -> dict:
    """llama.cpp's own batched decode, as ours is timed: n sequences in one context (unified KV
    cache), prompts of 8 + 5 i tokens, then one llama_decode per step for all of them with logits
    for each and llama.cpp's greedy sampler choosing each sequence's next token (in C, as ours)."""
    import llama_cpp as L

    L.llama_backend_init()
    mdl = L.llama_model_load_from_file(model.encode(), L.llama_model_default_params())
    out = {}
    for n in STREAMS:
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max, cp.kv_unified = 4096, 512, 512, n, True
        cp.n_threads = cp.n_threads_batch = threads
        ctx = L.llama_init_from_model(mdl, cp)
        smpl = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(smpl, L.llama_sampler_init_greedy())
        batch = L.llama_batch_init(512, 0, n)

        def put(k: int, tok: int, pos: int, seq: int, logits: bool) -> None:
            batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.logits[k] = tok, pos, 1, logits
            batch.seq_id[k][0] = seq

        pos, nxt = [], []
        for i in range(n):  # prefill each sequence, then its first token, as Engine.step does
            ids = token_ids(8 + 5 * i, 10 + i)
            for k, tok in enumerate(ids):
                put(k, tok, k, i, k == len(ids) - 1)
            batch.n_tokens = len(ids)
            if L.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed on a prompt")
            nxt.append(L.llama_sampler_sample(smpl, ctx, len(ids) - 1))
            pos.append(len(ids))
        t = time.perf_counter()
        for _ in range(47):  # Engine.step's 48 tokens: the first came with the prompt
            for i in range(n):
                put(i, nxt[i], pos[i], i, True)
                pos[i] += 1
            batch.n_tokens = n
            if L.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed on a batch")
            nxt = [L.llama_sampler_sample(smpl, ctx, i) for i in range(n)]
        out[str(n)] = n * 47 / (time.perf_counter() - t)
        L.llama_batch_free(batch)
        L.llama_sampler_free(smpl)
        L.llama_free(ctx)
    L.llama_model_free(mdl)
    return {"batch_tok_s": out, "version": L.__version__}


def work_llama(model: str, threads: int, mode: str) -> dict:
    import llama_cpp

    if mode == "batch":
        return llama_batch(model, threads)
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


WORKERS = {"ours": work_ours, "llama": work_llama, "hf": work_hf}


def run_worker(name: str, model: str, threads: int, mode: str = "speed") -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT / "host"))
    if name == "ours" and mode.startswith("memory"):
        cmd = [sys.executable, "-c", MEMORY_WORKER, model, str(threads), mode]
    else:
        cmd = [sys.executable, __file__, "--worker", name, "--model", model, "--threads", str(threads), "--mode", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {mode} worker failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def c_memory(model: str, tmp: Path) -> dict | None:
    """The engine's resident memory without Python: firmware/engine/tests/bench_memory.c built with
    the system C compiler (None when there is none), the same file and a Q8_0 KV cache for 1,024
    positions, filled by one evaluation."""
    import shutil

    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        return None
    eng = ROOT / "firmware" / "engine"
    exe = tmp / "bench_memory"
    srcs = [str(eng / "tests" / "bench_memory.c")] + [str(eng / f"{n}.c") for n in
                                                        ("pg_common", "gguf", "kernels_ref", "kernels_x86", "tokenizer",
                                                         "sampler", "gpt2")]
    subprocess.run([cc, "-O2", "-std=c11", "-D_GNU_SOURCE", f"-I{eng}", "-o", str(exe), *srcs, "-lm"], check=True,
                   capture_output=True)
    proc = subprocess.run([str(exe), model, str(MEM_CTX)], capture_output=True, text=True, check=True, timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- set-up ---------------------------------------------------------------------------------

def build_models(tmp: Path, have_llama: bool) -> dict:
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
    if have_llama:
        import llama_cpp

        theirs = tmp / "gpt2-124m-llamacpp-q4_0.gguf"
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
        p.nthread = 2
        if llama_cpp.llama_model_quantize(str(f32).encode(), str(theirs).encode(), p) != 0:
            raise RuntimeError("llama.cpp's quantizer failed on the F32 model")
        out["llama"] = str(theirs)
        out["llama_bytes"] = theirs.stat().st_size
    return out


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


def best(rows: list[dict], key: str) -> float:
    return max(r[key] for r in rows)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def render(res: dict) -> str:
    r, m = res["results"], res["machine"]
    o, h = r["ours"], r["hf"]
    lines = [f"Measured {res['date']} by `bench/speed.py` on {m['cpu']} ({m['cores']} cores; "
             f"{', '.join(m['isa'])}), {res['threads']} threads for every runtime, best of {res['rounds']} interleaved "
             f"rounds (median in brackets). Load average {res['load_before'][0]:.2f} before, "
             f"{res['load_after'][0]:.2f} after (1-minute; the machine is shared).", ""]
    lines += ["| runtime | file | decode tg128 tok/s | prefill pp64 tok/s | resident memory (RSS), 1,024-token context |",
              "|---|---|---|---|---|"]

    def row(name: str, d: dict, size: int | None, rss: dict | None) -> str:
        mem = f"{rss['rss_mb']:.0f} MiB ({rss['rss_mb'] - rss['rss_before_engine_mb']:.0f} MiB above the bare process)" if rss else "—"
        f = f"{size / 1e6:.1f} MB" if size else "—"
        return (f"| {name} | {f} | {d['tg128_best']:.1f} ({d['tg128_median']:.1f}) | "
                f"{d['pp64_best']:.0f} ({d['pp64_median']:.0f}) | {mem} |")

    lines.append(row(f"pocketgpt engine, q4 ({o['kernels']}, KV cache Q8_0)", o, res["files"]["ours_bytes"],
                     r.get("ours_memory")))
    if "llama" in r:
        lines.append(row(f"llama.cpp {r['llama']['version']} (llama-cpp-python), Q4_0", r["llama"],
                         res["files"].get("llama_bytes"), r.get("llama_memory")))
    lines.append(row(f"HF transformers {h['version']} fp32", h, None, None))
    lines += ["", "Ratios (same run, best rounds):", ""]
    rt = res["ratios"]
    lines.append(f"- batched decode: 16 streams {rt['batch16_vs_1']:.2f}× the aggregate of 1 stream"
                 + (f" (llama.cpp's own batched decode: {rt['llama_batch16_vs_1']:.2f}×); ours with 16 streams "
                    f"{rt['batch16_vs_llama']:.2f}× llama.cpp's with 16" if "llama_batch16_vs_1" in rt else ""))
    lines.append(f"- decode: {rt['decode_vs_hf']:.2f}× HF fp32 (goal 6.5×)"
                 + (f", {rt['decode_vs_llama']:.2f}× llama.cpp Q4_0 (goal 1.5×)" if "decode_vs_llama" in rt else ""))
    if "prefill_vs_llama" in rt:
        lines.append(f"- prefill of 64 tokens: {rt['prefill_vs_llama']:.2f}× llama.cpp (goal 1×)")
    if "ours_memory" in r:
        mem = r["ours_memory"]
        goal = res["files"]["ours_bytes"] / 2**20 + 32
        if "ours_memory_c" in r:
            c = r["ours_memory_c"]
            lines.append(f"- memory, engine without Python (firmware/engine/tests/bench_memory.c: mapped file, Q8_0 KV "
                         f"cache, 1,024 tokens evaluated): RSS {c['rss_mib']:.1f} MiB against a goal of file + 32 MiB = "
                         f"{goal:.1f} MiB ({'met' if c['rss_mib'] <= goal else 'missed'}); the engine's allocations are "
                         f"{c['state_bytes'] / 2**20:.1f} MiB of session state and {c['model_mem_bytes'] / 2**20:.1f} MiB "
                         f"of model tables, the rest is the file's pages")
        lines.append(f"- memory, Python process: RSS {mem['rss_mb']:.1f} MiB ({'met' if mem['rss_mb'] <= goal else 'missed'}); "
                     + (f"the interpreter was {mem['rss_bare_mb']:.1f} MiB bare and " if "rss_bare_mb" in mem else "the process was ")
                     + f"{mem['rss_before_engine_mb']:.1f} MiB with pocketgpt.engine imported, so the engine's own share is "
                     f"{mem['rss_mb'] - mem['rss_before_engine_mb']:.1f} MiB; with the default F16 KV cache the RSS is "
                     f"{r['ours_memory_f16']['rss_mb']:.1f} MiB")
        if "ours_memory_relay" in r:
            rl = r["ours_memory_relay"]
            lines.append(f"- memory, a process with the relay's modules imported (`pocketgpt serve`'s imports, one "
                         f"1,024-token session, Q8_0 cache): RSS {rl['rss_mb']:.1f} MiB, of which "
                         f"{rl['rss_before_engine_mb']:.1f} MiB before the model was loaded")
    b, lb = r["ours_batch"], r.get("llama_batch")
    lines += ["", "Batched decode (ours: Engine.step, one forward pass per token for all streams, greedy sampling "
              "included, streams at different positions" + ("; llama.cpp: one `llama_decode` of all sequences per "
                                                            "step, unified KV cache, its greedy sampler" if lb else "")
              + "):", ""]
    runs = [("ours, aggregate tok/s" if lb else "aggregate tok/s", b)] + ([("llama.cpp Q4_0, aggregate tok/s", lb)] if lb else [])
    lines += ["| streams | " + " | ".join(f"{name} | per stream" for name, _ in runs) + " |",
              "|---|" + "---|---|" * len(runs)]
    for n in STREAMS:
        lines.append(f"| {n} | " + " | ".join(f"{d[str(n)]:.1f} | {d[str(n)] / n:.1f}" for _, d in runs) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "speed.md"))
    ap.add_argument("--no-doc", action="store_true", help="print only; do not touch the JSON or the doc")
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

    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError:
        have_llama = False
        print("llama-cpp-python is not importable: llama.cpp is left out (bench/setup_llamacpp.sh installs it)")
    load_before = os.getloadavg()
    started = _dt.datetime.now(_dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="pg-speed-") as tmp:
        files = build_models(Path(tmp), have_llama)
        names = ["ours", "hf"] + (["llama"] if have_llama else [])
        rounds: dict[str, list[dict]] = {n: [] for n in names}
        for k in range(args.rounds):
            for n in names:
                rounds[n].append(run_worker(n, files["f32"] if n == "hf" else files[n], args.threads))
                print(f"round {k + 1}: {n}: tg128 {rounds[n][-1]['tg128_tok_s']:.1f} tok/s, "
                      f"pp64 {rounds[n][-1]['pp64_tok_s']:.0f} tok/s", flush=True)
        results: dict = {}
        for n in names:
            rows = rounds[n]
            results[n] = {"tg128_best": best(rows, "tg128_tok_s"), "tg128_median": median(rows, "tg128_tok_s"),
                          "pp64_best": best(rows, "pp64_tok_s"), "pp64_median": median(rows, "pp64_tok_s"),
                          "rounds": rows, **{k: v for k, v in rows[0].items() if k in ("kernels", "version")}}
        batch = [run_worker("ours", files["ours"], args.threads, "batch") for _ in range(max(1, args.rounds - 1))]
        results["ours_batch"] = {str(n): max(b["batch_tok_s"][str(n)] for b in batch) for n in STREAMS}
        if have_llama:
            lb = [run_worker("llama", files["llama"], args.threads, "batch") for _ in range(max(1, args.rounds - 1))]
            results["llama_batch"] = {str(n): max(b["batch_tok_s"][str(n)] for b in lb) for n in STREAMS}
        results["ours_memory"] = run_worker("ours", files["ours"], args.threads, "memory")
        results["ours_memory_f16"] = run_worker("ours", files["ours"], args.threads, "memory-f16")
        results["ours_memory_relay"] = run_worker("ours", files["ours"], args.threads, "memory-relay")
        mem_c = c_memory(files["ours"], Path(tmp))
        if mem_c:
            results["ours_memory_c"] = mem_c
        if have_llama:
            results["llama_memory"] = run_worker("llama", files["llama"], args.threads, "memory")
        files = {k: v for k, v in files.items() if k.endswith("_bytes")}  # no machine paths in results
    ratios = {"decode_vs_hf": results["ours"]["tg128_best"] / results["hf"]["tg128_best"]}
    if have_llama:
        ratios["decode_vs_llama"] = results["ours"]["tg128_best"] / results["llama"]["tg128_best"]
        ratios["prefill_vs_llama"] = results["ours"]["pp64_best"] / results["llama"]["pp64_best"]
    ratios["batch16_vs_1"] = results["ours_batch"]["16"] / results["ours_batch"]["1"]
    if "llama_batch" in results:
        ratios["llama_batch16_vs_1"] = results["llama_batch"]["16"] / results["llama_batch"]["1"]
        ratios["batch16_vs_llama"] = results["ours_batch"]["16"] / results["llama_batch"]["16"]
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
