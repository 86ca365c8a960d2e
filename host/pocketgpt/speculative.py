"""Speculative decoding: a small draft model proposes a few tokens, the target model checks them
all in one forward pass (its weights read once for several tokens), and the KV caches of both are
rewound past the first rejected token.

Greedy generation gives exactly the tokens plain greedy decoding gives (a proposal is kept only if
it is the target's argmax after the same repetition penalty). Sampled generation keeps the target's
distribution (temperature, top-k, top-p and penalty included) with the standard rule: a proposal x
drawn from the draft's distribution q is kept with probability min(1, p(x) / q(x)); at the first
rejection the token is drawn from the residual max(0, p - q), normalised; when every proposal is
kept, one more token comes from the target's next distribution. The tokens differ from a plain
seeded run (the random numbers are used differently); their distribution does not.

The draft may have another vocabulary: its tokens are mapped to the target's by their bytes (a
draft token whose bytes are not one target token is never proposed), and each target token is fed
to the draft as the draft's own tokenization of its bytes. builtin:device's vocabulary is GPT-2's
first merges, so it drafts for builtin:host and for GPT-2 124M files.

Used by `Session.stream(..., draft=Draft(...))`; `Stream.advance` then emits one token per call
from a queue that each verification round fills.
"""

from __future__ import annotations

import random
import time

from pocketgpt.errors import PocketError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np

    from pocketgpt.engine import Engine, Stream
    from pocketgpt.relay.torch_engine import TorchEngine

DEFAULT_K = 3  # draft tokens per round (measured: docs/speed.md, "Speculative decoding")


class Draft:
    """A draft model for one target Engine: the draft Engine, the token maps, and k (how many
    tokens it proposes per round). One Draft serves any number of streams (each gets its own
    draft session)."""

    def __init__(self, target: Engine, draft: Engine | str, k: int = DEFAULT_K, threads: int | None = None) -> None:
        from pocketgpt.engine import Engine

        if k < 1:
            raise PocketError(f"draft tokens per round must be >= 1, got {k}")
        # one thread by default: a draft token is too small to split, and a second worker pool
        # spinning after each draft token would take a core from the target's verification
        self.engine = draft if isinstance(draft, Engine) else Engine(draft, threads=threads or 1, kv=target.kv)
        if self.engine is target:
            raise PocketError("the draft model must be another Engine than the target")
        self.target = target
        self.k = k
        d, t = self.engine, target
        # draft id -> target id by bytes (-1: no target token has these bytes; never proposed)
        self.d2t: list[int] = []
        for i in range(d.n_vocab):
            if i == d.eos_id:
                self.d2t.append(t.eos_id)
                continue
            b = d.token_bytes(i)
            ids = t._model.tokenize(b, False)
            self.d2t.append(ids[0] if len(ids) == 1 and t.token_bytes(ids[0]) == b else -1)
        if sum(1 for x in self.d2t if x >= 0) < d.n_vocab // 2:
            raise PocketError(f"{d.path} cannot draft for {t.path}: fewer than half of its tokens are target tokens")
        self._t2d: dict[int, list[int]] = {t.eos_id: [d.eos_id]}
        self._index_map: np.ndarray | None = None
        self.proposed = self.accepted = 0  # over every stream (the relay reports them)

    @property
    def index_map(self):
        """d2t as a numpy array (sampled drafting maps the draft's distribution with it)."""
        if self._index_map is None:
            import numpy as np

            self._index_map = np.array(self.d2t, dtype=np.int64)
        return self._index_map

    def to_draft(self, target_ids: Iterable[int]) -> list[int]:
        """The draft's ids for these target tokens (each token's bytes tokenized by the draft)."""
        out: list[int] = []
        for tok in target_ids:
            ids = self._t2d.get(tok)
            if ids is None:
                ids = self._t2d[tok] = self.engine._model.tokenize(self.target.token_bytes(tok), False)
            out += ids
        return out


