"""pocketgpt chat: a reply streams for each line, with or without a terminal."""

from __future__ import annotations

import pytest

from support import make_hf_model, pocketgpt, write_model


def test_one_reply_per_input_line_without_a_terminal(tmp_path):
    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=64, seed=2)
    gg = write_model(tmp_path / "m.gguf", model, vocab)
    res = pocketgpt("chat", str(gg), "-n", "8", "--seed", "1", input="Life is\n\nA computer is\n/quit\nnever read\n")
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert [l for l in out if l.startswith("you> ")] == ["you> Life is", "you> ", "you> A computer is", "you> /quit"]
    replies = [l for l in out if l.startswith("bot> ")]
    assert len(replies) == 2 and all(len(r) > len("bot> ") for r in replies)
    assert "(an empty line: type a request, or /quit to leave)" in out  # never silence
    again = pocketgpt("chat", str(gg), "-n", "8", "--seed", "1", input="Life is\n")
    assert [l for l in again.stdout.splitlines() if l.startswith("bot> ")][0] == replies[0]


def test_demo_runs_the_scripted_conversation_and_exits(tmp_path):
    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=64, seed=2)
    gg = write_model(tmp_path / "m.gguf", model, vocab)
    res = pocketgpt("chat", str(gg), "--demo", "-n", "6", "--seed", "3", input="")
    assert res.returncode == 0, res.stderr
    assert sum(l.startswith("bot> ") for l in res.stdout.splitlines()) == 3


def test_odd_requests_get_a_reply_never_silence(tmp_path):
    """Punctuation, emoji, other languages and a line longer than the context: each gets a reply with words."""
    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=64, seed=2)
    gg = write_model(tmp_path / "m.gguf", model, vocab)
    lines = ["?!", "\U0001F600\U0001F389", "\u00bfQu\u00e9 es la vida?", "\u4eba\u751f\u306e\u610f\u5473", "why " * 300]
    res = pocketgpt("chat", str(gg), "-n", "12", "--seed", "4", input="\n".join(lines) + "\n")
    assert res.returncode == 0, res.stderr
    replies = [l[len("bot> "):] for l in res.stdout.splitlines() if l.startswith("bot> ")]
    assert len(replies) == len(lines) and all(any(c.isalnum() for c in r) for r in replies), replies


def test_an_empty_request_gets_one_line_that_says_what_to_do(tmp_path):
    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=64, seed=2)
    gg = write_model(tmp_path / "m.gguf", model, vocab)
    res = pocketgpt("chat", str(gg), "-n", "12", "--seed", "4", input="\n   \nHi\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(an empty line: type a request, or /quit to leave)") == 2, res.stdout
    assert len([l for l in res.stdout.splitlines() if l.startswith("bot> ")]) == 1  # only "Hi" is answered


@pytest.mark.slow
def test_raw_continues_the_line_and_chat_answers_it(tmp_path):
    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=64, seed=2)
    gg = write_model(tmp_path / "m.gguf", model, vocab)
    chat = pocketgpt("chat", str(gg), "-n", "8", "--greedy", input="Life is\n")
    raw = pocketgpt("chat", str(gg), "-n", "8", "--greedy", "--raw", input="Life is\n")
    assert chat.returncode == 0 and raw.returncode == 0, chat.stderr + raw.stderr
    from pocketgpt.engine import Engine

    eng = Engine(gg, threads=1)
    want_raw = "".join(p.text for p in eng.generate([eng.eos_id] + eng.tokenize("Life is"), max_tokens=8, greedy=True))
    bot = lambda r: [l for l in r.stdout.splitlines() if l.startswith("bot> ")][0]  # noqa: E731
    assert bot(raw) == "bot> " + want_raw.split("\n")[0]  # the line continued as text, as `run` does
    assert bot(chat) != bot(raw)  # the line answered in the chat layout
