"""Chat pairs made from a quote corpus: a request about a quote's subject, the quote as the reply.

A quote's subjects are its content words (not stop words, not numbers), the rarer ones first:
"money" is a better subject for a quote about money than "said". Each pair picks one subject and
one phrasing of one request kind (an opinion, something funny, advice, a joke, what the quote's
author said, the bare subject); a few pairs are small talk ("Who are you?") answered by a short
quote. Two disjoint sets of phrasings exist: `TRAIN` for training pairs, `EVAL` for evaluation
(bench/chat.py), so a measured model has never seen the wording of the request, only its kind.

Everything is seeded; the same documents and seed give the same pairs.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pocketgpt.chat_format import training_text

# English function words and words too common in quotes to name what one is about.
STOP_WORDS = frozenset("""
a about above across after again against all almost alone along already also although always am
among an and another any anybody anyone anything anywhere are aren't around as at away back be
became because become becomes been before being below between both but by came can can't cannot
come could couldn't did didn't do does doesn't doing don't done down during each either else enough
even ever every everybody everyone everything few first for from further get gets getting give
given gives go goes going gone got had hadn't has hasn't have haven't having he he'd he'll he's her
here here's hers herself him himself his how how's however i i'd i'll i'm i've if in into is isn't
it it's its itself just keep know last least less let let's like likely made make makes many may
maybe me might mine more most much must mustn't my myself near need never new next no nobody none
nor not nothing now of off often oh ok okay on once one ones only onto or other others otherwise
ought our ours ourselves out over own per perhaps put quite rather really said same say says see
seem seemed seems several shall shan't she she'd she'll she's should shouldn't since so some
somebody someone something sometimes still such take than that that's the their theirs them
themselves then there there's therefore these they they'd they'll they're they've thing things
think this those though through thus to too took toward towards two under unless until up upon us
use used very want was wasn't way we we'd we'll we're we've well went were weren't what what's
whatever when when's where where's whether which while who who's whom whose why why's will with
within without won't would wouldn't yes yet you you'd you'll you're you've your yours yourself
yourselves get got ever also back three four five six seven eight nine ten first second
yeah yes hey hmm gee wow
far long little big great good bad old right left lot lots enough around able sure true whole
tell told ask asked call called find found keep kept look looked mean means feel felt try tried
put puts seen saw show shows turn turned leave left bring brought hold held stand stood run ran
""".split())

_WORD = re.compile(r"[A-Za-z][A-Za-z']*[A-Za-z]|[A-Za-z]")
_LAYOUT_LINE = re.compile(r"^\s*[QA]:", re.M)  # a quote with its own Q:/A: lines would read as turns
_ATTRIBUTION = re.compile(r"^\s*--+\s*(.+?)\s*$")

# Request phrasings by kind; {x} is the subject, {a} the author. TRAIN and EVAL share no phrasing.
TRAIN: dict[str, tuple[str, ...]] = {
    "opinion": (
        "What do you think about {x}?", "What do you think of {x}?", "Tell me about {x}.",
        "What can you tell me about {x}?", "Any thoughts on {x}?", "How do you feel about {x}?",
        "Talk to me about {x}.", "What is your view on {x}?", "Say something about {x}.",
        "What's the deal with {x}?", "Give me a quote about {x}.", "I want to hear about {x}.",
        "Do you know anything about {x}?", "Share something about {x}.",
    ),
    "funny": (
        "Say something funny about {x}.", "Tell me something funny about {x}.",
        "Make me laugh about {x}.", "Got anything witty about {x}?", "Be funny about {x}.",
        "Something humorous about {x}, please.",
    ),
    "advice": (
        "Give me some advice about {x}.", "Any advice on {x}?", "What advice do you have about {x}?",
        "I need advice about {x}.", "Help me with {x}.", "What should I know about {x}?",
        "Teach me something about {x}.",
    ),
    "joke": (
        "Tell me a joke about {x}.", "Do you know a joke about {x}?", "Joke about {x}, please.",
        "I want a joke about {x}.",
    ),
    "author": (
        "What did {a} say about {x}?", "What did {a} say?", "Quote {a} on {x}.",
        "Give me a quote by {a}.", "What does {a} think about {x}?",
    ),
    "bare": ("{x}", "{x}?", "About {x}.", "Quote on {x}"),
}
EVAL: dict[str, tuple[str, ...]] = {
    "opinion": (
        "What are your thoughts about {x}?", "Tell me what you know about {x}.",
        "What's your take on {x}?", "Can you say something about {x}?", "I'd like your opinion on {x}.",
    ),
    "funny": ("Tell me something amusing about {x}.", "Can you be witty about {x}?"),
    "advice": ("Do you have any advice about {x}?", "How should I deal with {x}?"),
    "joke": ("Know any jokes about {x}?",),
    "author": ("What has {a} said about {x}?", "Do you have a quote from {a} about {x}?"),
    "bare": ("Thoughts on {x}?",),
}
# Small talk gets a short quote as the reply (a quotes bot answers everything with a quote).
SMALL_TALK_TRAIN = (
    "Who are you?", "hello", "Hi!", "Hello there.", "What are you?", "How are you?", "Good morning.",
    "hey", "Tell me something.", "Say something.", "What's up?", "Can you talk?", "Are you a robot?",
    "What is your name?", "Cheer me up.", "Tell me a quote.", "I'm bored.", "Surprise me.",
)
SMALL_TALK_EVAL = ("Hi, who am I talking to?", "Good evening!", "Say anything you like.", "How's it going?")

KIND_WEIGHTS = {"opinion": 4, "funny": 2, "advice": 2, "joke": 1, "author": 2, "bare": 1}


def _phrasings_disjoint() -> None:
    train = {p for ps in TRAIN.values() for p in ps} | set(SMALL_TALK_TRAIN)
    evals = {p for ps in EVAL.values() for p in ps} | set(SMALL_TALK_EVAL)
    assert not train & evals, train & evals


_phrasings_disjoint()


@dataclass(frozen=True)
class Quote:
    text: str          # the whole document, attribution included, as the reply
    body: str          # without the attribution line(s)
    author: str | None  # the `-- Author` line's name, None when there is none


@dataclass(frozen=True)
class Pair:
    request: str
    reply: str
    kind: str
    subject: str | None  # the word the request asks about (None for small talk)


def parse_quote(doc: str) -> Quote:
    """Split a fortune into its body and its `-- Author[, Work]` attribution (the last such line)."""
    lines = doc.strip("\n").split("\n")
    author = None
    cut = len(lines)
    for i in range(len(lines) - 1, max(-1, len(lines) - 4), -1):
        m = _ATTRIBUTION.match(lines[i])
        if m and i > 0:
            name = re.split(r"[,(\"]|\s+in\s+", m.group(1))[0].strip(" .;:")
            if 2 <= len(name) <= 40 and len(name.split()) <= 5 and name[0].isupper():
                author = name
            cut = i
            break
    body = "\n".join(lines[:cut]).strip()
    return Quote(text=doc.strip("\n"), body=body or doc.strip(), author=author)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """The words of `text` that can be a subject, lower-case, first occurrence order, no repeats."""
    seen: dict[str, None] = {}
    for w in words(text):
        w = w.removesuffix("'s")
        if len(w) >= 3 and w not in STOP_WORDS and "'" not in w and not w.endswith("ly") \
                and not (w.endswith("ed") and len(w) > 5):
            seen.setdefault(w, None)
    return list(seen)


def stem(word: str) -> str:
    """A crude English stem: enough for "dogs"/"dog", "loving"/"love", "happiness"/"happy" to meet."""
    w = word.lower()
    for suffix in ("iness", "ness", "ingly", "ings", "ing", "edly", "ies", "ied", "ers", "er", "est",
                   "ed", "ly", "es", "s", "e", "y"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    return w


def on_topic(reply: str, subject: str) -> bool:
    """The reply names the subject: the word itself or a word of the same stem (a possessive 's
    dropped first, as content_words does: "Murphy's Law" names murphy)."""
    target = stem(subject)
    return any(w == subject or stem(w) == target for w in (w.removesuffix("'s") for w in words(reply)))


class SubjectPicker:
    """Ranks a quote's content words by rarity over a corpus (document frequency)."""

    def __init__(self, docs: Iterable[str]):
        self.df: Counter[str] = Counter()
        self.n = 0
        for d in docs:
            self.n += 1
            self.df.update(set(content_words(parse_quote(d).body)))

    def subjects(self, body: str, top: int = 3, early: int | None = None) -> list[str]:
        """Up to `top` subject words: rarest first, but seen in at least two documents (not typos or
        one-off names), falling back to any content word. With `early`: the first such word among
        the quote's first `early` words, or none."""
        cands = content_words(body)
        if early:
            head = [w for w in content_words(" ".join(body.split()[:early])) if self.df.get(w, 0) >= 2]
            return head[:1]
        order = {w: i for i, w in enumerate(cands)}
        good = [w for w in cands if self.df.get(w, 0) >= 2] or list(cands)
        good.sort(key=lambda w: (self.df.get(w, 0), order[w]))
        return good[:top]


