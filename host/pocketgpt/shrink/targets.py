"""The teacher's next-token distributions, computed once over the corpus and cached.

Why: running the teacher inside every distillation step (16M parameters, a 50,257-row head)
made a distillation step cost several scratch steps, and in equal wall time distillation lost.
Here the teacher runs once over the training stream; each position keeps the top-k of its
distribution carried onto the student's vocabulary, so a distillation step then costs what a
scratch step costs (a gather of k log-probabilities per position).

The teacher reads the text in its *own* tokens, as it was trained (feeding it the student's
shorter pieces would be text it never saw). The trimmed BPE is the full BPE stopped early, so
every teacher token boundary is also a student token boundary. At a student position that ends
where a teacher token ends, the teacher's distribution over its next token is exactly a
distribution over how the text goes on; each teacher token's probability goes to the student
token its spelling starts with (vocab.teacher_to_student_map). Student positions inside a teacher
token (the student is mid-way through a word the teacher sees whole) get no teacher target and
train on cross-entropy alone.

The teacher scores windows of its context length, non-overlapping, in a seeded random order, so a
`max_minutes` bound leaves a uniform sample of the corpus covered rather than its beginning, and
`fraction` < 1 scores just the first part of that order: a uniform sample of the corpus, for that
fraction of the full pass's time (enough when the KL is annealed away early, see distill.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pocketgpt.errors import PocketError


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


def used_head(teacher: Any, teacher_ids: np.ndarray, t2s: np.ndarray) -> tuple[Any, Any]:
    """The teacher's head rows over the teacher tokens the corpus uses, and their student ids: the
    rest are tokens it never saw in training, whose probabilities the tied head has pushed to
    nothing."""
    import torch

    used = np.unique(teacher_ids)
    head = teacher.lm_head.weight.detach()[torch.from_numpy(used)].contiguous()
    return head, torch.from_numpy(t2s[used])


def teacher_topk(teacher: Any, head: Any, t2s_used: Any, n_student: int, k: int, x: Any) -> tuple[Any, Any]:
    """Teacher token windows x (B, T) -> the top k of each position's next-token distribution
    carried onto the student's vocabulary: (probabilities, student ids), each (B * T, k)."""
    import torch

    hidden = teacher.transformer(input_ids=x).last_hidden_state.reshape(-1, head.shape[1])
    p = torch.softmax(hidden @ head.T, dim=-1)
    return torch.zeros(p.shape[0], n_student).index_add_(1, t2s_used, p).topk(k, dim=-1)


def build_targets(teacher: Any, teacher_vocab: Any, trimmed: Any, docs: list[str], student_ids: np.ndarray,
                  k: int = 32, batch_windows: int = 16, max_minutes: float | None = None, seed: int = 1337,
                  progress: bool = False, fraction: float = 1.0) -> TeacherTargets:
    """Run `teacher` (a transformers GPT2LMHeadModel) once over `docs`. See the module docstring.

    student_ids: the student's training stream (train.encode_documents of `docs` with the trimmed
    tokenizer), which the returned arrays index.
    """
    import torch
    from tqdm import tqdm

    from pocketgpt.shrink.vocab import teacher_to_student_map
    from pocketgpt.train import encode_documents

    tv = trimmed.vocab
    teacher_ids = encode_documents(teacher_vocab.hf_tokenizer(), docs, teacher_vocab.eos_id)
    where = align(student_ids, token_bytes(tv.tokens, tv.eos_id), teacher_ids,
                  token_bytes(teacher_vocab.tokens, teacher_vocab.eos_id))
    t2s = teacher_to_student_map(teacher_vocab, trimmed)
    head, t2s_used = used_head(teacher, teacher_ids, t2s)
    V = tv.n_vocab
    k = min(k, V)
    M = len(teacher_ids)
    t_ids = np.zeros((M, k), dtype=np.int32)
    t_probs = np.zeros((M, k), dtype=np.float16)
    t_has = np.zeros(M, dtype=bool)
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
                top_p, top_i = teacher_topk(teacher, head, t2s_used, V, k, x)
                idx = np.concatenate([np.arange(s0, s0 + x.shape[1]) for s0 in where_from])
                t_ids[idx] = top_i.numpy()
                t_probs[idx] = top_p.numpy().astype(np.float16)
                t_has[idx] = True
                bar.update(len(idx))
    bar.close()
    seconds = time.time() - t0
    ok = where >= 0
    ids = np.zeros((len(student_ids), k), dtype=np.int32)
    probs = np.zeros((len(student_ids), k), dtype=np.float16)
    has = np.zeros(len(student_ids), dtype=bool)
    ids[ok], probs[ok], has[ok] = t_ids[where[ok]], t_probs[where[ok]], t_has[where[ok]]
    return TeacherTargets(ids, probs, has, round(seconds, 1), M)
