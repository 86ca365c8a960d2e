"""Post-quantization tuning (quantizer.tune_float): norms, biases and per-row gains fitted to the
float model's outputs on calibration text, the quantized levels and the file size untouched."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from pocketgpt.cli import main
from pocketgpt.evaluate import TorchScorer, evaluate
from pocketgpt.gguf_io import read_gguf
from pocketgpt.quant import formats as F
from pocketgpt.quant import presets as P
from pocketgpt.quant import quantizer as Q
from support import quant_subject


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    text = quant_subject(d)
    (d / "calib.txt").write_text(text[:8000], encoding="utf-8")
    (d / "heldout.txt").write_text(text[12000:16000], encoding="utf-8")   # never seen by the tuning
    return d


@pytest.mark.slow
def test_tuning_lowers_kl_on_unseen_text_and_keeps_levels_types_and_size(work):
    mf = read_gguf(work / "float.gguf")
    shapes = {n: t.shape for n, t in mf.tensors.items()}
    stored, _ = Q.quantize_tensors(mf, P.plan(shapes, mf.cfg.n_layer, mf.tied, "Q2_K"), "rtn")
    tuned, rep = Q.tune_float(mf, stored, (work / "calib.txt").read_text(), steps=40, lr=3e-3)
    assert rep.kl_after < 0.9 * rep.kl_before, rep
    assert rep.parameters > 0 and rep.check_tokens > 0
    for name, t in stored.items():
        u = tuned[name]
        assert (u.qtype, u.shape, u.n_bytes) == (t.qtype, t.shape, t.n_bytes), name
        if t.qtype == F.Q2_K:   # only the half scale fields d, dmin (bytes 80..83 of 84) may change
            a = t.raw.reshape(-1, 84)
            b = u.raw.reshape(-1, 84)
            assert np.array_equal(a[:, :80], b[:, :80]), name
    ref = TorchScorer(mf)
    text = (work / "heldout.txt").read_text()
    before = evaluate(TorchScorer(dataclasses.replace(mf, tensors=stored)), text, ref=ref)
    after = evaluate(TorchScorer(dataclasses.replace(mf, tensors=tuned)), text, ref=ref)
    assert after.kl < 0.95 * before.kl, (before.kl, after.kl)


def test_tuning_never_returns_worse_than_it_got(work):
    """With a learning rate far too high every step makes things worse; the untuned state is kept."""
    mf = read_gguf(work / "float.gguf")
    shapes = {n: t.shape for n, t in mf.tensors.items()}
    stored, _ = Q.quantize_tensors(mf, P.plan(shapes, mf.cfg.n_layer, mf.tied, "Q8_0"), "rtn")
    tuned, rep = Q.tune_float(mf, stored, (work / "calib.txt").read_text(), steps=5, lr=5.0)
    assert rep.kl_after <= rep.kl_before
    if rep.kl_after == rep.kl_before:
        assert all(np.array_equal(tuned[n].raw, stored[n].raw) for n in stored)


@pytest.mark.slow
def test_quantize_cli_tunes_weighted_and_gptq_by_default(work, capsys):
    out = work / "q.gguf"
    assert main(["quantize", str(work / "float.gguf"), str(out), "--type", "Q3_K", "--method", "weighted",
                 "--calib", str(work / "calib.txt"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tune"]["kl_after"] <= res["tune"]["kl_before"] and res["tune"]["parameters"] > 0
    assert out.stat().st_size == res["file_bytes"]
    assert main(["quantize", str(work / "float.gguf"), str(work / "r.gguf"), "--type", "Q3_K", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tune"] is None      # rtn stays the plain baseline
    assert read_gguf(work / "r.gguf").file_bytes == out.stat().st_size


def test_tune_on_without_calibration_text_is_refused(work, capsys):
    out = work / "never.gguf"
    assert main(["quantize", str(work / "float.gguf"), str(out), "--type", "Q4_0", "--tune", "on"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--calib" in err[0]
    assert not out.exists()
