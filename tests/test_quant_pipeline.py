"""The quantizer as a library (pocketgpt.quant.pipeline): what `pocketgpt quantize` and
bench/quality.py call, so a script gets the same file as the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketgpt.cli import main
from pocketgpt.errors import PocketError
from pocketgpt.gguf_io import read_gguf
from pocketgpt.quant import formats as F
from pocketgpt.quant import presets
from pocketgpt.quant.pipeline import quantize_model, write_quantized
from support import float_gpt2_gguf


@pytest.fixture(scope="module")
def float_model(tmp_path_factory) -> Path:
    return float_gpt2_gguf(tmp_path_factory.mktemp("pipeline") / "float.gguf", 256)


def test_library_writes_the_file_the_command_writes(float_model, tmp_path, capsys):
    mf = read_gguf(float_model)
    res = quantize_model(mf, "q4")
    lib = tmp_path / "lib.gguf"
    size = write_quantized(lib, mf, res)
    assert main(["quantize", str(float_model), str(tmp_path / "cli.gguf"), "--type", "q4"]) == 0
    capsys.readouterr()
    assert lib.read_bytes() == (tmp_path / "cli.gguf").read_bytes() and size == lib.stat().st_size
    assert res.allocation == "model" and res.calib_tokens == 0 and res.tune is None
    assert res.matrix_bpw() <= 3.875
    back = read_gguf(lib)
    assert back.metadata["pocketgpt.quantize.type"] == "q4"
    assert sum(res.type_counts().values()) == sum(1 for t in back.tensors.values() if len(t.shape) == 2)


def test_a_given_plan_is_used_as_is(float_model):
    mf = read_gguf(float_model)
    shapes = {n: t.shape for n, t in mf.tensors.items()}
    plan = presets.plan(shapes, mf.cfg.n_layer, mf.tied, "Q8_0")
    plan["blk.0.ffn_down.weight"] = presets.Choice(F.Q4_0, F.Q4_0)
    res = quantize_model(mf, "Q8_0", choices=plan)
    assert res.allocation == "given"
    assert res.stored["blk.0.ffn_down.weight"].qtype == F.Q4_0
    assert res.stored["blk.0.ffn_up.weight"].qtype == F.Q8_0


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "gptq"}, "needs calibration text"),
    ({"tune": "on"}, "--tune on needs calibration text"),
    ({"bpw": 40.0}, "between 1 and 16 bits"),
    ({"method": "awq"}, "unknown --method 'awq'"),
])
def test_impossible_options_fail_before_any_work(float_model, kwargs, message):
    mf = read_gguf(float_model)
    with pytest.raises(PocketError, match=message.replace("-", r"\-")):
        quantize_model(mf, "q4", **kwargs)
