"""The teacher's next-token distributions, computed once over the corpus and cached.

Why: running the teacher inside every distillation step (16M parameters, a 50,257-row head)
made a distillation step cost several scratch steps, and in equal wall time distillation lost.
Here the teacher runs once over the training stream; each position keeps the top-k of its
distribution carried onto the student's vocabulary, so a distillation step then costs what a
scratch step costs (a gather of k log-probabilities per position).

The teacher reads the text in its *own* tokens, as it was trained (feeding it the student's
shorter pieces would be text it never saw). The trimmed BPE is the full BPE stopped early, so
every teacher token boundary is also a student boundary, and inside a teacher token the student
emits that token's own trimmed pieces (vocab.student_pieces). Two kinds of student position:

- at a teacher token boundary (about 71 % of positions on the fortunes corpus): the teacher's
  distribution over its next token is exactly a distribution over how the text goes on; each
  teacher token's probability goes to the student piece its spelling starts with;
- part-way through teacher token t, the student having emitted t's first d pieces: the teacher's
  belief about the next student piece is its distribution before t, kept to the tokens whose
  pieces start with those d pieces, each token's probability on its piece d + 1, over the mass of
  all such tokens. The tokens that end exactly there (their next piece would be the start of the
  next teacher token, about which this distribution says nothing) count in that mass but name no
  piece: their share stays in the KL's "everything else" bin. The full distribution over the
  tokens the corpus uses is conditioned, in the teacher's batch, before any top-k.

(Before session 4 only the first kind had a target; `inside=False` still gives that.)

The teacher scores windows of its context length, non-overlapping, in a seeded random order, so a
`max_minutes` bound leaves a uniform sample of the corpus covered rather than its beginning, and
`fraction` < 1 scores just the first part of that order: a uniform sample of the corpus, for that
fraction of the full pass's time (enough when the KL is annealed away early, see distill.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pocketgpt.errors import PocketError

if TYPE_CHECKING:
    import torch
    from transformers import GPT2LMHeadModel

    from pocketgpt.shrink.vocab import TrimmedVocab
    from pocketgpt.tokenizer import BPEVocab


@dataclass
class TeacherTargets:
    """Per student-stream position i: the teacher's belief about student token i + 1."""

    ids: np.ndarray       # (N, k) int32 student token ids, most probable first
    probs: np.ndarray     # (N, k) float16, temperature 1, not renormalised (sums to the top-k mass)
    has: np.ndarray       # (N,) bool: a teacher distribution exists for this position
    seconds: float        # wall time the teacher took
    teacher_tokens: int   # teacher tokens in the stream

    @property
    def coverage(self) -> float:
        return float(self.has.mean()) if len(self.has) else 0.0

    def mass(self) -> float:
        """Mean probability the kept top-k holds, over positions with a target."""
        if not self.has.any():
            return 0.0
        return float(self.probs[self.has].astype(np.float32).sum(-1).mean())

    def save(self, path: str | Path, key: dict[str, Any]) -> None:
        from pocketgpt.errors import atomic_path

        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, ids=self.ids, probs=self.probs, has=self.has,
                         meta=np.asarray([repr(sorted(key.items())), self.seconds, self.teacher_tokens], dtype=object))

    @staticmethod
    def load(path: str | Path, key: dict[str, Any]) -> TeacherTargets | None:
        """The cached targets if `path` holds them for the same `key` (teacher, vocabulary, corpus)."""
        p = Path(path)
        if not p.exists():
            return None
        try:
            z = np.load(p, allow_pickle=True)
            meta = z["meta"]
            if meta[0] != repr(sorted(key.items())):
                return None
            return TeacherTargets(z["ids"], z["probs"], z["has"], float(meta[1]), int(meta[2]))
        except (OSError, ValueError, KeyError) as e:
            raise PocketError(f"{p}: not a teacher-target cache ({e}); delete it or choose another --teacher-cache") from None


def token_bytes(tokens: list[str], eos_id: int) -> np.ndarray:
    """Bytes each token spells (GPT-2's byte alphabet: one character per byte); <|endoftext|> counts
    one so that a document's last token and the separator after it end at different offsets."""
    n = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    n[eos_id] = 1
    return n


def align(student_ids: np.ndarray, student_len: np.ndarray, teacher_ids: np.ndarray,
          teacher_len: np.ndarray) -> np.ndarray:
    """(N,) for each student position, the teacher position that ends at the same byte (or -1)."""
    s_end = np.cumsum(student_len[student_ids])
    t_end = np.cumsum(teacher_len[teacher_ids])
    if s_end[-1] != t_end[-1]:
        raise PocketError("teacher and student token streams spell different text; cannot align them")
    j = np.searchsorted(t_end, s_end)
    hit = t_end[np.minimum(j, len(t_end) - 1)] == s_end
    return np.where(hit, j, -1)


def used_head(teacher: GPT2LMHeadModel, teacher_ids: np.ndarray, t2s: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's head rows over the teacher tokens the corpus uses (teacher_ids: the corpus's
    stream, or its unique ids), and their student ids: the rest are tokens it never saw in
    training, whose probabilities the tied head has pushed to nothing."""
    import torch

    used = np.unique(teacher_ids)
    head = teacher.lm_head.weight.detach()[torch.from_numpy(used)].contiguous()
    return head, torch.from_numpy(t2s[used])


def teacher_topk(teacher: GPT2LMHeadModel, head: torch.Tensor, t2s_used: torch.Tensor, n_student: int, k: int,
                 x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher token windows x (B, T) -> the top k of each position's next-token distribution
    carried onto the student's vocabulary: (probabilities, student ids), each (B * T, k)."""
    return _carry_topk(_teacher_probs(teacher, head, x), t2s_used, n_student, k)


def _teacher_probs(teacher: GPT2LMHeadModel, head: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B * T, used tokens) the teacher's next-token distribution at every position of x (B, T)."""
    import torch

    hidden = teacher.transformer(input_ids=x).last_hidden_state.reshape(-1, head.shape[1])
    return torch.softmax(hidden @ head.T, dim=-1)


