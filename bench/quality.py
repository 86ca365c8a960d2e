"""Quantization quality against the float model: mean KL (the headline), perplexity, bits per
byte and top-1 agreement, versus file size and bits per weight, for rtn, weighted and gptq.

    python bench/quality.py --model runs/host --name host --calib CAL.txt --eval HELDOUT.txt
    python bench/quality.py --report          # rebuild docs/quality.md and the plots from results

MODEL is a float model (Hugging Face folder or F32/F16 GGUF). Every variant is written as a real
GGUF (so sizes are file sizes, tokenizer included), read back, and scored by pocketgpt's own
evaluator (pocketgpt.evaluate, transformers backend) against the float model on held-out text.

Besides our presets, the run builds llama.cpp's own type mixes for GPT-2 (Q4_0, Q4_K_M, Q3_K_M,
Q2_K: the tied embedding at Q6_K, the per-tensor upgrades of llama-quant.cpp) with ggml's
reference rounding, i.e. what llama-quantize writes without an importance matrix, and "+imatrix"
twins with importance-weighted scales. Then, for each llama.cpp file, ours at no larger size.
If llama-cpp-python is importable (bench set-up only: `pip install llama-cpp-python`), files
quantized by llama.cpp itself are scored side by side.

Results accumulate in bench/results/quality_<name>.json; the report is docs/quality.md with
docs/quality_<name>.png.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "quality.md"

LLAMA_MIXES = ("Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K")


def llama_mix(shapes: dict, n_layer: int, ftype: str) -> dict:
    """llama.cpp's per-tensor choice for a tied GPT-2 (src/llama-quant.cpp, read, not copied)."""
    from pocketgpt.quant import formats as F
    from pocketgpt.quant.presets import Choice, is_matrix

    base = {"Q4_0": F.Q4_0, "Q4_K_M": F.Q4_K, "Q3_K_M": F.Q3_K, "Q2_K": F.Q2_K}[ftype]

    def more_bits(i: int) -> bool:
        return i < n_layer // 8 or i >= 7 * n_layer // 8 or (i - n_layer // 8) % 3 == 2

    plan = {}
    for name, shape in shapes.items():
        if not is_matrix(name, shape):
            plan[name] = Choice(F.F32, F.F32)
            continue
        t = base
        if name == "token_embd.weight":  # tied: quantized as the output tensor
            t = F.Q6_K if shape[-1] % 256 == 0 else F.Q8_0
        elif name.startswith("blk."):
            i, kind = int(name.split(".")[1]), name.split(".")[2]
            if kind == "attn_qkv":
                t = {"Q3_K_M": F.Q4_K, "Q4_K_M": F.Q5_K}.get(ftype, t)
            elif kind == "attn_output":
                t = {"Q2_K": F.Q3_K, "Q3_K_M": F.Q4_K}.get(ftype, t)
            elif kind == "ffn_down":
                if ftype == "Q2_K":
                    t = F.Q3_K
                elif ftype == "Q3_K_M":
                    t = F.Q5_K if i < n_layer // 16 else F.Q4_K
                elif ftype == "Q4_K_M" and more_bits(i):
                    t = F.Q6_K
        got = F.fitting_type(t, shape[-1])
        plan[name] = Choice(got, t, "" if got == t else "fallback")
    return plan


def _float_gguf(model: str, tmp: Path) -> Path:
    from pocketgpt import models
    from pocketgpt.gguf_io import read_gguf, store_tensors, write_gguf
    from pocketgpt.quant import formats as F

    path = models.resolve(model)
    if path.is_file():
        mf = read_gguf(path)
        if all(t.qtype in (F.F32, F.F16) for t in mf.tensors.values()):
            return path
        raise SystemExit(f"{model}: not a float model (quantize from the float training folder)")
    mf = models.load(model)
    out = tmp / "float.gguf"
    write_gguf(out, mf.cfg, mf.vocab, store_tensors(mf.f32_tensors(), lambda n, a: F.F32))
    return out


