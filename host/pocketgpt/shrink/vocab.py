"""Vocabulary trimming: the teacher's byte-level BPE cut after its first K merges.

BPE applies merges in rank order, so the first K merges alone are a complete tokenizer: every
word still splits into byte tokens and then merges, it just stops earlier. The trimmed vocabulary
is the 256 byte tokens (in the teacher's id order), the result of each kept merge (in rank order)
and <|endoftext|> last. Every kept token exists in the teacher, so its embedding row carries over,
and any text still encodes (at worst byte by byte) and decodes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pocketgpt.errors import PocketError
from pocketgpt.tokenizer import EOT, BPEVocab


@dataclass(frozen=True)
class TrimmedVocab:
    vocab: BPEVocab
    teacher_ids: np.ndarray  # (n_vocab,) the teacher's id of every kept token


def _byte_tokens(teacher: BPEVocab) -> list[int]:
    """Ids of the teacher's 256 single-byte tokens (one character in GPT-2's byte alphabet)."""
    from pocketgpt.tokenizer import gpt2_vocab

    alphabet = set(gpt2_vocab().tokens[:256])
    ids = [i for i, t in enumerate(teacher.tokens) if t in alphabet]
    if len(ids) != 256:
        raise PocketError(f"the teacher's vocabulary has {len(ids)} of the 256 byte tokens; "
                          "only GPT-2 byte-level BPE vocabularies can be trimmed")
    return ids


def trim_vocab(teacher: BPEVocab, n_merges: int) -> TrimmedVocab:
    """Keep the first `n_merges` merges of `teacher` (rank order). See the module docstring."""
    if not 0 <= n_merges <= len(teacher.merges):
        raise PocketError(f"--vocab {n_merges}: the teacher has {len(teacher.merges)} merges; "
                          f"choose 0..{len(teacher.merges)}")
    index = {t: i for i, t in enumerate(teacher.tokens)}
    if EOT not in index:
        raise PocketError(f"the teacher's vocabulary has no {EOT} token; cannot trim it")
    ids = _byte_tokens(teacher)
    seen = {teacher.tokens[i] for i in ids}
    merges = teacher.merges[:n_merges]
    for rank, m in enumerate(merges):
        parts = m.split(" ")
        if len(parts) != 2 or any(p not in seen for p in parts):
            raise PocketError(f"teacher merge {rank} ({m!r}) uses a token no earlier merge made; "
                              "its merges are not in rank order")
        tok = parts[0] + parts[1]
        if tok not in index:
            raise PocketError(f"teacher merge {rank} makes {tok!r}, which is not in its vocabulary")
        if tok not in seen:
            seen.add(tok)
            ids.append(index[tok])
    ids.append(index[EOT])
    tokens = [teacher.tokens[i] for i in ids]
    eos = len(tokens) - 1
    vocab = BPEVocab(tokens=tokens, merges=list(merges), eos_id=eos, bos_id=eos)
    return TrimmedVocab(vocab, np.asarray(ids, dtype=np.int64))


def teacher_to_student_map(teacher: BPEVocab, trimmed: TrimmedVocab,
                           pieces: list[tuple[int, ...]] | None = None) -> np.ndarray:
    """(teacher n_vocab,) -> the student token each teacher token's probability mass goes to.

    A kept token maps to itself. A dropped one maps to the first token the trimmed tokenizer
    splits it into: if the teacher predicts " interesting", the student's next token is the
    first piece of it (" inter", say). This is how the teacher's next-token distribution is
    carried onto the smaller vocabulary for the distillation loss. `pieces`: student_pieces(teacher,
    trimmed) when the caller has it already.
    """
    pieces = student_pieces(teacher, trimmed) if pieces is None else pieces
    return np.asarray([p[0] for p in pieces], dtype=np.int64)


def student_pieces(teacher: BPEVocab, trimmed: TrimmedVocab) -> list[tuple[int, ...]]:
    """For every teacher token, the student tokens the trimmed tokenizer splits its spelling into
    (one for a kept token; <|endoftext|> and other specials: the student's <|endoftext|>).

    Why the spelling alone is enough: the trimmed BPE is the full one stopped early, and no merge
    ever joins pieces across a teacher token's edges (the merged piece could not be undone), so
    inside a word the student's pieces of a teacher token are the trimmed BPE of that token's
    spelling.
    """
    student_of = {int(t): s for s, t in enumerate(trimmed.teacher_ids)}
    index = {t: s for s, t in enumerate(trimmed.vocab.tokens)}
    ranks = {tuple(m.split(" ")): r for r, m in enumerate(trimmed.vocab.merges)}
    out: list[tuple[int, ...]] = []
    for i, spelling in enumerate(teacher.tokens):
        if i in student_of:
            out.append((student_of[i],))
        elif spelling.startswith("<|"):
            out.append((trimmed.vocab.eos_id,))
        else:
            out.append(tuple(index[p] for p in _bpe_pieces(spelling, ranks)))
    return out


def _bpe_pieces(spelling: str, ranks: dict[tuple[str, ...], int]) -> list[str]:
    """BPE over `spelling` (one pre-token) with the given merge ranks."""
    parts = list(spelling)
    while len(parts) > 1:
        best, at = None, -1
        for j in range(len(parts) - 1):
            r = ranks.get((parts[j], parts[j + 1]))
            if r is not None and (best is None or r < best):
                best, at = r, j
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts
