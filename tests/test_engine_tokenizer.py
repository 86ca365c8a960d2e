"""The C tokenizer against Hugging Face's GPT-2 tokenizer, token for token, and the streaming
UTF-8 detokenizer. Users rely on the engine encoding prompts exactly as the model was trained."""

from __future__ import annotations

import random

import pytest

from support import make_hf_model, write_model

AWKWARD = [
    "", " ", "  ", "\n", "\n\n\n", " \n ", "\t\tx", "a  b   c    d", "trailing   ", "   leading",
    "Hello world", "Hello, world!", "I'm you're we've they'll he'd she's it't 'S 'RE",
    "''''s ''t '", "don't DON'T Don't", "x's ?'s 'll've're",
    "1234567890 3.14159 1,000,000 -42 +7 1e-9 0x1F", "٣٤٥ ⅷ ½ ² 𝟙𝟚",
    "naïve café résumé Ångström façade", "Привет, мир! Как дела?", "こんにちは世界、元気ですか。",
    "你好，世界！", "안녕하세요 세계", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️", "🤖🤖🤖🤖", "zero\u200bwidth\u200djoiner",
    "nbsp\u00a0here \u00a0 \u2003em\u3000ideo", "mixed \t\n\r\v\f spaces \u2028 \u2029 end",
    "tabs\tand\nnewlines\r\nwindows", "<|endoftext|>", "before<|endoftext|>after", "a<|endoftext|><|endoftext|>b",
    "<|endoftext", "code: def f(x):\n    return x**2  # square\n", "{'json': [1, 2.5, null, \"s\"]}",
    "https://example.com/path?q=1&r=two#frag", "email@example.org", "C++ C# F# .NET node.js",
    "!!!???...,,,;;;:::", "----====____", "$100 €50 £20 ¥1000 ₹500", "°C ±5 × ÷ ≠ ≤ ≥ ∞ √",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "\x00\x01\x02 control \x7f\x1b[31mred\x1b[0m", "ﬁ ﬂ ligatures Ǆ ǅ ǆ", "ÀÁÂÃÄÅ àáâãäå",
    "  multiple   spaces   between   words  ", " \n\n  \n", "end with space ", "x" + " " * 50 + "y",
]


@pytest.fixture(scope="module")
def tok_pair(tmp_path_factory):
    from pocketgpt.engine import Engine

    model, vocab = make_hf_model(n_embd=16, n_layer=1, n_head=2, n_ctx=32)
    path = write_model(tmp_path_factory.mktemp("tok") / "tok.gguf", model, vocab)
    return Engine(path, threads=1), vocab.hf_tokenizer()


def _random_strings(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pieces = [" ", "  ", "\n", "\t", "a", "Z", "é", "ß", "中", "😀", "'", "'s", "1", "23", "٣", ".", "!?", "\u00a0",
              "\u3000", "word", " the", "ing", "<|endoftext|>", "👍🏽", "ﬁ", "\r\n"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def test_tokenize_matches_hugging_face_on_awkward_strings(tok_pair):
    eng, hf = tok_pair
    for text in AWKWARD + _random_strings(400, seed=1):
        want = hf.encode(text)
        got = eng.tokenize(text)
        assert got == want, f"{text!r}: engine {got} != HF {want}"


def test_long_input_matches_hugging_face(tok_pair):
    eng, hf = tok_pair
    rng = random.Random(7)
    text = "".join(rng.choice(AWKWARD[10:]) for _ in range(300))
    assert eng.tokenize(text) == hf.encode(text)
    # single pre-tokens tens of thousands of bytes long (merging must not go quadratic)
    for word in ["abracadabra" * 3000, "".join(rng.choice("etaoinshrdlu") for _ in range(40000)),
                 "9" * 20000, " " * 30000 + "x", "😀" * 5000]:
        assert eng.tokenize(word) == hf.encode(word), word[:20]


def test_detokenize_round_trips(tok_pair):
    eng, hf = tok_pair
    for text in AWKWARD:
        ids = eng.tokenize(text)
        assert eng.detokenize(ids) == text
        assert eng.detokenize(ids) == hf.decode(ids)
        assert b"".join(eng.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_trimmed_vocabulary_tokenizes_like_hugging_face(tmp_path):
    """Fewer merges (the shrink step's output): both tokenizers fall back to the same pieces."""
    from pocketgpt.engine import Engine
    from pocketgpt.tokenizer import BPEVocab, gpt2_vocab

    full = gpt2_vocab()
    merges = full.merges[:300]
    keep = set(full.tokens[:256])
    for m in merges:
        a, b = m.split(" ")
        keep.add(a + b)
    tokens = [t for t in full.tokens if t in keep] + ["<|endoftext|>"]
    vocab = BPEVocab(tokens=tokens, merges=merges, eos_id=len(tokens) - 1, bos_id=len(tokens) - 1)
    model, _ = make_hf_model(n_embd=16, n_layer=1, n_head=2, n_ctx=32, vocab=vocab)
    eng = Engine(write_model(tmp_path / "trim.gguf", model, vocab), threads=1)
    hf = vocab.hf_tokenizer()
    assert eng.n_vocab == len(tokens)
    for text in AWKWARD + _random_strings(100, seed=2):
        assert eng.tokenize(text) == hf.encode(text), text


def test_streamed_text_is_valid_utf8_when_characters_span_tokens(tok_pair):
    """Every piece a session releases is complete UTF-8, and the pieces add up to the text."""
    eng, _ = tok_pair
    from pocketgpt import _engine

    text = "emoji 😀👍🏽 中文 ok é"
    # byte tokens split multi-byte characters across several tokens
    ids = [eng._model.tokenize(bytes([b]))[0] for b in text.encode("utf-8")]
    sess = _engine.Session(eng._model, n_ctx=8, n_batch=1)
    sess.text_begin(())
    pieces = []
    for t in ids:
        data, stopped = sess.text_push(t)
        assert not stopped
        pieces.append(data.decode("utf-8"))  # raises if a piece were not valid UTF-8
    pieces.append(sess.text_flush().decode("utf-8"))
    assert "".join(pieces) == text
    assert "" in pieces  # the first bytes of 😀 released nothing


def test_stop_strings_cut_the_stream(tok_pair):
    eng, _ = tok_pair
    from pocketgpt import _engine

    sess = _engine.Session(eng._model, n_ctx=8, n_batch=1)
    sess.text_begin((b"STOP", b"\n\n"))
    out = []
    stopped = False
    for t in eng.tokenize("Hello there ST friend STO STOP never shown"):
        data, stopped = sess.text_push(t)
        out.append(data.decode("utf-8"))
        if stopped:
            break
    assert stopped
    assert "".join(out) == "Hello there ST friend STO "


def test_invalid_utf8_becomes_replacement_characters(tok_pair):
    eng, _ = tok_pair
    from pocketgpt import _engine

    sess = _engine.Session(eng._model, n_ctx=8, n_batch=1)
    sess.text_begin(())
    raw = b"ok\xff\xe2\x82x\xf0\x9f\x98"
    ids = [eng._model.tokenize(bytes([b]))[0] for b in raw]
    text = "".join(sess.text_push(t)[0].decode("utf-8") for t in ids) + sess.text_flush().decode("utf-8")
    assert text == raw.decode("utf-8", "replace")
