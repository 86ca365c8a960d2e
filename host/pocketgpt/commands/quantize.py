"""pocketgpt quantize: float GGUF (or HF folder) -> quantized GGUF, llama.cpp-compatible blocks."""

from __future__ import annotations

import argparse
import sys

HELP = """\
Quantize a model's weight matrices to ggml block types (llama.cpp reads the result as is).

  pocketgpt quantize float.gguf q4.gguf --type q4 --method gptq --calib train.txt --eval heldout.txt

TYPE is a preset or a single block type:
  q8   Q8_0 everywhere                      q6   Q6_K everywhere
  q5   Q4_K..Q6_K mix at 5.3 bits/weight    q4   Q3_K..Q6_K mix at 3.875 bits/weight (GPT-2 124M < 63 MB)
  q3   Q2_K..Q5_K mix at 3.1 bits/weight    q2   Q2_K..Q4_K mix at 2.75 bits/weight
  Q8_0 Q5_1 Q5_0 Q4_1 Q4_0 Q6_K Q5_K Q4_K Q3_K Q2_K  that type for every matrix
Presets spend their bit budget where it costs the least KL: with --calib, each matrix is quantized
alone at Q2_K..Q8_0 and the KL it causes on the calibration text is measured (--alloc measured,
the default then); without, fixed sensitivities favour the tied embedding/head, attn_qkv and the
first and last blocks (--alloc model). --bpw sets another budget. position_embd stays Q8_0, vectors F32. A matrix
whose rows a block does not divide gets the next type that fits (K-quants need rows of 256), and
the command says so.

METHOD: rtn (ggml's reference rounding, no calibration), weighted (scales fitted to the input
activations' importance), gptq (Hessian error feedback; slowest, best at 2-3 bits). weighted and
gptq read --calib FILE (plain text or a fortune file, at least 512 tokens; nothing downloads),
and then also tune (--tune): layer norms, biases and one gain per matrix row (stored in the block
scales, so the size does not change) are fitted to the float model's outputs on that text.
--eval FILE scores the result against the float input: perplexity, bits/byte, mean KL, top-1.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="weight quantization (rtn, weighted, gptq)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="float .gguf, Hugging Face folder, or builtin:NAME")
    p.add_argument("output", metavar="OUT", help="output .gguf")
    p.add_argument("--type", required=True, metavar="TYPE_OR_PRESET", help="q8, q6, q5, q4, q3, q2 or a block type")
    p.add_argument("--method", default="rtn", choices=["rtn", "weighted", "gptq"], help="default rtn")
    p.add_argument("--calib", metavar="FILE", default=None, help="calibration text (weighted, gptq)")
    p.add_argument("--calib-tokens", type=int, default=None, metavar="N",
                   help="use at most N calibration tokens (default 16384)")
    p.add_argument("--bpw", type=float, default=None, help="bit budget per weight for a preset's mix")
    p.add_argument("--alloc", choices=["auto", "measured", "model"], default="auto",
                   help="how a preset spends its budget: measured (each matrix quantized alone at each "
                        "type, KL on the calibration text; needs --calib) or model (fixed sensitivities); "
                        "auto = measured when --calib is given")
    p.add_argument("--tune", choices=["auto", "on", "off"], default="auto",
                   help="after quantizing, tune norms, biases and per-row gains (folded into the block "
                        "scales) to the float model's outputs on the calibration text; auto = on for "
                        "weighted and gptq")
    p.add_argument("--eval", metavar="FILE", default=None, help="held-out text: score against the float input")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pocketgpt import models
    from pocketgpt.cli import emit, gguf_output
    from pocketgpt.errors import PocketError
    from pocketgpt.quant import formats as F
    from pocketgpt.quant.pipeline import check_options, quantize_model, write_quantized

    out = gguf_output(args.output)
    # unknown types and impossible option sets fail before any work
    check_options(args.type, args.method, calib=bool(args.calib), bpw=args.bpw, tune=args.tune,
                  alloc=args.alloc, calib_tokens=args.calib_tokens)
    in_path = models.resolve(args.input)
    if in_path.resolve() == out.resolve():
        raise PocketError(f"{out}: output would overwrite the input; choose another name")
    calib_text = eval_text = None
    if args.calib or args.eval:
        from pocketgpt.corpus import read_text

        calib_text = read_text(args.calib) if args.calib else None
        eval_text = read_text(args.eval) if args.eval else None

    mf = models.load(args.input)
    progress = sys.stderr.isatty() and not args.json
    q = quantize_model(mf, args.type, args.method, calib_text=calib_text, calib_source=args.calib,
                       calib_tokens=args.calib_tokens, bpw=args.bpw, alloc=args.alloc, tune=args.tune,
                       progress=progress)
    name = str(mf.metadata.get("general.name") or Path(args.input).stem)
    size = write_quantized(out, mf, q, name=name)

    bpw = q.matrix_bpw()
    n_params = mf.n_params()
    fallbacks = q.fallbacks()
    counts = q.type_counts()
    tune = q.tune
    result = {
        "out": str(out), "type": args.type, "method": args.method, "bpw": round(bpw, 4),
        "file_bytes": size, "file_bpw": round(8.0 * size / n_params, 4), "n_params": n_params,
        "types": counts, "fallbacks": fallbacks,
        "calib_tokens": q.calib_tokens,
        "allocation": q.allocation,
        "tune": None if tune is None else tune.as_dict(),
        "tensors": [{"name": r.name, "type": F.type_name(r.qtype), "bytes": r.n_bytes,
                     "rel_rmse": round(r.rel_rmse, 6)} for r in q.report],
    }
    lines = [f"wrote {out}: {size:,} bytes ({size / 1e6:.2f} MB), {bpw:.3f} bits/weight in the matrices, "
             f"{8.0 * size / n_params:.3f} bits/parameter overall; method {args.method}",
             "  types: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))]
    lines += [f"  fallback: {f['tensor']}: {f['why']}" for f in fallbacks]
    if tune is not None:
        lines.append(f"  tuned {tune.parameters:,} float values on {tune.train_tokens:,} calibration tokens: "
                     f"KL on {tune.check_tokens:,} unseen calibration tokens {tune.kl_before:.5f} -> {tune.kl_after:.5f}")
    if eval_text is not None:
        from pocketgpt.evaluate import evaluate, make_scorer

        res = evaluate(make_scorer(str(out)), eval_text, ref=make_scorer(args.input), progress=progress)
        # scored against a reference: evaluate filled its fields
        assert res.kl is not None and res.top1 is not None and res.ref_ppl is not None and res.ref_bpb is not None
        ev: dict[str, float] = {"ppl": res.ppl, "bpb": res.bpb, "kl": res.kl, "top1": res.top1, "ref_ppl": res.ref_ppl,
              "ref_bpb": res.ref_bpb, "ppl_change": res.ppl / res.ref_ppl - 1, "bpb_change": res.bpb - res.ref_bpb,
              "eval_tokens": res.tokens}
        result.update({k: (round(v, 6) if isinstance(v, float) and k != "kl" else v) for k, v in ev.items()})
        lines.append(f"  on {args.eval}: mean KL {res.kl:.5f} nats/token, top-1 agreement {100 * res.top1:.2f} %, "
                     f"perplexity {res.ppl:.3f} vs {res.ref_ppl:.3f} float ({100 * ev['ppl_change']:+.2f} %), "
                     f"bpb {res.bpb:.4f} ({ev['bpb_change']:+.4f})")
    emit(args, result, "\n".join(lines))
    return 0
