"""Does distillation beat training the same small architecture from scratch in the same time?

Both students are built by `pocketgpt shrink`'s own pipeline (pocketgpt.shrink.run.prepare) with
the same shape, data, batch, learning rate and seed: one pruned from the teacher and trained on
the teacher's cached top-k targets plus cross-entropy, one from random weights on cross-entropy
alone. Their optimiser steps alternate in one process, so both see the same machine load at every
moment, and each gets the same budget of its *own* step time (--minutes): neither is charged for
the other's steps. The teacher's one-off pass over the corpus (its cached targets) is reported
beside, not inside, the distilled run's time.

Each result is written as a float GGUF, quantized like the device model (`pocketgpt quantize
--type q8`) and scored by the C engine on the held-out quotes in bits per byte (`pocketgpt eval`).

    python bench/distill_vs_scratch.py runs/host --corpus /usr/share/games/fortunes --minutes 20 \\
        --teacher-cache runs_shrink/targets.npz --out-dir runs_shrink [--budget esp32s3 | --layers 3 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _eval(gguf: Path, text: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "pocketgpt", "eval", str(gguf), "--text", str(text), "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _no_paths(teacher: dict | None) -> dict | None:
    """The teacher stats without this machine's cache path (results are committed)."""
    if teacher and teacher.get("cached"):
        teacher = {**teacher, "cached": Path(teacher["cached"]).name}
    return teacher


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher")
    ap.add_argument("--corpus", nargs="+", required=True)
    ap.add_argument("--minutes", type=float, required=True, help="each student's own training time")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--teacher-cache", default=None)
    ap.add_argument("--teacher-minutes", type=float, default=None)
    ap.add_argument("--heldout", default=None, help="held-out quotes (default: heldout.txt beside the teacher)")
    ap.add_argument("--budget", default="esp32s3")
    ap.add_argument("--layers", default=None)
    ap.add_argument("--width", default=None)
    ap.add_argument("--ff", default=None)
    ap.add_argument("--vocab", default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "distill_vs_scratch.json"))
    a = ap.parse_args()

    from pocketgpt.shrink.distill import Trainer
    from pocketgpt.shrink.run import ShrinkOptions, distill_config, finish, prepare

    ints = (lambda v: [int(x) for x in v.split(",")] if v else None)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    heldout = Path(a.heldout) if a.heldout else Path(a.teacher) / "heldout.txt"
    runs = {}
    for mode in ("distill", "scratch"):
        o = ShrinkOptions(input=a.teacher, output=str(out_dir / f"{mode}.f32.gguf"), corpus=a.corpus,
                          budget=a.budget, merges=ints(a.vocab), layers=ints(a.layers), widths=ints(a.width),
                          ffs=ints(a.ff), qtype="f32", steps=10**9, max_minutes=a.minutes, batch=a.batch, lr=a.lr,
                          alpha=a.alpha, from_scratch=mode == "scratch", threads=a.threads,
                          teacher_cache=a.teacher_cache, teacher_minutes=a.teacher_minutes)
        p = prepare(o)
        runs[mode] = (o, p, Trainer(p.student, p.train_ids, distill_config(o), p.targets))
    load = [os.getloadavg()[0]]
    start = time.time()
    last_print = start
    while not all(tr.done() for _, _, tr in runs.values()):
        for mode, (_, _, tr) in runs.items():
            if not tr.done():
                tr.step()
        if time.time() - last_print > 60:
            last_print = time.time()
            load.append(os.getloadavg()[0])
            print(" | ".join(f"{m}: step {tr.steps}, {tr.seconds / 60:.1f} min, ce {tr.ema:.3f}"
                             for m, (_, _, tr) in runs.items()), flush=True)
    wall = time.time() - start
    result: dict = {"minutes_each": a.minutes, "wall_seconds_both": round(wall, 1),
                    "load_average_1min": {"min": min(load), "max": max(load), "mean": round(sum(load) / len(load), 2)},
                    "cpu_count": os.cpu_count(), "runs": {}}
    for mode, (o, p, tr) in runs.items():
        res = tr.result(p.val_ids)
        d, _ = finish(o, p, res)
        q8 = out_dir / f"{mode}.q8.gguf"
        subprocess.run([sys.executable, "-m", "pocketgpt", "quantize", o.output, str(q8), "--type", "q8"],
                       check=True, capture_output=True)
        ev = _eval(q8, heldout)
        result["runs"][mode] = {"steps": res.steps, "seconds": res.seconds, "tokens_seen": res.tokens_seen,
                                "val_loss_nats": round(res.val_loss, 4), "heldout_bpb_q8": round(ev["bpb"], 4),
                                "heldout_ppl_q8": round(ev["ppl"], 2), "teacher": _no_paths(d["distill"].get("teacher")),
                                "shape": {k: d[k] for k in ("n_layer", "n_embd", "n_head", "n_ff", "n_ctx", "n_vocab")},
                                "n_params": d["n_params"]}
        print(mode, json.dumps(result["runs"][mode]), flush=True)
    Path(a.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