def _carry_topk(p: torch.Tensor, t2s_used: torch.Tensor, n_student: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return torch.zeros(p.shape[0], n_student).index_add_(1, t2s_used, p).topk(k, dim=-1)


@dataclass
class PrefixTable:
    """Which teacher tokens are still possible once the student has emitted some of a word's pieces.

    Every teacher token (among those the corpus uses, `used` order) spells a sequence of student
    pieces (vocab.student_pieces). A node is a proper, non-empty prefix of such a sequence; its
    entries are every used token whose pieces start with it, each with the student piece that
    would come next (-1: the token ends exactly there, so the next piece belongs to the next
    teacher token, which this distribution does not speak about).
    """

    node: dict[tuple[int, ...], int]    # piece prefix -> node id
    off: np.ndarray                     # (nodes + 1,) entries of node n: off[n]:off[n+1]
    ent_u: np.ndarray                   # (E,) used index of the teacher token
    ent_next: np.ndarray                # (E,) the next student piece, or -1

    @staticmethod
    def build(pieces: list[tuple[int, ...]], used: np.ndarray) -> PrefixTable:
        node: dict[tuple[int, ...], int] = {}
        rows: list[tuple[int, int, int]] = []
        for ui, u in enumerate(used.tolist()):
            pc = pieces[u]
            for d in range(1, len(pc) + 1):
                n = node.setdefault(pc[:d], len(node))
                rows.append((n, ui, pc[d] if d < len(pc) else -1))
        a = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        a = a[np.argsort(a[:, 0], kind="stable")]
        off = np.searchsorted(a[:, 0], np.arange(len(node) + 1))
        return PrefixTable(node, off, a[:, 1], a[:, 2])


def inside_queries(student_ids: np.ndarray, student_len: np.ndarray, teacher_ids: np.ndarray,
                   teacher_len: np.ndarray, pieces: list[tuple[int, ...]], table: PrefixTable
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The student positions strictly inside a teacher token: (student position, the teacher
    position whose distribution covers that token, prefix node of the pieces already emitted).

    A position whose emitted pieces are not the start of the teacher token's own pieces (cannot
    happen for BPE; guards odd text) is left out.
    """
    s_end = np.cumsum(student_len[student_ids])
    t_end = np.cumsum(teacher_len[teacher_ids])
    t_start = t_end - teacher_len[teacher_ids]
    m = np.searchsorted(t_end, s_end, side="right")          # the teacher token holding the next byte
    inside = (m < len(teacher_ids)) & (m > 0)
    inside &= s_end > t_start[np.minimum(m, len(teacher_ids) - 1)]
    pos = np.nonzero(inside)[0]
    mm = m[pos]
    first = np.searchsorted(s_end, t_start[mm])              # the student position ending where it starts
    depth = pos - first
    keep, nodes = [], []
    for i, (p_i, t, d) in enumerate(zip(pos.tolist(), teacher_ids[mm].tolist(), depth.tolist())):
        pc = pieces[t]
        if d < len(pc) and tuple(student_ids[p_i - d + 1:p_i + 1].tolist()) == pc[:d] and pc[:d] in table.node:
            keep.append(i)
            nodes.append(table.node[pc[:d]])
    keep_a = np.asarray(keep, dtype=np.int64)
    return pos[keep_a], mm[keep_a] - 1, np.asarray(nodes, dtype=np.int64)


def _inside_topk(p: torch.Tensor, rows: np.ndarray, nodes: np.ndarray, table: PrefixTable, n_student: int, k: int,
                 chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """For queries (row of p, prefix node): the teacher's distribution over the next student piece
    given that its next token starts with the node's pieces, top k: (probabilities, ids), each
    (queries, k). The mass of tokens that end at the prefix is in neither (the KL's rest bin)."""
    import torch

    out_p, out_i = [], []
    ent_u = torch.from_numpy(table.ent_u)
    ent_next = torch.from_numpy(np.where(table.ent_next < 0, n_student, table.ent_next))
    for c in range(0, len(rows), chunk):
        r, n = rows[c:c + chunk], nodes[c:c + chunk]
        cnt = table.off[n + 1] - table.off[n]
        q = np.repeat(np.arange(len(r)), cnt)
        e = np.repeat(table.off[n] - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt) + np.arange(cnt.sum())
        qt, et = torch.from_numpy(q), torch.from_numpy(e)
        vals = p[torch.from_numpy(r)[qt], ent_u[et]]
        dense = torch.zeros(len(r) * (n_student + 1))
        dense.index_add_(0, qt * (n_student + 1) + ent_next[et], vals)
        dense = dense.view(len(r), n_student + 1)
        denom = dense.sum(-1, keepdim=True).clamp_min(1e-30)
        tp, ti = (dense[:, :n_student] / denom).topk(k, dim=-1)
        out_p.append(tp)
        out_i.append(ti)
    if not out_p:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(out_p), torch.cat(out_i)


def build_targets(teacher: GPT2LMHeadModel, teacher_vocab: BPEVocab, trimmed: TrimmedVocab, docs: list[str], student_ids: np.ndarray,
                  k: int = 32, batch_windows: int = 16, max_minutes: float | None = None, seed: int = 1337,
                  progress: bool = False, fraction: float = 1.0, inside: bool = True) -> TeacherTargets:
    """Run `teacher` (a transformers GPT2LMHeadModel) once over `docs`. See the module docstring.

    student_ids: the student's training stream (train.encode_documents of `docs` with the trimmed
    tokenizer), which the returned arrays index. inside=False: targets at teacher token boundaries
    only (the alignment before session 4).
    """
    import torch
    from tqdm import tqdm

    from pocketgpt.shrink.vocab import student_pieces, teacher_to_student_map
    from pocketgpt.train import encode_documents

    tv = trimmed.vocab
    teacher_ids = encode_documents(teacher_vocab.hf_tokenizer(), docs, teacher_vocab.eos_id)
    s_len, t_len = token_bytes(tv.tokens, tv.eos_id), token_bytes(teacher_vocab.tokens, teacher_vocab.eos_id)
    where = align(student_ids, s_len, teacher_ids, t_len)
    pieces = student_pieces(teacher_vocab, trimmed)
    used = np.unique(teacher_ids)  # the teacher tokens the corpus uses: the head's rows and the prefix table's
    head, t2s_used = used_head(teacher, used, teacher_to_student_map(teacher_vocab, trimmed, pieces))
    V = tv.n_vocab
    k = min(k, V)
    ids = np.zeros((len(student_ids), k), dtype=np.int32)
    probs = np.zeros((len(student_ids), k), dtype=np.float16)
    has = np.zeros(len(student_ids), dtype=bool)
    # queries: (student position, teacher position, prefix node; node -1 = at a teacher boundary)
    b_pos = np.nonzero(where >= 0)[0]
    q_pos, q_t, q_node = b_pos, where[b_pos], np.full(len(b_pos), -1, dtype=np.int64)
    table = None
    if inside:
        table = PrefixTable.build(pieces, used)
        i_pos, i_t, i_node = inside_queries(student_ids, s_len, teacher_ids, t_len, pieces, table)
        q_pos, q_t, q_node = (np.concatenate([q_pos, i_pos]), np.concatenate([q_t, i_t]),
                              np.concatenate([q_node, i_node]))
    order = np.argsort(q_t, kind="stable")
    q_pos, q_t, q_node = q_pos[order], q_t[order], q_node[order]
    M = len(teacher_ids)
    n = teacher.config.n_positions
    starts = np.arange(0, M, n)
    np.random.default_rng(seed).shuffle(starts)
    if fraction < 1.0:
        starts = starts[: max(1, int(round(fraction * len(starts))))]
    teacher.eval()
    t0 = time.time()
    bar = tqdm(total=min(M, len(starts) * n), disable=not progress, unit="tok", unit_scale=True, desc="teacher", dynamic_ncols=True)
    with torch.no_grad():
        for b in range(0, len(starts), batch_windows):
            if max_minutes is not None and time.time() - t0 >= max_minutes * 60:
                break
            group = starts[b:b + batch_windows]
            full = [s for s in group if s + n <= M]
            rows = [(torch.from_numpy(np.stack([teacher_ids[s:s + n] for s in full])), full)] if full else []
            rows += [(torch.from_numpy(teacher_ids[s:M])[None], [s]) for s in group if s + n > M]
            for x, where_from in rows:
                p = _teacher_probs(teacher, head, x)
                for w, s0 in enumerate(where_from):   # the queries of each window: a contiguous run of q_t
                    lo, hi = np.searchsorted(q_t, [s0, s0 + x.shape[1]])
                    qp, qt, qn = q_pos[lo:hi], q_t[lo:hi], q_node[lo:hi]
                    r = qt - s0 + w * x.shape[1]
                    at = qn < 0
                    if at.any():
                        tp, ti = _carry_topk(p[torch.from_numpy(r[at])], t2s_used, V, k)
                        ids[qp[at]], probs[qp[at]], has[qp[at]] = ti.numpy(), tp.numpy().astype(np.float16), True
                    if (~at).any():
                        assert table is not None  # inside positions exist only with a prefix table
                        tp, ti = _inside_topk(p, r[~at], qn[~at], table, V, k)
                        ids[qp[~at]], probs[qp[~at]], has[qp[~at]] = ti.numpy(), tp.numpy().astype(np.float16), True
                bar.update(x.numel())
    bar.close()
    seconds = time.time() - t0
    return TeacherTargets(ids, probs, has, round(seconds, 1), M)
