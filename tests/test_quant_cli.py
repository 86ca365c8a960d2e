"""`pocketgpt quantize` end to end on a small real GPT-2, the methods, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from pocketgpt.cli import main
from pocketgpt.gguf_io import read_gguf
from pocketgpt.quant import formats as F
from pocketgpt.quant.quantizer import gptq_quantize
from support import float_gpt2_gguf

FORTUNES = Path("/usr/share/games/fortunes/fortunes")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    float_gpt2_gguf(d / "float.gguf", 256)
    text = FORTUNES.read_text(encoding="utf-8", errors="replace") if FORTUNES.exists() else ""
    if len(text) < 20000:
        text = ("The quick brown fox jumps over the lazy dog. " * 800)
    (d / "calib.txt").write_text(text[:12000], encoding="utf-8")
    (d / "heldout.txt").write_text(text[-1500:], encoding="utf-8")
    (d / "short.txt").write_text("Too short to calibrate anything.", encoding="utf-8")
    return d


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_quantize_q4_rtn_writes_a_file_gguf_reads(work, capsys):
    out = work / "q4.gguf"
    code, stdout, _ = _run(capsys, "quantize", str(work / "float.gguf"), str(out), "--type", "q4", "--json")
    assert code == 0
    res = json.loads(stdout)
    assert res["file_bytes"] == out.stat().st_size and res["bpw"] <= 3.875
    assert res["method"] == "rtn" and res["fallbacks"] == []
    mf = read_gguf(out)
    src = read_gguf(work / "float.gguf")
    assert {t.qtype for t in mf.tensors.values()} >= {F.Q8_0}
    reader = gguf.GGUFReader(str(out))  # gguf-py (llama.cpp's own reader) agrees on types and values
    for t in reader.tensors:
        ours = mf.tensors[t.name]
        assert int(t.tensor_type) == ours.qtype
        ref = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.shape)
        assert np.array_equal(ref, ours.to_f32())
        if len(ours.shape) == 2:
            x = src.f32(t.name)
            rel = np.sqrt(((ref - x) ** 2).mean() / (x ** 2).mean())
            assert rel < 0.2, t.name


@pytest.mark.slow
def test_single_type_with_fallback_reported(work, capsys, tmp_path):
    small = float_gpt2_gguf(tmp_path / "e64.gguf", 64)
    out = tmp_path / "q3k.gguf"
    code, stdout, _ = _run(capsys, "quantize", str(small), str(out), "--type", "Q3_K")
    assert code == 0
    assert "fallback: blk.0.attn_qkv.weight" in stdout and "Q4_0 instead" in stdout
    assert read_gguf(out).tensors["blk.0.attn_qkv.weight"].qtype == F.Q4_0


@pytest.mark.slow
def test_weighted_and_gptq_run_from_calibration_text(work, capsys):
    results = {}
    for method in ("rtn", "weighted", "gptq"):
        out = work / f"q4_0_{method}.gguf"
        argv = ["quantize", str(work / "float.gguf"), str(out), "--type", "Q4_0", "--method", method, "--json",
                "--tune", "off"]   # this test is about the methods; tuning: test_quant_tune.py
        if method != "rtn":
            argv += ["--calib", str(work / "calib.txt")]
        code, stdout, _ = _run(capsys, *argv)
        assert code == 0, method
        results[method] = json.loads(stdout)
        assert results[method]["file_bytes"] == out.stat().st_size
    assert results["gptq"]["calib_tokens"] >= 512
    # same file size, lower importance-weighted weight error for every calibrated matrix
    assert results["weighted"]["file_bytes"] == results["rtn"]["file_bytes"]
    for name in ("blk.0.attn_qkv.weight", "blk.0.ffn_up.weight", "blk.0.ffn_down.weight"):
        err = {m: next(t["rel_rmse"] for t in r["tensors"] if t["name"] == name) for m, r in results.items()}
        assert err["weighted"] < err["rtn"], (name, err)


@pytest.mark.slow
def test_eval_reports_kl_against_the_float_input(work, capsys):
    out = work / "q8_eval.gguf"
    code, stdout, _ = _run(capsys, "quantize", str(work / "float.gguf"), str(out), "--type", "q8",
                           "--eval", str(work / "heldout.txt"), "--json")
    assert code == 0
    res = json.loads(stdout)
    for key in ("ppl", "bpb", "kl", "top1", "ref_ppl", "ppl_change"):
        assert key in res
    assert 0 <= res["kl"] < 0.01 and res["top1"] > 0.9
    assert abs(res["ppl_change"]) < 0.01


def test_gptq_beats_rounding_on_the_layer_output():
    """GPTQ minimises ||(W - Q) X||: on correlated inputs it must beat round-to-nearest clearly."""
    rng = np.random.default_rng(0)
    cols, rows, n = 256, 64, 4096
    mix = rng.standard_normal((cols, cols)) / np.sqrt(cols)
    X = (rng.standard_normal((n, cols)) @ (np.eye(cols) + 2 * mix)).astype(np.float32)
    X[:, :8] *= 6.0  # a few loud input channels, as transformers have
    W = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    H = (X.T.astype(np.float64) @ X) / n
    def out_err(raw, qtype):
        dq = F.dequantize(raw, qtype, W.shape)
        return float((((dq - W) @ X.T) ** 2).mean())

    for qtype in (F.Q2_K, F.Q3_K, F.Q4_0):
        e_rtn = out_err(F.quantize(W, qtype), qtype)
        e_gptq = out_err(gptq_quantize(W, qtype, H), qtype)
        assert e_gptq < 0.7 * e_rtn, (F.type_name(qtype), e_rtn, e_gptq)


@pytest.mark.parametrize("argv, message", [
    (["--type", "q7"], "unknown --type 'q7'"),
    (["--type", "q4", "--method", "gptq"], "needs calibration text"),
    (["--type", "q4", "--method", "weighted", "--calib", "SHORT"], "calibration needs at least 512"),
    (["--type", "q4", "--calib", "MISSING", "--method", "gptq"], "no such text file"),
])
def test_bad_input_one_line_nonzero_no_output(work, capsys, argv, message):
    out = work / "bad.gguf"
    argv = [a.replace("SHORT", str(work / "short.txt")).replace("MISSING", str(work / "nope.txt")) for a in argv]
    code, _, err = _run(capsys, "quantize", str(work / "float.gguf"), str(out), *argv)
    assert code == 1
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".bad.gguf")]


def test_model_without_quantizable_matrices_fails_cleanly(tmp_path, capsys):
    tiny = float_gpt2_gguf(tmp_path / "e20.gguf", 20)  # rows of 20, 60 and 80: no block divides them
    out = tmp_path / "x.gguf"
    code, _, err = _run(capsys, "quantize", str(tiny), str(out), "--type", "q4")
    assert code == 1 and "nothing to quantize" in err and err.count("\n") == 1
    assert not out.exists()
