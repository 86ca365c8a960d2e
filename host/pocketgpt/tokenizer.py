"""The GPT-2 byte-level BPE vocabulary: shipped files, GGUF arrays, and a Hugging Face tokenizer.

The vocabulary and merges OpenAI published with GPT-2 ship inside the package (data/tokenizer/,
with their SHA-256 sums and license note). A model file carries its own copy (possibly trimmed to
fewer merges), so nothing here ever touches the network.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

from pocketgpt.errors import PocketError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOT = "<|endoftext|>"

# llama.cpp's token types (llama_token_type / gguf TokenType)
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3


@dataclass(frozen=True)
class BPEVocab:
    """Tokens by id (in GPT-2's byte-to-unicode spelling) and merges in rank order ("a b")."""

    tokens: list[str]
    merges: list[str]
    eos_id: int
    bos_id: int
    token_types: list[int] = field(default_factory=list)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def types(self) -> list[int]:
        if self.token_types:
            return list(self.token_types)
        return [TOKEN_CONTROL if t == EOT else TOKEN_NORMAL for t in self.tokens]

    def hf_tokenizer(self) -> PreTrainedTokenizerFast:
        """A ``transformers`` fast tokenizer with exactly these tokens and merges."""
        return _hf_tokenizer(tuple(self.tokens), tuple(self.merges), self.eos_id)


@lru_cache(maxsize=4)
def _hf_tokenizer(tokens: tuple[str, ...], merges: tuple[str, ...], eos_id: int) -> PreTrainedTokenizerFast:
    from transformers import GPT2TokenizerFast

    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ")) for m in merges]
    eos = tokens[eos_id]
    tok = GPT2TokenizerFast(vocab=vocab, merges=pairs, unk_token=eos, bos_token=eos, eos_token=eos)
    tok.model_max_length = 1 << 30  # windows are the caller's business; silence length warnings
    return tok


def _data_file(name: str) -> bytes:
    return (resources.files("pocketgpt") / "data" / "tokenizer" / name).read_bytes()


def _verify(name: str, data: bytes) -> None:
    sums = {}
    for line in _data_file("SHA256SUMS").decode().splitlines():
        if line.strip():
            digest, fname = line.split()
            sums[fname] = digest
    got = hashlib.sha256(data).hexdigest()
    if sums.get(name) != got:
        raise PocketError(
            f"shipped tokenizer file {name} fails its SHA-256 check (got {got[:12]}…): "
            "reinstall pocketgpt"
        )


@lru_cache(maxsize=1)
def gpt2_vocab() -> BPEVocab:
    """The full GPT-2 vocabulary (50,257 tokens, 50,000 merges), checked against SHA256SUMS."""
    vocab_raw = _data_file("vocab.json")
    merges_raw = _data_file("merges.txt")
    _verify("vocab.json", vocab_raw)
    _verify("merges.txt", merges_raw)
    enc = json.loads(vocab_raw.decode("utf-8"))
    tokens = [""] * len(enc)
    for tok, idx in enc.items():
        tokens[idx] = tok
    merges = [
        line
        for line in merges_raw.decode("utf-8").split("\n")
        if line and not line.startswith("#version")
    ]
    eos = enc[EOT]
    return BPEVocab(tokens=tokens, merges=merges, eos_id=eos, bos_id=eos)
