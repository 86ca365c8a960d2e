"""Bad input gets one line that says what failed and what to do, a non-zero exit, and no debris."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from support import assert_one_line_error, make_hf_model, pocketgpt, write_model


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory) -> Path:
    model, vocab = make_hf_model(n_embd=32, n_layer=1, n_head=2, n_ctx=32, seed=1)
    return write_model(tmp_path_factory.mktemp("good") / "good.gguf", model, vocab)


def _no_debris(folder: Path, keep: set[str]) -> None:
    left = {p.name for p in folder.iterdir()} - keep
    assert not left, f"left behind: {left}"


def test_missing_model_file(tmp_path):
    assert_one_line_error(pocketgpt("inspect", str(tmp_path / "nope.gguf")), "nope.gguf", "no such")


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("these are my notes, not a model\n")
    assert_one_line_error(pocketgpt("inspect", str(bad)), "notes.gguf", "not a GGUF")


@pytest.mark.slow
def test_truncated_gguf(good_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    data = good_gguf.read_bytes()
    for size in (12, 2000, len(data) // 2, len(data) - 7):
        cut.write_bytes(data[:size])
        res = pocketgpt("inspect", str(cut))
        assert_one_line_error(res, "cut.gguf")
        assert any(w in res.stderr.lower() for w in ("truncated", "damaged")), res.stderr


def test_gguf_of_another_architecture(tmp_path):
    import gguf

    other = tmp_path / "llama.gguf"
    w = gguf.GGUFWriter(str(other), arch="llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert_one_line_error(pocketgpt("inspect", str(other)), "llama", "gpt2")
    assert_one_line_error(pocketgpt("eval", str(other), "--text", str(other)), "llama.gguf")


@pytest.mark.slow
def test_non_utf8_corpus_and_empty_corpus(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1") * 100)
    out = tmp_path / "run"
    assert_one_line_error(pocketgpt("train", str(latin), "--out", str(out), "--steps", "1"), "latin1.txt", "UTF-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    assert_one_line_error(pocketgpt("train", str(empty), "--out", str(out), "--steps", "1"), "no text")
    assert not (out / "checkpoint").exists() and not (out / "model.safetensors").exists()


def test_eval_text_problems(good_gguf, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(pocketgpt("eval", str(good_gguf), "--text", str(empty)), "empty")
    assert_one_line_error(pocketgpt("eval", str(good_gguf), "--text", str(tmp_path / "x.txt")), "x.txt")


def test_unknown_hub_id_offline(tmp_path):
    res = pocketgpt("convert", "no-such-org/no-such-gpt2", str(tmp_path / "out.gguf"))
    assert_one_line_error(res, "no-such-org/no-such-gpt2")
    _no_debris(tmp_path, set())


@pytest.mark.slow
def test_failed_conversion_leaves_no_file(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{ this is not json")
    res = pocketgpt("convert", str(folder), str(tmp_path / "out.gguf"))
    assert_one_line_error(res, "broken")
    _no_debris(tmp_path, {"broken"})


def test_unknown_builtin():
    assert_one_line_error(pocketgpt("inspect", "builtin:toaster"), "builtin:toaster")


def test_writer_interrupted_midway_keeps_the_old_file(good_gguf, tmp_path, monkeypatch):
    """An exception while writing (full disk, a bug) leaves the previous file intact."""
    import shutil

    import gguf

    from pocketgpt.errors import PocketError
    from pocketgpt.gguf_io import read_gguf, write_gguf

    dest = tmp_path / "model.gguf"
    shutil.copy(good_gguf, dest)
    before = dest.read_bytes()
    mf = read_gguf(good_gguf)

    def boom(self):  # noqa: ANN001
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError):
        write_gguf(dest, mf.cfg, mf.vocab, mf.tensors)
    assert dest.read_bytes() == before
    _no_debris(tmp_path, {"model.gguf"})
    with pytest.raises(PocketError):
        write_gguf(tmp_path / "missing-dir" / "m.gguf", mf.cfg, mf.vocab, mf.tensors)
