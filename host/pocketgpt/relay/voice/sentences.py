"""Cutting a streamed reply into pieces to speak: sentences, and clauses when a sentence runs long.

Text turns cut at sentence ends only (`protocol.SentenceSplitter`). Speech cannot start before
its first piece is complete, so a long first sentence would hold the first audio back until
the model has written all of it. For voice turns this splitter therefore also releases a clause
at a comma, colon or dash once it has `first_words` words (the first piece) or `later_words`
words (the pieces after it, which play while the next are written), and cuts a run of
`max_words` words with no punctuation at all at a space. espeak-ng pauses at a clause's end as
it would inside the sentence, so the cut is not audible.
"""

from __future__ import annotations

import re

from pocketgpt.relay.protocol import SentenceSplitter

_CLAUSE = re.compile(r"(?:[,:]|\s[-–—]{1,2})(?=\s)")


class SpeechSplitter(SentenceSplitter):
    def __init__(self, first_words: int = 5, later_words: int = 12, max_words: int = 30) -> None:
        super().__init__()
        self.first_words = first_words
        self.later_words = later_words
        self.max_words = max_words
        self._released = 0

    def feed(self, text: str) -> list[str]:
        out = super().feed(text)
        self._released += len(out)
        while True:
            piece = self._clause()  # counts itself in _released
            if piece is None:
                break
            out.append(piece)
        return out

    def _clause(self) -> str | None:
        buf = self._buf  # what the sentence splitter still holds: no complete sentence in it
        need = self.first_words if self._released == 0 else self.later_words
        for m in _CLAUSE.finditer(buf):
            head = buf[: m.end()]
            if len(head.split()) >= need:
                self._buf = buf[m.end():]
                self._released += 1
                return head.strip()
        run = re.match(rf"\s*(?:\S+\s+){{{self.max_words}}}", buf)  # max_words complete words
        if run:
            self._buf = buf[run.end():]
            self._released += 1
            return buf[: run.end()].strip()
        return None
