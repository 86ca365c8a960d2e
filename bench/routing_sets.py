"""One-line request sets for the router (bench/routing.py), built from text on this machine that is not this
repository's: held-out fortune quotes (in-domain subjects) and man-page NAME lines and dpkg package descriptions
(out-of-domain). The phrasings are written here; each set records where its lines came from."""

from __future__ import annotations

import glob
import gzip
import random
import re
from pathlib import Path

STOP = set("""a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each even ever every few for from further get got had has
have having he her here hers herself him himself his how i if in into is it its itself just let like make many may me
might more most much must my myself never no nor not now of off on once one only or other our ours ourselves out over
own really said same say says shall she should so some such than that the their theirs them themselves then there these
they this those through to too under until up upon us very was way we well were what when where which while who whom
why will with without would yet you your yours yourself yourselves thing things something nothing anything everything
someone anyone everyone people man men woman women time times always still come came goes going gone know knew think
thought want take took give gave tell told see saw look made makes first last long little great good back""".split())

IN_PHRASES = [
    "What do you think about {x}?", "Tell me something about {x}.", "Say something funny about {x}.",
    "Give me some advice about {x}.", "Do you have a quote about {x}?", "What is the truth about {x}?",
    "Tell me a joke about {x}.", "Any wisdom on {x}?", "what about {x}", "Talk to me about {x}.",
    "I keep thinking about {x}.", "What's your take on {x}?", "Say something wise about {x}.",
    "Got anything on {x}?", "Why do people care so much about {x}?",
]
AUTHOR_PHRASES = ["What did {a} say about {x}?", "Give me a quote by {a}.", "What would {a} say about {x}?"]

VERBS = set("""list show display print create delete remove convert manage set get change compress decompress copy move
run check find search send read write edit format update install build generate make start stop query extract split
merge compare report monitor mount unmount configure control add dump execute view test transfer translate encode decode
sort count compute calculate download upload sign verify encrypt decrypt debug trace kill connect open close locate
filter scan parse validate render capture record play resize rename restore backup synchronize sync enable disable
inspect describe attach detach import export clean initialize""".split())
MAN_HOWTO = ["How do I {d}?", "how can I {d} on linux", "What command do I use to {d}?", "Is there a way to {d}?"]
MAN_WHAT = ["What does the {c} command do?", "What is {c} used for?", "How do I use {c}?", "explain {c} to me"]
PKG_PHRASES = ["What is {d}?", "How do I install {d}?", "Can you explain {d}?", "Do I need {d}?",
               "what is {d} good for"]


def quote_subject(quote: str, rng: random.Random) -> str | None:
    """A noun the quote is about: a lowercase word of 4+ letters right after a determiner (the cat, my wife)."""
    body = "\n".join(ln for ln in quote.splitlines() if not ln.strip().startswith("--"))
    pairs = re.findall(r"\b(?i:the|a|an|my|your|his|her|their|our|no|every|this|of|about)\s+([a-z]{4,})\b", body)
    words = [w for w in pairs if w not in STOP and not w.endswith(("ly", "ing", "ed"))]
    return rng.choice(words) if words else None


def quote_author(quote: str) -> str | None:
    m = re.search(r"^\s*--\s*([A-Z][A-Za-z.]+(?: [A-Z][A-Za-z.]+){0,2})\s*$", quote, re.M)
    return m.group(1) if m else None


def in_domain_requests(quotes: list[str], n: int, seed: int = 0) -> list[str]:
    """Requests about the subjects of held-out quotes, in phrasings written here (not the training ones)."""
    rng = random.Random(seed)
    out = []
    for q in rng.sample(quotes, len(quotes)):
        x = quote_subject(q, rng)
        if not x:
            continue
        a = quote_author(q)
        if a and rng.random() < 0.15:
            out.append(rng.choice(AUTHOR_PHRASES).format(a=a, x=x))
        else:
            out.append(rng.choice(IN_PHRASES).format(x=x))
        if len(out) == n:
            break
    return out


def _clean_roff(s: str) -> str:
    s = re.sub(r"\\f[BIRP]|\\&|\\\(e[mn]|\\c", "", s).replace("\\-", "-").replace("\\", "")
    return " ".join(s.replace(".br", " ").split())


def man_name_lines(root: str = "/usr/share/man/man1") -> list[tuple[str, str]]:
    """(command, description) from the NAME section of section-1 man pages, one per command family."""
    seen, out = set(), []
    for f in sorted(glob.glob(f"{root}/*.gz")):
        try:
            text = gzip.open(f, "rt", errors="replace").read(6000)
        except OSError:
            continue
        m = re.search(r"^\.SH\s+\"?NAME\"?\s*\n(.*?)\n\.(?:SH|PP|sp|TP|HP)\b", text, re.M | re.S)
        if not m:
            continue
        line = _clean_roff(re.sub(r"^\.\w+\s*", "", m.group(1), flags=re.M))
        if " - " not in line:
            continue
        cmd, desc = line.split(" - ", 1)
        cmd = cmd.split(",")[0].strip()
        family = cmd.split()[0] if cmd else ""
        desc = desc.split(" - ")[0].strip().rstrip(".")
        if not family or family in seen or not (8 <= len(desc) <= 90) or not re.match(r"^[\w.+-]+$", family):
            continue
        seen.add(family)
        out.append((family, desc))
    return out


def dpkg_descriptions(path: str = "/var/lib/dpkg/status") -> list[str]:
    out = []
    for m in re.finditer(r"^Description: (.+)$", Path(path).read_text(errors="replace"), re.M):
        d = m.group(1).strip().rstrip(".")
        if 8 <= len(d) <= 80 and d not in out:
            out.append(d)
    return out


def out_of_domain_requests(n: int, seed: int = 0) -> tuple[list[str], dict]:
    """Half one-line questions made from man-page NAME lines, half from installed packages' descriptions."""
    rng = random.Random(seed)
    man = man_name_lines()
    pkgs = dpkg_descriptions()
    rng.shuffle(man)
    rng.shuffle(pkgs)
    out = []
    for cmd, desc in man[: n - n // 2]:
        first = desc.split()[0].lower()
        if first in VERBS:
            d = desc[0].lower() + desc[1:]
            out.append(rng.choice(MAN_HOWTO).format(d=d))
        else:
            out.append(rng.choice(MAN_WHAT).format(c=cmd))
    for d in pkgs[: n // 2]:
        d = d[0].lower() + d[1:] if d[:2].istitle() and not d[:2].isupper() else d
        out.append(rng.choice(PKG_PHRASES).format(d=d))
    rng.shuffle(out)
    return out, {"man_pages": len(man), "dpkg_descriptions": len(pkgs)}
