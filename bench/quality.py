"""Quantization quality against the float model: mean KL (the headline), perplexity, bits per
byte and top-1 agreement, versus file size and bits per weight, for rtn, weighted and gptq, and
against llama.cpp's own quantizations of the same float model.

    bench/setup_llamacpp.sh                   # once: llama-cpp-python + llama-quantize/llama-imatrix
    python bench/quality.py --model runs/host_out/f32.gguf --name host --calib runs/host_calib.txt \
        --eval runs/host/heldout.txt --llama-cpp
    python bench/quality.py --report          # rebuild docs/quality.md and the plots from results

MODEL is a float model (Hugging Face folder or F32/F16 GGUF). Every variant is written as a real
GGUF (so sizes are file sizes, tokenizer included), read back, and scored by pocketgpt's own
evaluator (pocketgpt.evaluate, transformers backend) against the float model on the first
--eval-bytes of whole quotes of the held-out text.

Ours: presets q4/q3/q2 with the measured allocation (one gptq sensitivity pass, one plan per
preset shared by rtn, weighted and gptq: equal sizes). With --llama-cpp: llama.cpp's Q4_0,
Q4_K_M, Q3_K_M and Q2_K written by llama.cpp itself, plain (llama-cpp-python) and with its
importance matrix (llama-imatrix + llama-quantize), then for each of those files our gptq at the
largest budget whose file is no larger.

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
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from pocketgpt.quant.presets import Choice

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "quality.md"

LLAMA_MIXES = ("Q4_0", "Q4_K_M", "Q3_K_M", "Q2_K")


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


def eval_slice(text: str, max_bytes: int) -> str:
    """The first whole quotes of a fortune file up to max_bytes (the whole text if 0)."""
    if not max_bytes or len(text.encode()) <= max_bytes:
        return text
    from pocketgpt.corpus import split_documents

    out, size = [], 0
    for doc in split_documents(text):
        n = len(doc.encode()) + 3
        if size + n > max_bytes and out:
            break
        out.append(doc)
        size += n
    return "\n%\n".join(out) + "\n"


def run(args: argparse.Namespace) -> None:
    from pocketgpt.corpus import read_text
    from pocketgpt.evaluate import TorchScorer, evaluate
    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.quant import presets, quantizer
    from pocketgpt.quant.pipeline import Method, quantize_model, write_quantized

    RESULTS.mkdir(parents=True, exist_ok=True)
    res_path = RESULTS / f"quality_{args.name}.json"
    old = json.loads(res_path.read_text()) if res_path.exists() and not args.fresh else {}
    rows = {r["label"]: r for r in old.get("rows", []) if not (args.redo_ours and r["group"] in ("ours", "matched"))}
    tmp = Path(tempfile.mkdtemp(prefix="pgq_"))
    fpath = _float_gguf(args.model, tmp)
    mf = read_gguf(fpath)
    eval_text = eval_slice(read_text(args.eval), args.eval_bytes)
    (tmp / "eval.txt").write_text(eval_text)
    calib_text = read_text(args.calib)
    shapes = {n: t.shape for n, t in mf.tensors.items()}
    print(f"{args.name}: {mf.n_params():,} parameters, n_embd {mf.cfg.n_embd}, {mf.cfg.n_layer} layers; "
          f"eval {len(eval_text.encode()):,} bytes", flush=True)
    ref = TorchScorer(mf)
    t0 = time.time()
    calib = quantizer.collect(mf, calib_text, full=True, max_tokens=args.calib_tokens, source=args.calib)
    print(f"calibration: {calib.tokens} tokens in {time.time() - t0:.1f} s", flush=True)
    t0 = time.time()
    if args.reuse_sensitivity and old.get("sensitivity"):
        from pocketgpt.quant import formats as F

        sens = quantizer.Sensitivity({n: {F.type_from_name(k): v for k, v in d.items()}
                                      for n, d in old["sensitivity"].items()}, {}, old["sensitivity_tokens"])
        print(f"sensitivity: reused from {res_path.name}", flush=True)
    else:
        sens = quantizer.measure_sensitivity(mf, calib, calib_text, presets.MEASURED_LADDER, "gptq",
                                             tokens=args.sens_tokens)  # its tensors serve the gptq rows
        print(f"sensitivity (gptq, {sens.tokens} tokens): {time.time() - t0:.0f} s", flush=True)
    meta = {"name": args.name, "model": _portable(args.model), "n_params": mf.n_params(),
            "n_embd": mf.cfg.n_embd, "n_layer": mf.cfg.n_layer, "eval": _portable(args.eval),
            "eval_bytes": len(eval_text.encode()), "calib": _portable(args.calib), "calib_tokens": calib.tokens,
            "sensitivity_tokens": sens.tokens,
            "sensitivity": {n: {F_name(t): k for t, k in d.items()} for n, d in sens.kl.items()},
            "notes": old.get("notes", [])}

    def save() -> None:
        res_path.write_text(json.dumps({**meta, "rows": list(rows.values())}, indent=1))

    def score(label: str, spec: str, plan: dict[str, Choice], method: str, group: str, note: str = "") -> dict:
        if label in rows and not args.redo:
            return rows[label]
        t1 = time.time()
        base_method, tuned = method.removesuffix("+tune"), method.endswith("+tune")
        if base_method not in quantizer.METHODS:
            raise SystemExit(f"--methods {method}: use rtn, weighted or gptq, each optionally +tune")
        q = quantize_model(mf, spec, cast(Method, base_method), calib_text=calib_text, calibration=calib,
                           sensitivity=sens, choices=plan, tune="on" if tuned else "off")
        stored, tune = q.stored, q.tune
        qtime = time.time() - t1
        out = tmp / "q.gguf"
        size = write_quantized(out, mf, q)
        qmf = read_gguf(out)
        r = evaluate(TorchScorer(qmf), eval_text, ref=ref)
        mats = [n for n, s in shapes.items() if presets.is_matrix(n, s)]
        bpw = 8 * sum(stored[n].n_bytes for n in mats) / sum(math.prod(shapes[n]) for n in mats)
        types = {}
        for n in mats:
            types[F_name(stored[n].qtype)] = types.get(F_name(stored[n].qtype), 0) + 1
        row = {"label": label, "group": group, "method": method, "file_bytes": size, "bpw": round(bpw, 4),
               "kl": r.kl, "top1": r.top1, "ppl": r.ppl, "bpb": r.bpb, "ref_ppl": r.ref_ppl, "ref_bpb": r.ref_bpb,
               "tokens": r.tokens, "quantize_s": round(qtime, 1), "note": note,
               "token_embd": F_name(stored["token_embd.weight"].qtype), "types": types}
        if tune is not None:
            row["tune"] = tune.as_dict()
        rows[label] = row
        _print_row(row)
        save()
        return row

    methods = args.methods.split(",")
    for p in args.presets.split(","):
        plan = presets.plan(shapes, mf.cfg.n_layer, mf.tied, p, measured=sens.kl, ladder=presets.MEASURED_LADDER)
        for m in methods:
            score(f"{p} {m}", p, plan, m, "ours", f"preset {p} ({presets.PRESETS[p].bpw} bits/weight), measured allocation")
    if args.llama_cpp:
        files = _llama_cpp_files(fpath, Path(args.calib), tmp, args.tools)
        for label, path in files.items():
            if label not in rows or args.redo:
                rows[label] = _score_file(label, path, eval_text, ref, shapes)
                _print_row(rows[label])
                save()
    for label in [k for k, r in rows.items() if r["group"] == "llama.cpp"]:
        limit = rows[label]["file_bytes"]
        budget = _budget_for(shapes, mf, limit, sens)
        plan = presets.plan(shapes, mf.cfg.n_layer, mf.tied, "q4", bpw=budget, measured=sens.kl, ladder=presets.MEASURED_LADDER)
        for m in args.matched_methods.split(","):
            score(f"ours<={label} {m}", "q4", plan, m, "matched",
                  f"measured allocation at {budget:.3f} bits/weight: file no larger than {label}")
    save()


def F_name(t: int) -> str:
    from pocketgpt.quant import formats as F

    return F.type_name(t)


def _portable(path: str | None) -> str | None:
    """Paths relative to the repository when inside it (no machine paths in committed results)."""
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return path if path.startswith("builtin:") else p.name


def _print_row(r: dict) -> None:
    print(f"  {r['label']:40s} {r['file_bytes'] / 1e6:8.3f} MB {r['bpw']:6.3f} bpw  KL {r['kl']:.5f}  "
          f"top1 {100 * r['top1']:5.2f} %  ppl {r['ppl']:8.3f} ({100 * (r['ppl'] / r['ref_ppl'] - 1):+6.2f} %)",
          flush=True)


def _budget_for(shapes: dict, mf, max_bytes: int, sens) -> float:
    """Largest matrix bit budget whose measured plan (plus this model's non-tensor bytes) fits max_bytes."""
    from pocketgpt.quant import presets

    overhead = mf.file_bytes - sum(t.n_bytes for t in mf.tensors.values()) + 64 * (len(shapes) + 1)
    lo, hi = 2.0, 8.5
    for _ in range(30):
        mid = (lo + hi) / 2
        plan = presets.plan(shapes, mf.cfg.n_layer, mf.tied, "q4", bpw=mid, measured=sens.kl, ladder=presets.MEASURED_LADDER)
        if presets.plan_bytes(shapes, plan) + overhead <= max_bytes:
            lo = mid
        else:
            hi = mid
    return lo


def _score_file(label: str, path: Path, eval_text: str, ref, shapes: dict) -> dict:
    from pocketgpt.evaluate import TorchScorer, evaluate
    from pocketgpt.gguf_io import read_gguf

    qmf = read_gguf(path)
    r = evaluate(TorchScorer(qmf), eval_text, ref=ref)
    mats = [n for n, t in qmf.tensors.items() if len(t.shape) == 2]
    bpw = 8 * sum(qmf.tensors[n].n_bytes for n in mats) / sum(math.prod(qmf.tensors[n].shape) for n in mats)
    types = {}
    for n in mats:
        types[F_name(qmf.tensors[n].qtype)] = types.get(F_name(qmf.tensors[n].qtype), 0) + 1
    return {"label": label, "group": "llama.cpp", "method": "imatrix" if "imatrix" in label else "llama.cpp",
            "file_bytes": path.stat().st_size, "bpw": round(bpw, 4), "kl": r.kl, "top1": r.top1, "ppl": r.ppl,
            "bpb": r.bpb, "ref_ppl": r.ref_ppl, "ref_bpb": r.ref_bpb, "tokens": r.tokens,
            "note": "quantized by llama.cpp itself", "token_embd": F_name(qmf.tensors["token_embd.weight"].qtype),
            "types": types}


def _llama_cpp_files(fpath: Path, calib: Path, tmp: Path, tools: str) -> dict[str, Path]:
    """llama.cpp's own quantizations of the float GGUF: llama-cpp-python's quantizer for the plain
    files, llama.cpp's llama-imatrix + llama-quantize (bench/setup_llamacpp.sh) for the imatrix ones."""
    import subprocess

    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed (bench/setup_llamacpp.sh): llama.cpp's files skipped", flush=True)
        return {}
    out: dict[str, Path] = {}
    for name in LLAMA_MIXES:
        path = tmp / f"llama-{name}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}")
        params.nthread = 2
        if llama_cpp.llama_model_quantize(str(fpath).encode(), str(path).encode(), params) != 0:
            print(f"llama.cpp quantize {name} failed", flush=True)
            continue
        out[f"llama.cpp {name}"] = path
    tdir = Path(tools).expanduser()
    imatrix_tool, quant_tool = tdir / "llama-imatrix", tdir / "llama-quantize"
    if not (imatrix_tool.exists() and quant_tool.exists()):
        print(f"{tdir}: no llama-imatrix/llama-quantize (bench/setup_llamacpp.sh): imatrix files skipped", flush=True)
        return out
    imat = tmp / "imatrix.gguf"
    subprocess.run([str(imatrix_tool), "-m", str(fpath), "-f", str(calib), "-o", str(imat), "-c", "128",
                    "-t", "2", "--no-ppl"], check=True, capture_output=True)
    for name in LLAMA_MIXES:
        path = tmp / f"llama-{name}-imatrix.gguf"
        subprocess.run([str(quant_tool), "--imatrix", str(imat), str(fpath), str(path), name, "2"],
                       check=True, capture_output=True)
        out[f"llama.cpp {name} +imatrix"] = path
    return out


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
`bench/results/`). Every variant is a real GGUF file, read back by pocketgpt's reader and scored
by pocketgpt's own evaluator (`pocketgpt.evaluate.evaluate`, the code behind
`pocketgpt eval FILE --text HELDOUT --ref FLOAT`, transformers backend) against the float model,
on held-out quotes that neither training nor calibration saw.

