"""How well does the device's router send hard prompts to the relay? Measured, not assumed.

In-domain prompts are held-out quotes (the quotes the model was not trained on: pocketgpt train's
seeded split of the fortune corpus, or a heldout.txt); out-of-domain prompts are technical prose
(this project's own docs and the engine README, code and tables stripped). Each prompt is what a
user might type: the first --chars characters of a document, cut at a word.

The measurements come from the firmware's own code: the device simulator (`pocketgpt device`,
firmware/app + the C engine) answers `/route PROMPT` with the token count, the byte-fallback count
and the mean surprisal the router sees. Escalation is "positive"; an out-of-domain prompt is one
that should escalate. The script prints precision and recall of escalation at the configured
thresholds and over a sweep, and writes bench/results/routing.json.

    python bench/routing.py [--model M.gguf] [--corpus DIR_OR_FILE | --in-domain heldout.txt]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROUTE_RE = re.compile(r"^route: (\w+) tokens=(\d+) bytefallback=(\d+) surprisal=([0-9.]+)$")


def clean_markdown(text: str) -> list[str]:
    """Paragraphs of prose from a Markdown file (no code blocks, tables, headings or lists of code)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    paras = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith(("|", "#", "    "))]
        para = " ".join(ln.strip() for ln in lines)
        para = re.sub(r"`([^`]*)`", r"\1", para)
        if len(para) >= 80:
            paras.append(para)
    return paras


def ood_documents(paths: list[Path]) -> list[str]:
    docs: list[str] = []
    for p in paths:
        docs += clean_markdown(p.read_text(encoding="utf-8"))
    return docs


def in_domain_documents(corpus: str | None, heldout: str | None) -> list[str]:
    from pocketgpt.corpus import read_documents, read_text, split_documents
    from pocketgpt.train import split_documents as train_split

    if heldout:
        return [d for d in split_documents(read_text(heldout)) if d.strip()]
    _, val = train_split(read_documents([corpus]), 0.05, 1337)  # pocketgpt train's defaults
    return val


def as_prompt(doc: str, chars: int) -> str:
    flat = " ".join(doc.split())
    if len(flat) <= chars:
        return flat
    cut = flat[:chars]
    return cut[: cut.rfind(" ")] if " " in cut else cut


def measure(exe: Path, model: str, prompts: list[str], ctx: int, settings: list[str]) -> list[dict]:
    script = "".join(f"/route {p}\n" for p in prompts)
    cmd = [str(exe), "--model", model, "--ctx", str(ctx)]
    for s in settings:
        cmd += ["--set", s]
    out = subprocess.run(cmd, input=script, capture_output=True, text=True, check=True).stdout
    rows = [ROUTE_RE.match(ln) for ln in out.splitlines()]
    rows = [m for m in rows if m]
    if len(rows) != len(prompts):
        raise SystemExit(f"expected {len(prompts)} route lines, got {len(rows)}")
    return [{"route": m[1], "tokens": int(m[2]), "bytefallback": int(m[3]), "surprisal": float(m[4])} for m in rows]


def decide(r: dict, n_ctx: int, min_reply: int, max_bytefrac: float, max_surprisal: float, min_tokens: int = 4) -> bool:
    """firmware/app/router.c's rule (checked against the C decision at the default thresholds)."""
    if r["tokens"] + min_reply > n_ctx:
        return True
    if r["tokens"] >= min_tokens:
        if max_bytefrac <= 1.0 and r["bytefallback"] > max_bytefrac * r["tokens"]:
            return True
        if max_surprisal > 0 and r["surprisal"] > max_surprisal:
            return True
    return False


def scores(pos: list[bool], neg: list[bool]) -> dict:
    tp, fp = sum(pos), sum(neg)
    fn = len(pos) - tp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3),
            "escalated_in_domain": round(fp / max(1, len(neg)), 3)}


