"""pocketgpt train on a ~50 KB sample of the quotes corpus: the loss falls, runs resume, results are seeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support import pocketgpt, pocketgpt_json

FORTUNES = Path("/usr/share/games/fortunes")


def _sample_corpus(tmp: Path) -> Path:
    """~50 KB of real quotes when Debian's fortunes are installed, else public-domain-style text we write."""
    out = tmp / "quotes"
    src = FORTUNES / "fortunes"
    if src.exists():
        text = b""
        for name in ("fortunes", "wisdom", "literature"):
            p = FORTUNES / name
            if p.exists():
                text += p.read_bytes()
        out.write_bytes(text[:50_000].rsplit(b"\n%\n", 1)[0] + b"\n")
    else:
        lines = [f"Quote number {i}: a stitch in time saves {i % 9 + 1} and the early bird gets the worm.\n%\n"
                 for i in range(700)]
        out.write_text("".join(lines))
    return out


ARGS = ["--layers", "2", "--embd", "64", "--heads", "2", "--ctx", "64", "--batch", "8",
        "--lr", "3e-3", "--eval-every", "20", "--checkpoint-every", "20", "--threads", "1"]
# One torch thread: `make test` runs one test worker per core, so more would only contend.
STEPS = 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _sample_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> tuple[dict, Path]:
    """One straight STEPS-step run (its --json result, its folder), shared by the tests below that
    need a finished run: training is the slow part, and none of them changes the folder."""
    out = tmp_path_factory.mktemp("trained") / "run"
    return pocketgpt_json("train", str(corpus), "--out", str(out), "--steps", str(STEPS), *ARGS), out


@pytest.mark.slow
def test_loss_falls_and_the_model_is_usable(trained, tmp_path):
    res, out = trained
    assert res["tokens_seen"] == STEPS * 8 * 64
    log = json.loads((out / "train.json").read_text())
    assert log["steps"] == STEPS
    # untrained: ln(50257) ~ 10.8 nats; 40 small steps must bring held-out loss well below that
    assert res["val_loss"] < 8.0, res
    assert (out / "heldout.txt").stat().st_size > 0
    gg = tmp_path / "m.gguf"
    assert pocketgpt("convert", str(out), str(gg)).returncode == 0
    ev = pocketgpt_json("eval", str(gg), "--text", str(out / "heldout.txt"), "--backend", "torch")
    assert ev["ppl"] < 50257 / 10


@pytest.mark.slow
def test_resume_continues_to_the_same_result(corpus, trained, tmp_path):
    straight, _ = trained
    b = tmp_path / "b"
    first = pocketgpt_json("train", str(corpus), "--out", str(b), "--steps", str(STEPS), "--max-minutes", "0.0001", *ARGS)
    assert first["steps"] < STEPS
    resumed = pocketgpt_json("train", str(corpus), "--out", str(b), "--steps", str(STEPS), "--resume", *ARGS)
    assert resumed["steps"] == STEPS
    assert resumed["tokens_seen"] == straight["tokens_seen"]
    assert resumed["val_loss"] == pytest.approx(straight["val_loss"], abs=2e-3)


@pytest.mark.slow
def test_refuses_to_overwrite_a_run_without_resume(corpus, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained[1], out)  # a copy: a refusal that failed must not spoil the shared run
    res = pocketgpt("train", str(corpus), "--out", str(out), "--steps", "2", *ARGS)
    assert res.returncode != 0 and "--resume" in res.stderr


@pytest.mark.slow
def test_fine_tune_from_a_local_folder(corpus, trained, tmp_path):
    ft = pocketgpt_json("train", str(corpus), "--out", str(tmp_path / "ft"), "--init", str(trained[1]),
                        "--steps", "20", "--lr", "1e-3", "--eval-every", "20", "--checkpoint-every", "20",
                        "--batch", "8", "--ctx", "64", "--threads", "1")
    assert ft["steps"] == 20 and ft["n_params"] > 0


@pytest.mark.slow
def test_chat_mix_trains_on_pairs_of_training_quotes_and_the_model_carries_the_template(corpus, tmp_path):
    import gguf

    from pocketgpt.chat_format import CHAT_TEMPLATE, TEMPLATE_KEY

    extra = tmp_path / "extra"
    extra.write_text("An extra quote about zebras for training only.\n%\nAnother extra quote about giraffes.\n")
    out = tmp_path / "chat"
    res = pocketgpt_json("train", str(corpus), "--out", str(out), "--steps", "4", "--chat-mix", "0.5",
                         "--chat-pairs", "200", "--extra", str(extra), *ARGS)
    assert res["steps"] == 4
    held = (out / "heldout.txt").read_text()
    assert "zebras" not in held and "giraffes" not in held  # extra corpora are never held out
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == CHAT_TEMPLATE
    gg = tmp_path / "chat.gguf"
    assert pocketgpt("convert", str(out), str(gg)).returncode == 0
    assert gguf.GGUFReader(str(gg)).fields[TEMPLATE_KEY].contents() == CHAT_TEMPLATE


def test_chat_mix_outside_zero_to_one_is_a_one_line_error(corpus, tmp_path):
    from support import assert_one_line_error

    res = pocketgpt("train", str(corpus), "--out", str(tmp_path / "x"), "--steps", "2", "--chat-mix", "1.5", *ARGS)
    assert_one_line_error(res, "--chat-mix")
