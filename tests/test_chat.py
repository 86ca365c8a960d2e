"""pocketgpt chat: a reply streams for each line, with or without a terminal."""

from __future__ import annotations

from cli_util import pocketgpt
from engine_models import make_hf_model, write_model


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