def run(args: argparse.Namespace) -> None:
    from pocketgpt.corpus import read_text
    from pocketgpt.evaluate import TorchScorer, evaluate
    from pocketgpt.gguf_io import read_gguf, write_gguf
    from pocketgpt.quant import formats as F
    from pocketgpt.quant import presets, quantizer

    RESULTS.mkdir(parents=True, exist_ok=True)
    res_path = RESULTS / f"quality_{args.name}.json"
    old = json.loads(res_path.read_text()) if res_path.exists() else {}
    rows = {r["label"]: r for r in old.get("rows", [])}
    tmp = Path(tempfile.mkdtemp(prefix="pgq_"))
    fpath = _float_gguf(args.model, tmp)
    mf = read_gguf(fpath)
    eval_text = read_text(args.eval)
    calib_text = read_text(args.calib)
    shapes = {n: t.shape for n, t in mf.tensors.items()}
    print(f"{args.name}: {mf.n_params():,} parameters, n_embd {mf.cfg.n_embd}, {mf.cfg.n_layer} layers", flush=True)
    ref = TorchScorer(mf)
    t0 = time.time()
    calib = quantizer.collect(mf, calib_text, full=True, max_tokens=args.calib_tokens, source=args.calib)
    print(f"calibration: {calib.tokens} tokens in {time.time() - t0:.1f} s", flush=True)

    def score(label: str, plan: dict, method: str, group: str, note: str = "") -> dict:
        if label in rows and not args.redo:
            return rows[label]
        t1 = time.time()
        stored, _ = quantizer.quantize_tensors(mf, plan, method, calib if method != "rtn" else None)
        qtime = time.time() - t1
        out = tmp / "q.gguf"
        size = write_gguf(out, mf.cfg, mf.vocab, stored)
        qmf = read_gguf(out)
        r = evaluate(TorchScorer(qmf), eval_text, ref=ref)
        mats = [n for n, s in shapes.items() if presets.is_matrix(n, s)]
        bpw = 8 * sum(stored[n].n_bytes for n in mats) / sum(math.prod(shapes[n]) for n in mats)
        row = {"label": label, "group": group, "method": method, "file_bytes": size, "bpw": round(bpw, 4),
               "kl": r.kl, "top1": r.top1, "ppl": r.ppl, "bpb": r.bpb, "ref_ppl": r.ref_ppl, "ref_bpb": r.ref_bpb,
               "tokens": r.tokens, "quantize_s": round(qtime, 1), "note": note}
        rows[label] = row
        print(f"  {label:34s} {size / 1e6:8.2f} MB {bpw:6.3f} bpw  KL {r.kl:.5f}  top1 {100 * r.top1:5.2f} %  "
              f"ppl {r.ppl:8.3f} ({100 * (r.ppl / r.ref_ppl - 1):+6.2f} %)  [{qtime:.0f} s]", flush=True)
        res_path.write_text(json.dumps({"name": args.name, "model": args.model, "n_params": mf.n_params(),
                                        "n_embd": mf.cfg.n_embd, "n_layer": mf.cfg.n_layer,
                                        "eval": args.eval, "calib": args.calib, "calib_tokens": calib.tokens,
                                        "rows": list(rows.values())}, indent=1))
        return row

    methods = args.methods.split(",")
    for p in args.presets.split(","):
        for m in methods:
            score(f"{p} {m}", presets.plan(shapes, mf.cfg.n_layer, mf.tied, p), m, "ours")
    for mix in LLAMA_MIXES:
        plan = llama_mix(shapes, mf.cfg.n_layer, mix)
        base = score(f"llama.cpp-mix {mix}", plan, "rtn", "llama-mix",
                     "llama.cpp's type mix, ggml reference rounding (= llama-quantize without imatrix)")
        score(f"llama.cpp-mix {mix} +imatrix", plan, "weighted", "llama-mix",
              "llama.cpp's type mix, importance-weighted scales (as with an imatrix)")
        # ours at no larger file size: the largest budget whose file fits
        budget = _budget_for(shapes, mf, base["file_bytes"], "q4" if mix != "Q2_K" else "q3")
        for m in ("weighted", "gptq"):
            ladder = "q5" if budget > 4.6 else ("q4" if budget > 3.6 else ("q3" if budget > 2.9 else "q2"))
            score(f"ours<=llama {mix} {m}", presets.plan(shapes, mf.cfg.n_layer, mf.tied, ladder, bpw=budget),
                  m, "matched", f"{ladder} ladder at {budget:.3f} bits/weight, file no larger than llama.cpp's {mix}")
    if args.llama_cpp:
        _llama_cpp_rows(fpath, tmp, rows, score_file=lambda label, path: _score_file(label, path, eval_text, ref, rows))
    res_path.write_text(json.dumps({"name": args.name, "model": args.model, "n_params": mf.n_params(),
                                    "n_embd": mf.cfg.n_embd, "n_layer": mf.cfg.n_layer, "eval": args.eval,
                                    "calib": args.calib, "calib_tokens": calib.tokens,
                                    "rows": list(rows.values())}, indent=1))