class SpecState:
    """The per-stream part: the draft session, what its cache holds, the queue of verified tokens
    not yet emitted, the random numbers of the accept/reject rule, and counters."""

    def __init__(self, draft: Draft, seed: int) -> None:
        self.draft = draft
        self.ds = draft.engine.session()._s
        self.fed: list[int] = []   # draft ids in the draft's KV cache, in order
        self.dctx: list[int] = []  # draft ids of every token so far (prompt and generated)
        self.queue: list[int] = []
        self.rng = random.Random(seed)
        self.rounds = self.proposed = self.accepted = 0
        self.started = False

    def start(self, ids: list[int]) -> None:
        """A new generation whose prompt and tokens so far are ids (the last not yet evaluated)."""
        self.started = True
        self.ds.reset()
        self.fed, self.queue = [], []
        self.dctx = self.draft.to_draft(ids)
        room = self.ds.n_ctx
        if len(self.dctx) > room:  # only acceptance suffers: keep the prompt's end
            self.dctx = self.dctx[-room:]


def _dense(n_vocab: int, cand: bytes, weights: bytes, total: float,
           index_map: np.ndarray | None = None) -> np.ndarray:
    import numpy as np

    c = np.frombuffer(cand, dtype=np.int32)
    p = np.zeros(n_vocab, dtype=np.float64)
    if index_map is not None:
        c = index_map[c]
        keep = c >= 0
        w = np.frombuffer(weights, dtype=np.float32)[keep]
        p[c[keep]] = w / total
    else:
        p[c] = np.frombuffer(weights, dtype=np.float32) / total
    return p


def _draw(rng: random.Random, cand: bytes, weights: bytes, total: float) -> int:
    """A draw from (cand, weights) as pg_sample draws (the cumulative weights against u * total)."""
    import numpy as np

    c = np.frombuffer(cand, dtype=np.int32)
    acc = np.cumsum(np.frombuffer(weights, dtype=np.float32), dtype=np.float64)
    i = int(np.searchsorted(acc, rng.random() * acc[-1], side="right"))
    return int(c[min(i, len(c) - 1)])


