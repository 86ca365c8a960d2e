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

--variants JSON (a list of students, each {"name", "init": "teacher"|"scratch", "steps", "alpha",
"kl_anneal", "teacher_fraction", "lr"}) trains any number of students of one shape by steps instead,
their steps alternating as above, scores each one's float weights on the held-out quotes at the
--curve steps (bits per byte, the windows `pocketgpt eval` uses) and writes a Q8_0 GGUF of each.
A teacher fraction below 1 keeps the cached full pass's targets on a seeded random sample of that
fraction of 256-token chunks of the stream (what a pass over that fraction of the corpus yields)
and is charged that fraction of the full pass's time. --teacher-probe N times one 16-window
teacher batch every N alternation rounds, so the teacher's cost is measured under the same load
as the steps and the equal-time sums can be made with the teacher counted.
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
    ap.add_argument("--minutes", type=float, default=None, help="each student's own training time")
    ap.add_argument("--variants", default=None, help="JSON list of students trained by steps (see above)")
    ap.add_argument("--curve", default="1000,2000,3000,4000", help="steps at which --variants are scored")
    ap.add_argument("--teacher-probe", type=int, default=0, metavar="N",
                    help="time a teacher batch every N rounds (--variants)")
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
    ap.add_argument("--kl-anneal", type=float, default=0.5)
    ap.add_argument("--teacher-fraction", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json-out", default=str(ROOT / "bench" / "results" / "distill_vs_scratch.json"))
    a = ap.parse_args()
    if a.variants:
        return variants_main(a)
    if a.minutes is None:
        ap.error("give --minutes (or --variants)")

    from pocketgpt.shrink.distill import Trainer
    from pocketgpt.shrink.run import ShrinkOptions, distill_config, finish, prepare

    def ints(v: str | None) -> list[int] | None:
        return [int(x) for x in v.split(",")] if v else None

    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    heldout = Path(a.heldout) if a.heldout else Path(a.teacher) / "heldout.txt"
    runs = {}
    for mode in ("distill", "scratch"):
        o = ShrinkOptions(input=a.teacher, output=str(out_dir / f"{mode}.f32.gguf"), corpus=a.corpus,
                          budget=a.budget, merges=ints(a.vocab), layers=ints(a.layers), widths=ints(a.width),
                          ffs=ints(a.ff), qtype="f32", steps=10**9, max_minutes=a.minutes, batch=a.batch, lr=a.lr,
                          alpha=a.alpha, kl_anneal=a.kl_anneal, teacher_fraction=a.teacher_fraction,
                          from_scratch=mode == "scratch", threads=a.threads,
                          teacher_cache=a.teacher_cache, teacher_minutes=a.teacher_minutes,
                          exclude=str(heldout))  # never train on the quotes it is scored on
        p = prepare(o)
        runs[mode] = (o, p, Trainer(p.student, p.train_ids, distill_config(o), p.targets))
    load = [os.getloadavg()[0]]
    start = time.time()
    last_print = start
    while not all(tr.done() for _, _, tr in runs.values()):
        for _, _, tr in runs.values():
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


def _heldout_bpb(model, ids, n_bytes: int, spans) -> float:
    """Bits per byte of a transformers model over `pocketgpt eval`'s windows (float weights)."""
    import math

    import numpy as np
    import torch

    model.eval()
    nll = 0.0
    n_ctx = model.config.n_positions
    whole = [sp for sp in spans if sp[1] - sp[0] == n_ctx]
    groups = [whole[i:i + 16] for i in range(0, len(whole), 16)] + [[sp] for sp in spans if sp[1] - sp[0] != n_ctx]
    with torch.no_grad():
        for g in groups:
            x = torch.from_numpy(np.stack([ids[s:e] for s, e, _ in g]))
            lp = torch.log_softmax(model(input_ids=x).logits.double(), -1)
            for j, (s, e, first) in enumerate(g):
                rows = torch.arange(first - s, e - 1 - s)
                nll -= float(lp[j, rows, x[j, rows + 1]].sum())
    model.train()
    return nll / math.log(2) / n_bytes


def _chunk_sample(tg, fraction: float, seed: int = 7):
    """The targets on a seeded random `fraction` of 256-token chunks of the stream only."""
    import numpy as np

    from pocketgpt.shrink.targets import TeacherTargets

    if fraction >= 1:
        return tg
    starts = np.arange(0, len(tg.has), 256)
    np.random.default_rng(seed).shuffle(starts)
    keep = np.zeros(len(tg.has), bool)
    for s0 in starts[: int(round(fraction * len(starts)))]:
        keep[s0:s0 + 256] = True
    return TeacherTargets(tg.ids, tg.probs, tg.has & keep, tg.seconds * fraction, tg.teacher_tokens)


def _boundary_positions(pd, t_ids):
    """(N,) bool: student positions that end where a teacher token ends (t_ids: the teacher's stream)."""
    from pocketgpt.shrink.targets import align, token_bytes

    tv = pd.tmf.vocab
    return align(pd.train_ids, token_bytes(pd.vocab.tokens, pd.vocab.eos_id), t_ids,
                 token_bytes(tv.tokens, tv.eos_id)) >= 0


def variants_main(a: argparse.Namespace) -> int:
    import copy
    import dataclasses
    from types import SimpleNamespace

    import numpy as np
    import torch

    from pocketgpt.corpus import read_text
    from pocketgpt.evaluate import token_stream, windows
    from pocketgpt.shrink.distill import Trainer
    from pocketgpt.shrink.run import ShrinkOptions, distill_config, finish, fresh_student, prepare, training_documents

    def ints(v: str | None) -> list[int] | None:
        return [int(x) for x in v.split(",")] if v else None

    if a.threads:
        torch.set_num_threads(a.threads)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    heldout = Path(a.heldout) if a.heldout else Path(a.teacher) / "heldout.txt"
    base = dict(input=a.teacher, output=str(out_dir / "x.gguf"), corpus=a.corpus, budget=a.budget,
                merges=ints(a.vocab), layers=ints(a.layers), widths=ints(a.width), ffs=ints(a.ff), qtype="f32",
                steps=1, batch=a.batch, threads=a.threads, teacher_cache=a.teacher_cache,
                teacher_minutes=a.teacher_minutes, teacher_fraction=1.0,  # fractions: sampled from the full pass
                exclude=str(heldout))  # the same documents as the bench's own rebuilds of the teacher stream
    opts = ShrinkOptions(**base)
    pd = prepare(opts)
    teacher_start = copy.deepcopy(pd.student.state_dict())

    tok = pd.vocab.hf_tokenizer()
    ids, n_bytes = token_stream(SimpleNamespace(eos_id=pd.vocab.eos_id, encode=tok.encode), read_text(str(heldout)))
    spans = windows(len(ids), pd.cfg.n_ctx, pd.cfg.n_ctx // 2)

    stream: list = []

    def teacher_stream():
        """The training documents in the teacher's tokens, encoded once, on first use."""
        if not stream:
            from pocketgpt.train import encode_documents

            tv = pd.tmf.vocab
            docs, _, _ = training_documents(a.corpus, str(heldout))
            stream.append(encode_documents(tv.hf_tokenizer(), docs, tv.eos_id))
        return stream[0]

    probe = None
    if a.teacher_probe:
        from pocketgpt.hf import torch_model
        from pocketgpt.shrink.targets import teacher_topk, used_head
        from pocketgpt.shrink.vocab import teacher_to_student_map, trim_vocab

        teacher = torch_model(pd.tmf).eval()
        tv = pd.tmf.vocab
        t2s = teacher_to_student_map(tv, trim_vocab(tv, pd.shape.n_merges))
        t_ids = teacher_stream()
        head, t2s_used = used_head(teacher, t_ids, t2s)
        probe = {"seconds": 0.0, "tokens": 0, "rng": np.random.default_rng(3)}

        def teacher_batch() -> None:
            n = teacher.config.n_positions
            starts = probe["rng"].integers(0, len(t_ids) - n - 1, size=16)
            t0 = time.perf_counter()
            with torch.no_grad():
                x = torch.from_numpy(np.stack([t_ids[s0:s0 + n] for s0 in starts]))
                teacher_topk(teacher, head, t2s_used, pd.cfg.n_vocab, 32, x)
            probe["seconds"] += time.perf_counter() - t0
            probe["tokens"] += x.numel()

    boundary = None
    runs = []
    for v in json.loads(a.variants):
        student = copy.deepcopy(pd.student)
        seed = v.get("seed", opts.seed)
        if v.get("init", "teacher") == "scratch":  # the random start `prepare(from_scratch=True)` makes
            student.load_state_dict(fresh_student(pd.cfg, pd.vocab, seed).state_dict())
        else:
            student.load_state_dict(teacher_start)
        alpha = v.get("alpha", 0.0)
        tg = _chunk_sample(pd.targets, v.get("teacher_fraction", 1.0)) if alpha > 0 else None
        if tg is not None and v.get("boundary_only"):  # the targets before session 4: teacher token ends only
            if boundary is None:
                boundary = _boundary_positions(pd, teacher_stream())
            tg = dataclasses.replace(tg, has=tg.has & boundary)
        o = ShrinkOptions(**{**base, "steps": v["steps"], "lr": v.get("lr", a.lr), "alpha": alpha,
                             "kl_anneal": v.get("kl_anneal"), "seed": seed})
        runs.append({"v": v, "o": o, "tg": tg, "tr": Trainer(student, pd.train_ids, distill_config(o), tg), "curve": []})
    curve = {int(x) for x in a.curve.split(",") if x}
    load, rounds, last = [os.getloadavg()[0]], 0, time.time()
    while not all(r["tr"].done() for r in runs):
        for r in runs:
            tr = r["tr"]
            if tr.done():
                continue
            tr.step()
            if tr.steps in curve or tr.done():
                r["curve"].append({"step": tr.steps, "seconds": round(tr.seconds, 1),
                                   "bpb_float": round(_heldout_bpb(tr.student, ids, n_bytes, spans), 4)})
                print(r["v"]["name"], r["curve"][-1], flush=True)
        rounds += 1
        if probe and rounds % a.teacher_probe == 0:
            teacher_batch()
        if time.time() - last > 60:
            last = time.time()
            load.append(os.getloadavg()[0])
            print(" | ".join(f"{r['v']['name']}: step {r['tr'].steps}, {r['tr'].seconds:.0f} s, ce {r['tr'].ema:.3f}"
                             for r in runs), flush=True)
    result: dict = {"load_average_1min": {"min": min(load), "max": max(load), "mean": round(sum(load) / len(load), 2)},
                    "cpu_count": os.cpu_count(), "threads": a.threads,
                    "teacher_full_pass_seconds_cached": pd.targets.seconds, "runs": []}
    if probe:
        result["teacher_probe"] = {"seconds": round(probe["seconds"], 2), "tokens": probe["tokens"],
                                   "full_pass_estimate_seconds": round(probe["seconds"] / probe["tokens"]
                                                                       * pd.targets.teacher_tokens, 1)}
    for r in runs:
        tr, v = r["tr"], r["v"]
        o = dataclasses.replace(r["o"], output=str(out_dir / f"{v['name']}.q8.gguf"), qtype="q8",
                                from_scratch=v.get("init") == "scratch")
        d, _ = finish(o, dataclasses.replace(pd, student=tr.student, targets=r["tg"], qspec="q8"), tr.result(pd.val_ids))
        ev = _eval(Path(o.output), heldout)
        if r["tg"] is not None:
            v = {**v, "target_coverage": round(r["tg"].coverage, 4), "target_mass": round(r["tg"].mass(), 4)}
        result["runs"].append({**v, "seconds": round(tr.seconds, 1), "seconds_per_step": round(tr.seconds / tr.steps, 4),
                               "curve": r["curve"], "val_loss_nats": d["distill"]["val_loss"],
                               "heldout_bpb_q8": round(ev["bpb"], 4), "file_bytes": d["file_bytes"]})
        print(v["name"], json.dumps(result["runs"][-1]), flush=True)
    Path(a.json_out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