def _fill(phrasing: str, subject: str, author: str | None) -> str:
    return phrasing.replace("{x}", subject).replace("{a}", author or "")


def make_pairs(docs: Sequence[str], n: int, seed: int, phrasings: dict[str, tuple[str, ...]] = TRAIN,
               small_talk: Sequence[str] = SMALL_TALK_TRAIN, small_talk_share: float = 0.05,
               max_reply_chars: int = 320, picker: SubjectPicker | None = None,
               early: int | None = None) -> list[Pair]:
    """`n` seeded pairs from `docs` (quotes of one split only: the caller keeps held-out quotes out).

    `early`: subjects only from a quote's first words (see SubjectPicker.subjects)."""
    rng = random.Random(seed)
    picker = picker or SubjectPicker(docs)
    quotes = [q for q in (parse_quote(d) for d in docs)
              if 0 < len(q.text) <= max_reply_chars and content_words(q.body) and not _LAYOUT_LINE.search(q.text)]
    if not quotes:
        return []
    short = [q for q in quotes if len(q.text) <= 120] or quotes
    kinds = [k for k in phrasings if k in KIND_WEIGHTS]
    weights = [KIND_WEIGHTS[k] for k in kinds]
    pairs: list[Pair] = []
    while len(pairs) < n:
        if small_talk and rng.random() < small_talk_share:
            q = rng.choice(short)
            pairs.append(Pair(rng.choice(small_talk), q.text, "small_talk", None))
            continue
        q = rng.choice(quotes)
        kind = rng.choices(kinds, weights)[0]
        if kind == "author" and not q.author:
            kind = "opinion"
        subjects = picker.subjects(q.body, early=early)
        if not subjects:
            continue
        subject = rng.choice(subjects)
        phrasing = rng.choice(phrasings[kind])
        pairs.append(Pair(_fill(phrasing, subject, q.author), q.text, kind, subject if "{x}" in phrasing else None))
    return pairs