def _budget_for(shapes: dict, mf, max_bytes: int, ladder_hint: str) -> float:
    """Largest matrix bit budget whose plan (plus this model's non-tensor bytes) fits max_bytes."""
    from pocketgpt.quant import presets

    overhead = mf.file_bytes - sum(t.n_bytes for t in mf.tensors.values()) + 4096
    lo, hi = 2.0, 8.5
    for _ in range(30):
        mid = (lo + hi) / 2
        ladder = "q5" if mid > 4.6 else ("q4" if mid > 3.6 else ("q3" if mid > 2.9 else "q2"))
        plan = presets.plan(shapes, mf.cfg.n_layer, mf.tied, ladder, bpw=mid)
        if presets.plan_bytes(shapes, plan) + overhead <= max_bytes:
            lo = mid
        else:
            hi = mid
    return lo


def _score_file(label: str, path: Path, eval_text: str, ref, rows: dict) -> None:
    from pocketgpt.evaluate import TorchScorer, evaluate
    from pocketgpt.gguf_io import read_gguf

    qmf = read_gguf(path)
    r = evaluate(TorchScorer(qmf), eval_text, ref=ref)
    mats = [n for n, t in qmf.tensors.items() if len(t.shape) == 2]
    bpw = 8 * sum(qmf.tensors[n].n_bytes for n in mats) / sum(qmf.tensors[n].n_elements for n in mats)
    rows[label] = {"label": label, "group": "llama.cpp", "method": "llama-quantize", "file_bytes": path.stat().st_size,
                   "bpw": round(bpw, 4), "kl": r.kl, "top1": r.top1, "ppl": r.ppl, "bpb": r.bpb,
                   "ref_ppl": r.ref_ppl, "ref_bpb": r.ref_bpb, "tokens": r.tokens, "note": "quantized by llama.cpp itself"}
    print(f"  {label:34s} {path.stat().st_size / 1e6:8.2f} MB  KL {r.kl:.5f}", flush=True)


def _llama_cpp_rows(fpath: Path, tmp: Path, rows: dict, score_file) -> None:
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed: llama.cpp's own files skipped", flush=True)
        return
    ftypes = {"Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
              "Q3_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M, "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K}
    for name, ft in ftypes.items():
        out = tmp / f"llama-{name}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ft
        params.nthread = 2
        rc = llama_cpp.llama_model_quantize(str(fpath).encode(), str(out).encode(), params)
        if rc != 0:
            print(f"llama.cpp quantize {name} failed ({rc})", flush=True)
            continue
        score_file(f"llama.cpp {name}", out)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

def report() -> None:
    files = sorted(RESULTS.glob("quality_*.json"))
    parts = [HEADER]
    for f in files:
        data = json.loads(f.read_text())
        parts.append(_model_section(data))
        _plot(data, ROOT / "docs" / f"quality_{data['name']}.png")
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")


HEADER = """# Quantization quality

Produced by `python bench/quality.py` (re-run it to refresh; `--report` rebuilds this page from
`bench/results/`). Every variant is a real GGUF file, read back and scored by pocketgpt's own
evaluator against the float model on held-out text that neither training nor calibration saw.

* **KL** — mean KL(float || quantized) in nats per token: the headline, because perplexity
  barely moves while the distribution drifts.
* **top-1** — how often both models rank the same next token first.
* **ppl**, **bpb** — perplexity and bits per UTF-8 byte; the change is against the float model.
* **bpw** — bits per weight over the weight matrices (position_embd and token_embd included);
  **MB** — the whole file (tokenizer and metadata included).

Methods: `rtn` is ggml's reference quantization (what llama-quantize does without an importance
matrix); `weighted` fits block scales to calibration activation importance; `gptq` adds Hessian
error feedback across columns. Presets `q4`/`q3`/`q2` spend a bit budget over the tensors
(see `host/pocketgpt/quant/presets.py`).

`llama.cpp-mix X` rows are llama.cpp's own per-tensor type choices for GPT-2 (token_embd at Q6_K
because it is the tied output head; the attn_qkv/attn_output/ffn_down upgrades of
`llama-quant.cpp`), quantized with ggml's reference rounding (byte-identical to llama-quantize
for the legacy types; the same algorithm for the K-quants), and `+imatrix` with
importance-weighted scales. `ours<=llama X` rows are our quantizer with a budget chosen so that the
file is no larger than that llama.cpp file.
"""


def _fmt_row(r: dict, best_kl: dict | None = None) -> str:
    d_ppl = 100 * (r["ppl"] / r["ref_ppl"] - 1)
    d_bpb = r["bpb"] - r["ref_bpb"]
    return (f"| {r['label']} | {r['file_bytes'] / 1e6:.2f} | {r['bpw']:.3f} | **{r['kl']:.4f}** | "
            f"{100 * r['top1']:.2f} | {r['ppl']:.3f} ({d_ppl:+.2f} %) | {r['bpb']:.4f} ({d_bpb:+.4f}) |")


