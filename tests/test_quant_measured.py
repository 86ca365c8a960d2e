"""Measured bit allocation and the tied embedding's two roles, on a small real GPT-2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pocketgpt.cli import main
from pocketgpt.gguf_io import read_gguf
from pocketgpt.quant import formats as F
from pocketgpt.quant import presets as P
from pocketgpt.quant import quantizer as Q
from support import quant_subject


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("measured")
    text = quant_subject(d)
    (d / "calib.txt").write_text(text[:8000], encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def measured(work):
    mf = read_gguf(work / "float.gguf")
    text = (work / "calib.txt").read_text()
    calib = Q.collect(mf, text, full=True)
    sens = Q.measure_sensitivity(mf, calib, text, P.MEASURED_LADDER, "gptq", tokens=512)
    return mf, calib, sens


@pytest.mark.slow
def test_sensitivity_covers_every_matrix_and_more_bits_cost_less_kl(measured):
    mf, _, sens = measured
    mats = [n for n, t in mf.tensors.items() if P.is_matrix(n, t.shape) and n != "position_embd.weight"]
    assert sorted(sens.kl) == sorted(mats)
    for name in mats:
        kl = sens.kl[name]
        assert set(kl) == set(P.MEASURED_LADDER)
        assert kl[F.Q8_0] < kl[F.Q4_K] < kl[F.Q2_K], (name, kl)
        assert all(v >= 0 for v in kl.values())
        # the kept tensors are the ones measured: right type, right shape
        st = sens.stored[name][F.Q3_K]
        assert st.qtype == F.Q3_K and st.shape == mf.tensors[name].shape


def test_measured_plan_follows_the_measurements_within_budget(measured):
    mf, _, sens = measured
    shapes = {n: t.shape for n, t in mf.tensors.items()}
    plan = P.plan(shapes, mf.cfg.n_layer, mf.tied, "q3", measured=sens.kl, ladder=P.MEASURED_LADDER)
    mats = [n for n in sens.kl]
    bits = 8 * sum(F.tensor_bytes(plan[n].qtype, shapes[n]) for n in mats) / sum(int(np.prod(shapes[n])) for n in mats)
    assert bits <= P.PRESETS["q3"].bpw + 1e-9
    # make one small matrix look catastrophically sensitive below Q8_0: the allocator must protect it
    target = "blk.0.attn_output.weight"
    fake = {n: dict(v) for n, v in sens.kl.items()}
    fake[target] = {t: (0.0 if t == F.Q8_0 else 10.0) for t in fake[target]}
    plan2 = P.plan(shapes, mf.cfg.n_layer, mf.tied, "q3", measured=fake, ladder=P.MEASURED_LADDER)
    assert plan2[target].qtype == F.Q8_0


def test_tied_embedding_gptq_keeps_the_input_role_error_down(measured):
    """Plain GPTQ trades input-role error for head-role error; the tied variant must not."""
    mf, calib, _ = measured
    roles = calib.tied
    assert roles is not None and roles.c_in > 0 and roles.a_head > 0 and roles.ridge() > 0
    W = mf.f32("token_embd.weight")
    H = calib.hessian("token_embd.weight")
    plain = F.dequantize(Q.gptq_quantize(W, F.Q3_K, H), F.Q3_K, W.shape) - W
    tied = F.dequantize(Q.gptq_tied(W, F.Q3_K, H, roles), F.Q3_K, W.shape) - W

    def input_error(D):
        return float((roles.freq * (D.astype(np.float64) ** 2).sum(axis=1)).sum())

    assert input_error(tied) < input_error(plain)


@pytest.mark.slow
def test_quantize_cli_uses_measured_allocation_with_calibration(work, capsys):
    out = work / "q3.gguf"
    code = main(["quantize", str(work / "float.gguf"), str(out), "--type", "q3", "--method", "gptq",
                 "--calib", str(work / "calib.txt"), "--json",
                 "--tune", "off"])  # this test is about the allocation; tuning: test_quant_tune.py
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["allocation"] == "measured"
    assert res["bpw"] <= P.PRESETS["q3"].bpw + 1e-9
    back = read_gguf(out)
    assert back.tensors["token_embd.weight"].qtype in P.MEASURED_LADDER


def test_quantize_cli_measured_without_calibration_is_refused(work, capsys):
    out = work / "never.gguf"
    code = main(["quantize", str(work / "float.gguf"), str(out), "--type", "q3", "--alloc", "measured"])
    err = capsys.readouterr().err
    assert code != 0 and "--calib" in err and not out.exists()


def test_act_order_gptq_writes_valid_blocks_and_beats_rounding():
    """Act-order permutes the sweep inside each block: the bytes must still be an ordinary block
    file (gguf's reference dequantization reads them) and the layer output error must drop."""
    import gguf

    rng = np.random.default_rng(1)
    cols, rows, n = 512, 48, 4096
    X = (rng.standard_normal((n, cols)) @ (np.eye(cols) + rng.standard_normal((cols, cols)) / np.sqrt(cols))).astype(np.float32)
    X[:, rng.permutation(cols)[:16]] *= 5.0
    W = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    H = (X.T.astype(np.float64) @ X) / n
    for qtype in (F.Q2_K, F.Q4_0):
        raw = Q.gptq_quantize(W, qtype, H, act_order=True)
        ours = F.dequantize(raw, qtype, W.shape)
        theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(qtype)).reshape(W.shape)
        assert np.array_equal(ours, theirs)
        e_rtn = float((((F.dequantize(F.quantize(W, qtype), qtype, W.shape) - W) @ X.T) ** 2).mean())
        e_ao = float((((ours - W) @ X.T) ** 2).mean())
        assert e_ao < 0.8 * e_rtn, (F.type_name(qtype), e_rtn, e_ao)