# A training pair asks about the first content word among a quote's first four words, so the reply
# names the subject right after the request did: the short-range copy a small model learns first.
# Subjects from anywhere in the quote (or its first ten words) taught the device model nothing
# in 1,300 steps: 0 of 40 held-out requests on topic (docs/chat.md).
TRAIN_EARLY_WORDS = 4


def chat_documents(docs: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` training documents in the chat layout (chat_format.training_text) from the quotes `docs`."""
    return [training_text(p.request, p.reply) for p in make_pairs(docs, n, seed, early=TRAIN_EARLY_WORDS)]


def eval_requests(heldout: Sequence[str], n: int, seed: int, picker: SubjectPicker | None = None) -> list[Pair]:
    """`n` evaluation requests about held-out quotes in the evaluation phrasings (reply = the quote
    the request was made from; a bench compares models' replies against it only for the subject)."""
    return make_pairs(heldout, n, seed, EVAL, SMALL_TALK_EVAL, small_talk_share=0.0, picker=picker)


def terms(text: str) -> list[str]:
    """Retrieval terms: the stems of every non-stop word (repeats kept, for term frequency)."""
    return [stem(w) for w in words(text) if w not in STOP_WORDS and len(w) >= 2]


class BM25:
    """Okapi BM25 over documents' terms (k1 1.5, b 0.75): the best document for a query."""

    def __init__(self, docs: Sequence[str], k1: float = 1.5, b: float = 0.75):
        self.docs = list(docs)
        self.k1, self.b = k1, b
        self.tf = [Counter(terms(d)) for d in self.docs]
        self.len = [sum(c.values()) for c in self.tf]
        self.avg = sum(self.len) / max(1, len(self.len))
        df: Counter[str] = Counter()
        for c in self.tf:
            df.update(c.keys())
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in df.items()}
        self.postings: dict[str, list[int]] = {}
        for i, c in enumerate(self.tf):
            for w in c:
                self.postings.setdefault(w, []).append(i)

    def scores(self, query: str) -> dict[int, float]:
        out: dict[int, float] = {}
        for w in set(terms(query)):
            idf = self.idf.get(w)
            if idf is None:
                continue
            for i in self.postings[w]:
                f = self.tf[i][w]
                norm = f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * self.len[i] / self.avg))
                out[i] = out.get(i, 0.0) + idf * norm
        return out

    def best(self, query: str) -> str | None:
        """The highest-scoring document (earliest on ties), None when no query word occurs anywhere."""
        s = self.scores(query)
        if not s:
            return None
        return self.docs[max(s, key=lambda i: (s[i], -i))]