def _model_section(data: dict) -> str:
    rows = data["rows"]
    ref_ppl = rows[0]["ref_ppl"] if rows else float("nan")
    ref_bpb = rows[0]["ref_bpb"] if rows else float("nan")
    out = [f"## {data['name']}: {data['n_params']:,} parameters (n_embd {data['n_embd']}, "
           f"{data['n_layer']} layers)",
           "",
           f"Float model: perplexity {ref_ppl:.3f}, {ref_bpb:.4f} bits/byte on `{data['eval']}` "
           f"({rows[0]['tokens'] if rows else 0:,} tokens); calibration: {data['calib_tokens']:,} tokens of "
           f"`{data['calib']}`.",
           "",
           f"![KL and perplexity against size](quality_{data['name']}.png)",
           "",
           "| variant | MB | bpw | KL (nats/tok) | top-1 % | ppl (change) | bpb (change) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (-r["file_bytes"], r["label"])):
        out.append(_fmt_row(r))
    out.append("")
    # the two claims, computed
    by = {r["label"]: r for r in rows}
    lines = []
    for mix in LLAMA_MIXES:
        theirs = [by[k] for k in (f"llama.cpp {mix}", f"llama.cpp-mix {mix}") if k in by]
        ours = [r for r in rows if r["group"] in ("ours", "matched")]
        for t in theirs:
            fit = [r for r in ours if r["file_bytes"] <= t["file_bytes"]]
            if not fit:
                continue
            best = min(fit, key=lambda r: r["kl"])
            cut = 100 * (1 - best["kl"] / t["kl"]) if t["kl"] > 0 else 0.0
            lines.append(f"| {t['label']} | {t['file_bytes'] / 1e6:.2f} | {t['kl']:.4f} | {best['label']} | "
                         f"{best['file_bytes'] / 1e6:.2f} | {best['kl']:.4f} | {cut:+.1f} % {'✔' if cut >= 30 else '✘'} |")
    if not any(r["group"] in ("llama-mix", "llama.cpp") for r in rows):
        out += ["The llama.cpp comparison rows (its type mixes, and llama.cpp's own files through "
                "llama-cpp-python) were not measured in this run; `python bench/quality.py` with the "
                "same arguments adds them to the results.", ""]
    missing = [m for m in LLAMA_MIXES if f"llama.cpp-mix {m}" not in by]
    if any(r["group"] == "llama-mix" for r in rows) and not any(r["group"] == "llama.cpp" for r in rows):
        out += ["llama.cpp itself (llama-cpp-python) was not built in this run, so its rows here are its type "
                "mixes quantized with ggml's reference rounding" + (f"; not yet measured: {', '.join(missing)}"
                                                                     if missing else "") + ".", ""]
    if lines:
        out += ["Against llama.cpp (goal: at no larger size, ≥ 30 % lower KL):", "",
                "| llama.cpp file | MB | KL | best of ours no larger | MB | KL | KL cut |",
                "|---|---:|---:|---|---:|---:|---:|", *lines, ""]
    lines = []
    for p in ("q4", "q3", "q2"):
        if f"{p} rtn" in by:
            base = by[f"{p} rtn"]
            for m in ("weighted", "gptq"):
                if f"{p} {m}" in by:
                    r = by[f"{p} {m}"]
                    cut = 100 * (1 - r["kl"] / base["kl"]) if base["kl"] > 0 else 0.0
                    lines.append(f"| {p} | {r['bpw']:.3f} | {base['kl']:.4f} | {m} | {r['kl']:.4f} | {cut:+.1f} % |")
    if lines:
        out += ["Methods at equal size (goal at ~3 and ~2 bits: ≥ 30 % lower KL than rtn):", "",
                "| preset | bpw | rtn KL | method | KL | KL cut |", "|---|---:|---:|---|---:|---:|", *lines, ""]
    return "\n".join(out)


def _plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    styles = {"rtn": ("o", "tab:gray"), "weighted": ("s", "tab:blue"), "gptq": ("^", "tab:red"),
              "llama-quantize": ("x", "black")}
    for ax, key, ylabel in ((axes[0], "kl", "mean KL to float (nats/token, log)"),
                            (axes[1], "ppl", "perplexity"), (axes[2], "bpb", "bits per byte")):
        for group in ("ours", "matched", "llama-mix", "llama.cpp"):
            for method, (marker, color) in styles.items():
                pts = [r for r in rows if r["group"] == group and r["method"] == method]
                if not pts:
                    continue
                pts.sort(key=lambda r: r["file_bytes"])
                lab = {"ours": f"ours {method}", "matched": f"ours {method} (matched size)",
                       "llama-mix": f"llama.cpp mix {'+imatrix' if method == 'weighted' else ''}".strip(),
                       "llama.cpp": "llama.cpp itself"}[group]
                face = "none" if group == "llama-mix" else color
                ax.plot([r["file_bytes"] / 1e6 for r in pts], [r[key] for r in pts],
                        linestyle="-" if group == "ours" else "none", marker=marker, color=color,
                        markerfacecolor=face, label=lab, alpha=0.85)
        if rows:
            ref = rows[0]["ref_ppl"] if key == "ppl" else rows[0]["ref_bpb"] if key == "bpb" else None
            if ref:
                ax.axhline(ref, color="green", linestyle=":", label="float")
        if key == "kl":
            ax.set_yscale("log")
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        per_mb = 8e6 / data["n_params"]
        secax = ax.secondary_xaxis("top", functions=(lambda mb: mb * per_mb, lambda b: b / per_mb))
        secax.set_xlabel("bits per parameter (whole file)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{data['name']}: quantized vs float ({data['n_params']:,} parameters)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="float model: HF folder or F32/F16 GGUF")
    ap.add_argument("--name", default="model")
    ap.add_argument("--calib", help="calibration text")
    ap.add_argument("--eval", help="held-out text")
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--presets", default="q4,q3,q2")
    ap.add_argument("--methods", default="rtn,weighted,gptq")
    ap.add_argument("--llama-cpp", action="store_true", help="also score llama.cpp's own quantizations")
    ap.add_argument("--redo", action="store_true", help="recompute rows already in the results")
    ap.add_argument("--report", action="store_true", help="only rebuild docs/quality.md and plots")
    args = ap.parse_args()
    if not args.report:
        if not (args.model and args.calib and args.eval):
            ap.error("--model, --calib and --eval are needed (or --report)")
        run(args)
    report()


if __name__ == "__main__":
    main()