def spec_round(stream: Stream) -> list[int]:
    """One round for a stream whose prompt is evaluated and whose last token is sampled but not
    yet in the target's cache: draft up to k tokens, verify them in one target pass, and return the
    tokens now settled (at least one). The target's cache ends holding every settled token but the
    last; the draft's is brought up to date (rewound to the common prefix, fed the rest) at the
    start of the next round."""
    import numpy as np

    spec = stream._spec
    assert spec is not None  # a speculative stream
    draft = spec.draft
    eng = stream.session.engine
    s, ds = stream.session._s, spec.ds
    # the reply guard (need_word) is done before a stream speculates (Stream._spec_ready)
    params = {k: v for k, v in stream.params.items() if k != "need_word"}
    greedy = params["greedy"] or params["temperature"] <= 0.0
    last_n = params["repeat_last_n"]
    last = stream.generated[-1]
    n0 = s.n_past
    # proposals: as many as the stream may still emit (the round settles one more), the target's
    # context and the draft's context allow
    k = min(draft.k, stream.max_tokens - len(stream.generated) - 1, s.n_ctx - n0 - 1)
    common = 0
    for a, b in zip(spec.fed, spec.dctx):
        if a != b:
            break
        common += 1
    k = min(k, ds.n_ctx - len(spec.dctx)) if len(spec.dctx) < ds.n_ctx else 0
    props: list[int] = []
    qs: list = []
    if k > 0:
        if common < len(spec.fed):
            ds.rewind(common)
            del spec.fed[common:]
        if common < len(spec.dctx):
            ds.eval(spec.dctx[common:])
            spec.fed = list(spec.dctx)
        dhist = list(spec.dctx)
        for j in range(k):
            dh = dhist[-last_n:] if last_n > 0 else dhist
            cand, w, total = ds.dist(ds.last_logits(), dh, **params)
            x = int(np.frombuffer(cand, dtype=np.int32)[0]) if greedy else _draw(spec.rng, cand, w, total)
            tx = draft.d2t[x]
            if tx < 0:
                break
            props.append(tx)
            if not greedy:
                qs.append(_dense(eng.n_vocab, cand, w, total, draft.index_map))
            dhist.append(x)
            if j < k - 1:
                ds.eval([x])
                spec.fed.append(x)
    rows = np.empty((1 + len(props), eng.n_vocab), dtype=np.float32)
    s.eval([last] + props, rows)
    hist = stream.history
    out: list[int] = []
    for i in range(len(props) + 1):
        h = hist + out
        cand, w, total = s.dist(rows[i], h[-last_n:] if last_n > 0 else h, **params)
        if i == len(props):  # every proposal kept: one more from the target
            y = int(np.frombuffer(cand, dtype=np.int32)[0]) if greedy else _draw(spec.rng, cand, w, total)
            out.append(y)
            break
        x = props[i]
        if greedy:
            y = int(np.frombuffer(cand, dtype=np.int32)[0])
            out.append(y)
            if y != x:
                break
            continue
        p = _dense(eng.n_vocab, cand, w, total)
        q = qs[i]
        if spec.rng.random() * q[x] < p[x]:  # u < p(x) / q(x), q(x) > 0 since x was drawn from q
            out.append(x)
            continue
        r = np.maximum(p - q, 0.0)
        tot = r.sum()
        if tot <= 0.0:  # p == q: the residual is empty, p itself is the answer
            r, tot = p, p.sum()
        acc = np.cumsum(r)
        out.append(int(min(np.searchsorted(acc, spec.rng.random() * tot, side="right"), eng.n_vocab - 1)))
        break
    kept = len(out) - 1  # proposals kept
    s.rewind(n0 + 1 + kept)
    spec.rounds += 1
    spec.proposed += len(props)
    spec.accepted += kept
    draft.proposed += len(props)
    draft.accepted += kept
    spec.dctx += draft.to_draft(out)
    return out


def next_token(stream: Stream) -> int:
    """The stream's next token once its first is sampled: from the queue that each round fills."""
    spec = stream._spec
    assert spec is not None  # a speculative stream
    if not spec.queue:
        t = time.perf_counter()
        spec.queue = spec_round(stream)
        stream._count_decode(time.perf_counter() - t)
        stream.stats.update(draft_rounds=spec.rounds, draft_proposed=spec.proposed, draft_accepted=spec.accepted)
    return spec.queue.pop(0)


# The shipped pairs drafted by default (`--draft auto`), each only if measured to pay (docs/speed.md,
# "Speculative decoding"): target spec -> draft spec. builtin:device drafting for builtin:host paid
# 1.4-1.9x while builtin:host's Q6_K matrices were dequantized by scalar code; since they have an
# integer kernel a verification of 4 tokens costs 2.3 single tokens and the pair is 0.6-0.94x plain
# (CPU time, 1 thread), so it is off by default.
AUTO_DRAFTS: dict[str, str] = {}


def open_draft(target: Engine | TorchEngine, model_spec: str, draft_spec: str | None,
               k: int = DEFAULT_K) -> Draft | None:
    """The Draft that `--draft` names for a target opened from model_spec: 'auto' (the default:
    the shipped pair's draft, else none), 'none', or a model spec."""
    if draft_spec is None or draft_spec == "auto":
        draft_spec = AUTO_DRAFTS.get(model_spec)
    if not draft_spec or draft_spec == "none":
        return None
    from pocketgpt.engine import Engine

    if not isinstance(target, Engine):
        raise PocketError("--draft needs the C engine (a .gguf model), not the PyTorch reference")
    return Draft(target, draft_spec, k=k)