def firmware_defaults() -> dict:
    """The router's shipped defaults, read from firmware/app/settings.c (the one place they live)."""
    src = (ROOT / "firmware" / "app" / "settings.c").read_text(encoding="utf-8")
    out = {}
    for key in ("max_bytefrac", "max_surprisal", "min_reply"):
        m = re.search(rf"s->route_{key}\s*=\s*([0-9.]+)f?;", src)
        if m is None:
            raise SystemExit(f"firmware/app/settings.c: no default for route_{key}")
        out[key] = float(m.group(1)) if key != "min_reply" else int(m.group(1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:device", help="device model (.gguf or builtin:device)")
    ap.add_argument("--corpus", default="/usr/share/games/fortunes", help="the quotes corpus the model was trained on")
    ap.add_argument("--in-domain", help="held-out quotes file instead of re-splitting --corpus")
    ap.add_argument("--ood", nargs="*", help="Markdown files of technical prose (default: docs/*.md, engine README)")
    ap.add_argument("--n", type=int, default=200, help="prompts per side (default 200)")
    ap.add_argument("--chars", type=int, default=160, help="prompt length in characters (default 160)")
    ap.add_argument("--ctx", type=int, default=256, help="device context (default 256)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "routing.json"))
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "host"))
    from pocketgpt.commands.device import build
    from pocketgpt.models import resolve

    model = str(resolve(args.model))
    ood_paths = [Path(p) for p in args.ood] if args.ood else sorted((ROOT / "docs").glob("*.md")) + [
        ROOT / "firmware" / "engine" / "README.md"]
    rng = random.Random(0)
    ind = [as_prompt(d, args.chars) for d in in_domain_documents(args.corpus, args.in_domain)]
    ood = [as_prompt(d, args.chars) for d in ood_documents(ood_paths)]
    ind = [p for p in ind if len(p) >= 20]
    rng.shuffle(ind)
    rng.shuffle(ood)
    n = min(args.n, len(ind), len(ood))  # balanced: precision then means the same on both sides
    ind, ood = ind[:n], ood[:n]
    exe = build()
    raw_set = ["route.max_surprisal=0", "route.max_bytefrac=2"]
    m_in = measure(exe, model, ind, args.ctx, raw_set)
    m_ood = measure(exe, model, ood, args.ctx, raw_set)
    # the C router at its shipped defaults, to check this script's rule against the firmware's
    d_in = measure(exe, model, ind, args.ctx, [])
    d_ood = measure(exe, model, ood, args.ctx, [])
    from pocketgpt.gguf_io import read_gguf

    n_ctx = min(args.ctx, read_gguf(model).cfg.n_ctx)
    defaults = firmware_defaults()
    mine = [decide(r, n_ctx, defaults["min_reply"], defaults["max_bytefrac"], defaults["max_surprisal"])
            for r in m_in + m_ood]
    theirs = [r["route"] != "local" for r in d_in + d_ood]
    if mine != theirs:
        raise SystemExit("bench/routing.py's rule disagrees with firmware/app/router.c: fix one of them")

    def at(bf: float, s: float) -> dict:
        return scores([decide(r, n_ctx, 16, bf, s) for r in m_ood], [decide(r, n_ctx, 16, bf, s) for r in m_in])

    rows = []
    for s in [4.0, 5.0, 5.5, 6.0, 6.25, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 0.0]:
        for bf in [0.2, 0.35, 0.5, 2.0]:
            rows.append({"max_surprisal": s, "max_bytefrac": bf, **at(bf, s)})
    best = max(rows, key=lambda r: (r["f1"], r["precision"]))
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    result = {
        "model": args.model, "n_ctx": n_ctx, "n_in_domain": len(m_in), "n_out_of_domain": len(m_ood), "chars": args.chars,
        "note": "balanced classes; positives are technical prompts (should escalate)",
        "mean_surprisal_in": round(mean([r["surprisal"] for r in m_in]), 3),
        "mean_surprisal_ood": round(mean([r["surprisal"] for r in m_ood]), 3),
        "bytefallback_frac_in": round(mean([r["bytefallback"] / max(1, r["tokens"]) for r in m_in]), 3),
        "bytefallback_frac_ood": round(mean([r["bytefallback"] / max(1, r["tokens"]) for r in m_ood]), 3),
        "defaults": {**defaults, **at(defaults["max_bytefrac"], defaults["max_surprisal"])}, "best": best, "sweep": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"model {model} (context {n_ctx}); {len(m_in)} held-out quotes vs {len(m_ood)} technical paragraphs, "
          f"{args.chars}-character prompts")
    print(f"mean surprisal (nats/token): quotes {result['mean_surprisal_in']}, technical {result['mean_surprisal_ood']}; "
          f"byte-fallback share: {result['bytefallback_frac_in']} vs {result['bytefallback_frac_ood']}")
    print(f"{'max_surprisal':>13} {'max_bytefrac':>12} {'precision':>9} {'recall':>6} {'f1':>5} {'quotes escalated':>16}")
    for r in rows:
        print(f"{r['max_surprisal']:>13} {r['max_bytefrac']:>12} {r['precision']:>9} {r['recall']:>6} {r['f1']:>5} "
              f"{r['escalated_in_domain']:>16}")
    d = result["defaults"]
    print(f"shipped defaults (surprisal > {d['max_surprisal']}, byte fallbacks > {100 * d['max_bytefrac']:.0f} %): precision {d['precision']}, recall {d['recall']}")
    print(f"best F1 in the sweep: surprisal > {best['max_surprisal']}, bytefrac > {best['max_bytefrac']}: "
          f"precision {best['precision']}, recall {best['recall']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
