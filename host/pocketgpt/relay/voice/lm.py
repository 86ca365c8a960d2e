"""Build the recognizer's language model: a trigram model in ARPA form, written by this code.

pocketsphinx's general English model hears espeak-ng's voice with about one word in three
wrong; most of that is the language model guessing unlikely word strings. A small model of what
people say to this relay (requests from `commands.py`) and of the text its model was trained on
(Debian's fortunes) cuts that a lot. The recipe:

1. text: every fortune quote (minus the held-out ones in `evalsets.QUOTES`), cut into sentences,
   plus the expanded requests (minus any equal to `evalsets.REQUESTS`), requests counted
   `request_weight` times;
2. words: lower case, apostrophes kept; words missing from pocketsphinx's pronunciation
   dictionary become <unk> (counted, then left out of the model: the recognizer cannot say them);
3. interpolated Kneser-Ney trigram (one discount per order, D = n1 / (n1 + 2 n2)), trigrams seen
   once pruned, back-off weights renormalised after pruning so every distribution sums to one;
4. ARPA text, then pocketsphinx's own binary form (loads in a fraction of the time).

    python -m pocketgpt.relay.voice.lm [--fortunes /usr/share/games/fortunes] [--out FILE]
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pocketgpt.errors import PocketError, atomic_path
from pocketgpt.relay.voice import commands, evalsets

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_SENT = re.compile(r"(?<=[.!?;:])\s+|\s--\s|\n\s*\n|\s*\t\s*")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words_of(text: str) -> list[str]:
    text = text.lower().replace("’", "'").replace("`", "'")
    return _WORD.findall(text)


def sentences_of(doc: str) -> list[list[str]]:
    out = []
    for part in _SENT.split(doc.replace("\n", " \n ")):
        w = words_of(part)
        if w:
            out.append(w)
    return out


def load_dictionary(path: str | None = None) -> set[str]:
    """Words pocketsphinx can pronounce (cmudict-en-us.dict; variants like "read(2)" folded)."""
    if path is None:
        import pocketsphinx

        path = str(Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict")
    words = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            w = line.split(" ", 1)[0]
            words.add(re.sub(r"\(\d+\)$", "", w))
    return words


def build_corpus(fortunes: str | None) -> tuple[list[list[str]], list[list[str]]]:
    """(quote sentences, request sentences) as word lists, held-out evaluation text removed."""
    held_requests = {" ".join(words_of(s)) for s in evalsets.REQUESTS}
    held_quotes = [" ".join(words_of(s)) for s in evalsets.QUOTES]
    quotes: list[list[str]] = []
    if fortunes:
        from pocketgpt.corpus import read_documents

        for doc in read_documents([fortunes]):
            flat = " ".join(words_of(doc))
            if any(h in flat for h in held_quotes):
                continue  # the whole quote a held-out sentence comes from stays out
            quotes.extend(s for s in sentences_of(doc) if " ".join(s) not in held_requests)
    requests = [words_of(s) for s in commands.request_sentences()]
    requests = [r for r in requests if " ".join(r) not in held_requests]
    return quotes, requests


def _discount(counts: Iterable[int]) -> float:
    hist = collections.Counter(c for c in counts if c <= 2)
    n1, n2 = hist.get(1, 0), hist.get(2, 0)
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def train_trigram(sentences: Iterable[tuple[list[str], int]], vocab: set[str], prune: int = 2) -> dict:
    """Interpolated Kneser-Ney trigram over (words, weight) sentences -> {1: {...}, 2: {...}, 3: {...}}
    where each order maps an n-gram tuple to (log10 prob, log10 back-off or None)."""
    c3: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for words, weight in sentences:
        toks = [BOS] + [w if w in vocab else UNK for w in words] + [EOS]
        toks = [BOS] + toks  # trigram histories at the start: (<s>, <s>) is folded to (<s>,) below
        for i in range(2, len(toks)):
            c3[(toks[i - 2], toks[i - 1], toks[i])] += weight
    # raw bigram counts for histories that start the sentence; the rest use continuation counts
    tri = {k: v for k, v in c3.items() if k[0] != BOS or k[1] != BOS}
    big_raw: collections.Counter[tuple[str, str]] = collections.Counter()
    for (u, v, w), n in c3.items():
        if u == BOS and v == BOS:
            big_raw[(v, w)] += n  # (<s>, w): sentence-initial bigram, raw count
    cont2: collections.Counter[tuple[str, str]] = collections.Counter()
    for (_u, v, w) in tri:
        cont2[(v, w)] += 1
    a2: dict[tuple[str, str], int] = dict(cont2)
    for k, n in big_raw.items():
        a2[k] = n
    cont1: collections.Counter[str] = collections.Counter()
    for (_v, w) in a2:
        cont1[w] += 1

    d3 = _discount(tri.values())
    d2 = _discount(a2.values())
    words = sorted((set(vocab) & set(cont1)) | {EOS})
    total1 = sum(cont1[w] for w in words)
    d1 = _discount(cont1[w] for w in words)
    p1 = {}
    for w in words:
        p1[w] = max(cont1[w] - d1, 0) / total1 + (d1 * len(words) / total1) / len(words)

    # order 2
    hist2: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for (v, w), n in a2.items():
        if UNK in (v, w):
            continue
        hist2[v].append((w, n))
    tot2: collections.Counter[str] = collections.Counter()
    types2: collections.Counter[str] = collections.Counter()
    for (v, _w), n in a2.items():
        tot2[v] += n
        types2[v] += 1
    p2: dict[tuple[str, str], float] = {}
    bow1: dict[str, float] = {}
    for v, items in hist2.items():
        lam = d2 * types2[v] / tot2[v]
        s_hi = s_lo = 0.0
        for w, n in items:
            if w not in p1:
                continue
            p = max(n - d2, 0) / tot2[v] + lam * p1[w]
            p2[(v, w)] = p
            s_hi += p
            s_lo += p1[w]
        bow1[v] = max(1e-12, 1.0 - s_hi) / max(1e-12, 1.0 - s_lo)

    # order 3 (highest: raw counts), trigrams seen fewer than `prune` times dropped
    hist3: dict[tuple[str, str], list[tuple[str, int]]] = collections.defaultdict(list)
    tot3: collections.Counter[tuple[str, str]] = collections.Counter()
    types3: collections.Counter[tuple[str, str]] = collections.Counter()
    for (u, v, w), n in tri.items():
        tot3[(u, v)] += n
        types3[(u, v)] += 1
        if n >= prune and UNK not in (u, v, w):
            hist3[(u, v)].append((w, n))
    p3: dict[tuple[str, str, str], float] = {}
    bow2: dict[tuple[str, str], float] = {}
    for (u, v), items in hist3.items():
        lam = d3 * types3[(u, v)] / tot3[(u, v)]
        s_hi = s_lo = 0.0
        for w, n in items:
            lower = p2.get((v, w))
            if lower is None:
                continue
            p = max(n - d3, 0) / tot3[(u, v)] + lam * lower
            p3[(u, v, w)] = p
            s_hi += p
            s_lo += lower
        if (u, v) in p2:
            bow2[(u, v)] = max(1e-12, 1.0 - s_hi) / max(1e-12, 1.0 - s_lo)

    lg = math.log10
    model: dict[int, dict[tuple[str, ...], tuple[float, float | None]]] = {1: {}, 2: {}, 3: {}}
    model[1][(BOS,)] = (-99.0, lg(bow1[BOS]) if BOS in bow1 else 0.0)
    for w in words:
        model[1][(w,)] = (lg(p1[w]), lg(bow1[w]) if w in bow1 else None)
    for k, p in p2.items():
        model[2][k] = (lg(p), lg(bow2[k]) if k in bow2 else None)
    for k3, p in p3.items():
        if k3[:2] in p2:
            model[3][k3] = (lg(p), None)
    return model


def write_arpa(model: dict, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n in (1, 2, 3):
            f.write(f"ngram {n}={len(model[n])}\n")
        for n in (1, 2, 3):
            f.write(f"\n\\{n}-grams:\n")
            for gram, (lp, bow) in sorted(model[n].items()):
                line = f"{lp:.5f}\t{' '.join(gram)}"
                if n < 3 and bow is not None:
                    line += f"\t{bow:.5f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def arpa_to_binary(arpa: Path, out: Path) -> None:
    """pocketsphinx's binary form of an ARPA file, written atomically."""
    import pocketsphinx as ps

    config = ps.Config(lm=None, hmm=None, dict=None, loglevel="FATAL")
    model = ps.NGramModel(config, ps.LogMath(), str(arpa))
    with atomic_path(out) as tmp:
        staged = tmp.with_suffix(".bin")  # pocketsphinx picks the format from the extension
        try:
            model.write(str(staged), ps.NGramModel.str_to_type("bin"))
            staged.replace(tmp)
        finally:
            staged.unlink(missing_ok=True)


