"""How well does the device's router send hard requests to the relay? Measured, not assumed.

The requests are one line, as users type or say them, from text on this machine that is not this
repository's (bench/routing_sets.py says how each set is made):

- in-domain: requests about the subjects of held-out fortune quotes ("What do you think about
  camels?", "What did Mark Twain say about money?"), the quotes being pocketgpt train's seeded 5 %
  validation split of the fortune corpus, in phrasings written in routing_sets.py;
- out-of-domain: one-line technical questions made from the NAME lines of the section-1 man pages
  ("How do I list directory contents?") and from the installed Debian packages' descriptions
  ("What is GNU Bourne Again SHell?").

The measurements come from the firmware's own code: the device simulator (firmware/app + the C
engine) answers `/route REQUEST` with what the router sees (the request in the chat layout, its
token count, byte fallbacks, mean and peak surprisal). Escalation is "positive"; an out-of-domain
request should escalate. The script prints the escalation rates at the shipped defaults and over a
sweep, and writes bench/results/routing.json.

    python bench/routing.py [--model M.gguf] [--corpus DIR] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import routing_sets  # noqa: E402

ROUTE_RE = re.compile(r"^route: (\w+) tokens=(\d+) request=(\d+) bytefallback=(\d+) surprisal=([0-9.]+) peak=([0-9.]+)$")


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
    return [{"route": m[1], "tokens": int(m[2]), "request": int(m[3]), "bytefallback": int(m[4]),
             "surprisal": float(m[5]), "peak": float(m[6])} for m in rows]


def decide(r: dict, n_ctx: int, cfg: dict, max_surprisal: float | None = None, max_bytefrac: float | None = None,
           key: str = "peak") -> bool:
    """firmware/app/router.c's rule (checked against the C decision at the defaults); `key` "surprisal" scores
    the mean-surprisal rule the router used before, for comparison."""
    s = cfg["max_surprisal"] if max_surprisal is None else max_surprisal
    bf = cfg["max_bytefrac"] if max_bytefrac is None else max_bytefrac
    if r["tokens"] + cfg["min_reply"] > n_ctx:
        return True
    if r["request"] >= cfg["min_tokens"]:
        if bf <= 1.0 and r["bytefallback"] > bf * r["request"]:
            return True
        if s > 0 and r[key] > s:
            return True
    return False


def rates(ood: list[bool], ind: list[bool]) -> dict:
    return {"ood_escalated": round(sum(ood) / max(1, len(ood)), 3), "in_escalated": round(sum(ind) / max(1, len(ind)), 3)}


def firmware_defaults() -> dict:
    """The router's shipped defaults, read from pg_router_defaults in firmware/app/router.c (the one place)."""
    src = (ROOT / "firmware" / "app" / "router.c").read_text(encoding="utf-8")
    out = {}
    for key in ("max_bytefrac", "max_surprisal", "min_reply", "min_tokens"):
        m = re.search(rf"c->{key}\s*=\s*([0-9.]+)f?;", src)
        if m is None:
            raise SystemExit(f"firmware/app/router.c: no default for {key}")
        out[key] = float(m.group(1)) if key.startswith("max") else int(m.group(1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="builtin:device", help="device model (.gguf or builtin:device)")
    ap.add_argument("--corpus", default="/usr/share/games/fortunes", help="the quotes corpus the model was trained on")
    ap.add_argument("--n", type=int, default=300, help="requests per side (default 300)")
    ap.add_argument("--ctx", type=int, default=256, help="device context (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="which requests are drawn and how they are phrased (default 0)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "routing.json"))
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "host"))
    from pocketgpt.commands.device import build
    from pocketgpt.corpus import read_documents
    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.models import resolve
    from pocketgpt.train import split_documents

    model = str(resolve(args.model))
    _, held_out = split_documents(read_documents([args.corpus]), 0.05, 1337)  # pocketgpt train's defaults
    ind = routing_sets.in_domain_requests(held_out, args.n, args.seed)
    ood, sources = routing_sets.out_of_domain_requests(args.n, args.seed)
    exe = build()
    off = ["route.max_surprisal=0", "route.max_bytefrac=2"]
    m_in, m_ood = measure(exe, model, ind, args.ctx, off), measure(exe, model, ood, args.ctx, off)
    n_ctx = min(args.ctx, read_gguf(model).cfg.n_ctx)
    cfg = firmware_defaults()
    # the C router at its shipped defaults, to check this script's rule against the firmware's
    theirs = [r["route"] != "local" for r in measure(exe, model, ind + ood, args.ctx, [])]
    if [decide(r, n_ctx, cfg) for r in m_in + m_ood] != theirs:
        raise SystemExit("bench/routing.py's rule disagrees with firmware/app/router.c: fix one of them")

    def at(s: float, bf: float, key: str = "peak") -> dict:
        return rates([decide(r, n_ctx, cfg, s, bf, key) for r in m_ood], [decide(r, n_ctx, cfg, s, bf, key) for r in m_in])

    sweep = [{"max_surprisal": s, "max_bytefrac": bf, **at(s, bf)}
             for s in [x / 4 for x in range(20, 49)] for bf in (cfg["max_bytefrac"], 2.0)]
    ok = [r for r in sweep if r["in_escalated"] <= 0.20 and r["max_bytefrac"] == cfg["max_bytefrac"]]
    best = max(ok, key=lambda r: (r["ood_escalated"], -r["in_escalated"])) if ok else None
    mean_rule = [{"max_mean_surprisal": s, **at(s, 2.0, "surprisal")} for s in [x / 4 for x in range(12, 41)]]
    mean_ok = [r for r in mean_rule if r["in_escalated"] <= 0.20]
    mean_best = max(mean_ok, key=lambda r: r["ood_escalated"]) if mean_ok else None
    avg = lambda rows, k: round(sum(r[k] for r in rows) / max(1, len(rows)), 3)  # noqa: E731
    result = {
        "model": args.model, "seed": args.seed, "n_ctx": n_ctx, "n_in_domain": len(m_in), "n_out_of_domain": len(m_ood),
        "sources": {"in_domain": f"subjects of {len(held_out)} held-out quotes of {args.corpus} (train split "
                                 "0.05, seed 1337), phrasings of bench/routing_sets.py",
                    "out_of_domain": f"{sources['man_pages']} man-page NAME lines (/usr/share/man/man1) and "
                                     f"{sources['dpkg_descriptions']} package descriptions (/var/lib/dpkg/status), "
                                     "half each, phrasings of bench/routing_sets.py"},
        "request_tokens": {"in": avg(m_in, "request"), "ood": avg(m_ood, "request")},
        "mean_surprisal": {"in": avg(m_in, "surprisal"), "ood": avg(m_ood, "surprisal")},
        "peak_surprisal": {"in": avg(m_in, "peak"), "ood": avg(m_ood, "peak")},
        "defaults": {**cfg, **at(cfg["max_surprisal"], cfg["max_bytefrac"])},
        "best_peak_within_20pct": best, "best_mean_rule_within_20pct": mean_best,
        "sweep": sweep, "mean_rule_sweep": mean_rule,
        "requests": {"in": ind, "ood": ood},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(out)
    print(f"model {model} (context {n_ctx}); {len(m_in)} in-domain vs {len(m_ood)} out-of-domain one-line requests")
    print(f"request tokens: {result['request_tokens']}; mean surprisal: {result['mean_surprisal']}; "
          f"peak surprisal (top {3}): {result['peak_surprisal']}")
    print(f"{'peak >':>7} {'bytefrac':>8} {'ood escalated':>13} {'in-domain escalated':>19}")
    for r in sweep:
        if r["max_bytefrac"] == cfg["max_bytefrac"]:
            print(f"{r['max_surprisal']:>7} {r['max_bytefrac']:>8} {r['ood_escalated']:>13} {r['in_escalated']:>19}")
    d = result["defaults"]
    print(f"shipped defaults (peak > {d['max_surprisal']}, byte fallbacks > {100 * d['max_bytefrac']:.0f} %): "
          f"out-of-domain escalated {d['ood_escalated']}, in-domain {d['in_escalated']}")
    if best:
        print(f"best peak threshold with <= 20 % in-domain: {best['max_surprisal']}: {best['ood_escalated']} / {best['in_escalated']}")
    if mean_best:
        print(f"the old mean-surprisal rule at its best within 20 %: > {mean_best['max_mean_surprisal']}: "
              f"{mean_best['ood_escalated']} / {mean_best['in_escalated']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