* **KL**: mean KL(float || quantized) in nats per token, the headline: perplexity barely moves
  while the distribution drifts.
* **top-1**: how often both models rank the same next token first.
* **ppl**, **bpb**: perplexity and bits per UTF-8 byte; the change is against the float model.
* **bpw**: bits per weight over the weight matrices (token_embd and position_embd included);
  **MB**: the whole file (tokenizer and metadata included); **embd**: token_embd's type.

Ours: `rtn` is ggml's reference rounding (llama-quantize without an importance matrix);
`weighted` fits block scales to calibration activation importance (ggml's imatrix searches);
`gptq` adds Hessian error feedback across columns, and for the tied embedding/head also weighs
the embedding's input role (see docs/quantization.md). `gptq+tune` then fits layer norms, biases
and one gain per matrix row (folded into the block scales: same types, same bytes) to the float
model's outputs on the calibration text: what `pocketgpt quantize --method gptq` does by default
(`--tune`); the plain `gptq` rows are `--tune off`. Presets q4/q3/q2 spend their bit budget
with the **measured allocation**: each matrix is quantized alone at each type (Q2_K to Q8_0)
and the KL it causes on calibration-side text is measured; the plan minimises the sum under
the byte budget. rtn, weighted and gptq of one preset share one plan, so they have equal size.

`llama.cpp X` rows are files written by llama.cpp itself (llama-cpp-python 0.3.36's
`llama_model_quantize`, built by `bench/setup_llamacpp.sh`); `+imatrix` rows by its
`llama-quantize --imatrix` with an importance matrix from its `llama-imatrix` over the same
calibration text. llama.cpp keeps the tied embedding (its output head) at Q6_K in every one of
these mixes. `ours<=llama.cpp X` rows are our gptq (untuned) at the largest budget whose file is
no larger than that llama.cpp file. q4 is 3.875 bits/weight over the matrices (position_embd
excluded; the bpw column includes it), the 124M-in-63-MB promise per weight; `q4 at 3.857 bpw`
rows are the earlier 3.85 budget, kept for comparison.
"""


def _fmt_row(r: dict) -> str:
    d_ppl = 100 * (r["ppl"] / r["ref_ppl"] - 1)
    d_bpb = r["bpb"] - r["ref_bpb"]
    return (f"| {r['label']} | {r['file_bytes'] / 1e6:.3f} | {r['bpw']:.3f} | {r.get('token_embd', '')} | "
            f"**{r['kl']:.5f}** | {100 * r['top1']:.2f} | {r['ppl']:.3f} ({d_ppl:+.2f} %) | "
            f"{r['bpb']:.4f} ({d_bpb:+.4f}) |")


def _model_section(data: dict) -> str:
    rows = data["rows"]
    ref_ppl = rows[0]["ref_ppl"] if rows else float("nan")
    ref_bpb = rows[0]["ref_bpb"] if rows else float("nan")
    out = [f"## {data['name']}: {data['n_params']:,} parameters (n_embd {data['n_embd']}, "
           f"{data['n_layer']} layers)",
           "",
           f"Float model `{data['model']}`: perplexity {ref_ppl:.3f}, {ref_bpb:.4f} bits/byte on the first "
           f"{data.get('eval_bytes', 0):,} bytes of whole quotes of `{data['eval']}` "
           f"({rows[0]['tokens'] if rows else 0:,} tokens). Calibration: {data['calib_tokens']:,} tokens of "
           f"`{data['calib']}`; measured allocation on {data.get('sensitivity_tokens', 0):,} of them.",
           "",
           f"![KL and perplexity against size](quality_{data['name']}.png)",
           "",
           "| variant | MB | bpw | embd | KL (nats/tok) | top-1 % | ppl (change) | bpb (change) |",
           "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (-r["file_bytes"], r["label"])):
        out.append(_fmt_row(r))
    out.append("")
    by = {r["label"]: r for r in rows}
    ours = [r for r in rows if r["group"] in ("ours", "matched")]
    lines = []
    for t in sorted((r for r in rows if r["group"] == "llama.cpp"), key=lambda r: -r["file_bytes"]):
        fit = [r for r in ours if r["file_bytes"] <= t["file_bytes"]]
        if not fit:
            continue
        best = min(fit, key=lambda r: r["kl"])
        cut = 100 * (1 - best["kl"] / t["kl"]) if t["kl"] > 0 else 0.0
        lines.append(f"| {t['label']} | {t['file_bytes'] / 1e6:.3f} | {t['kl']:.5f} | {best['label']} | "
                     f"{best['file_bytes'] / 1e6:.3f} | {best['kl']:.5f} | {cut:+.1f} % {'✔' if cut >= 30 else '✘'} |")
    if lines:
        out += ["Against llama.cpp (goal: for each of its files, one of ours no larger with ≥ 30 % lower KL):", "",
                "| llama.cpp file | MB | KL | best of ours no larger | MB | KL | KL cut |",
                "|---|---:|---:|---|---:|---:|---:|", *lines, ""]
    else:
        out += ["llama.cpp's own files were not measured in this run (bench/setup_llamacpp.sh, then "
                "`--llama-cpp`).", ""]
    lines = []
    for p in ("q4", "q3", "q2"):
        if f"{p} rtn" in by:
            base = by[f"{p} rtn"]
            for m in ("weighted", "gptq", "gptq+tune"):
                if f"{p} {m}" in by:
                    r = by[f"{p} {m}"]
                    cut = 100 * (1 - r["kl"] / base["kl"]) if base["kl"] > 0 else 0.0
                    lines.append(f"| {p} | {r['bpw']:.3f} | {base['kl']:.5f} | {m} | {r['kl']:.5f} | {cut:+.1f} % |")
    if lines:
        out += ["Methods at equal size (goal at ~3 and ~2 bits: ≥ 30 % lower KL than rtn):", "",
                "| preset | bpw | rtn KL | method | KL | KL cut |", "|---|---:|---:|---|---:|---:|", *lines, ""]
    for note in data.get("notes", []):
        out += [note, ""]
    return "\n".join(out)


def _plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    styles = {"rtn": ("o", "tab:gray"), "weighted": ("s", "tab:blue"), "gptq": ("^", "tab:red"),
              "gptq+tune": ("v", "tab:orange"),
              "llama.cpp": ("x", "black"), "imatrix": ("+", "tab:purple")}
    for ax, key, ylabel in ((axes[0], "kl", "mean KL to float (nats/token, log)"),
                            (axes[1], "ppl", "perplexity"), (axes[2], "bpb", "bits per byte")):
        for group in ("ours", "matched", "llama.cpp"):
            for method, (marker, color) in styles.items():
                pts = [r for r in rows if r["group"] == group and r["method"] == method]
                if not pts:
                    continue
                pts.sort(key=lambda r: r["file_bytes"])
                lab = {"ours": f"ours {method}", "matched": f"ours {method} (no larger than llama.cpp)",
                       "llama.cpp": f"llama.cpp{' +imatrix' if method == 'imatrix' else ''}"}[group]
                face = "none" if group == "matched" else color
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
        per_mb = 8e6 / data["n_params"]  # the same on every axis: bind it once per plot
        secax = ax.secondary_xaxis("top", functions=(lambda mb, k=per_mb: mb * k, lambda b, k=per_mb: b / k))
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
    ap.add_argument("--sens-tokens", type=int, default=1024, help="calibration tokens for the sensitivity pass")
    ap.add_argument("--eval-bytes", type=int, default=12000,
                    help="score on the first whole quotes of --eval up to this many bytes (0: all)")
    ap.add_argument("--matched-methods", default="gptq", help="methods for the size-matched rows")
    ap.add_argument("--tools", default="~/.cache/pocketgpt-bench/tools", help="llama-imatrix/llama-quantize folder")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results of this --name")
    ap.add_argument("--redo-ours", action="store_true", help="recompute our rows, keep llama.cpp's")
    ap.add_argument("--presets", default="q4,q3,q2")
    ap.add_argument("--methods", default="rtn,weighted,gptq,gptq+tune",
                    help="rtn, weighted, gptq; METHOD+tune also tunes norms, biases and row gains (the CLI's --tune)")
    ap.add_argument("--reuse-sensitivity", action="store_true",
                    help="take the measured allocation's KLs from the earlier results of this --name")
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