def build(fortunes: str | None, out: Path, request_weight: int = 4, prune: int = 2,
          arpa_out: Path | None = None) -> dict[str, int]:
    vocab = load_dictionary()
    quotes, requests = build_corpus(fortunes)
    data = [(s, 1) for s in quotes] + [(s, request_weight) for s in requests]
    model = train_trigram(data, vocab, prune=prune)
    with tempfile.TemporaryDirectory() as tmpdir:
        arpa = Path(tmpdir) / "lm.arpa"
        write_arpa(model, arpa)
        if arpa_out is not None:
            with atomic_path(arpa_out) as tmp:
                tmp.write_bytes(arpa.read_bytes())
        arpa_to_binary(arpa, out)
    return {"quote_sentences": len(quotes), "request_sentences": len(requests),
            "words": sum(len(s) for s in quotes) + sum(len(s) for s in requests),
            "unigrams": len(model[1]), "bigrams": len(model[2]), "trigrams": len(model[3]),
            "file_bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    from pocketgpt.relay.voice.stt import shipped_lm

    ap = argparse.ArgumentParser(prog="python -m pocketgpt.relay.voice.lm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fortunes", default="/usr/share/games/fortunes",
                    help="fortune files (Debian's fortunes package); 'none' for requests only")
    ap.add_argument("--out", default=str(shipped_lm()), help="binary LM to write (default: the shipped one)")
    ap.add_argument("--arpa", default=None, help="also keep the ARPA text here")
    ap.add_argument("--request-weight", type=int, default=4, help="how many times each request counts (default 4)")
    ap.add_argument("--prune", type=int, default=2, help="drop trigrams seen fewer times (default 2)")
    args = ap.parse_args(argv)
    fortunes = None if args.fortunes == "none" else args.fortunes
    try:
        if fortunes and not Path(fortunes).exists():
            raise PocketError(f"{fortunes}: no such folder; install Debian's fortunes package or pass --fortunes none")
        stats = build(fortunes, Path(args.out), args.request_weight, args.prune,
                      Path(args.arpa) if args.arpa else None)
    except PocketError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in stats.items()), f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
