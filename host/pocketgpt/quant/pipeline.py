"""Quantizing a whole model, as a library: `pocketgpt quantize` and bench/quality.py both call this.

    from pocketgpt import models
    from pocketgpt.quant.pipeline import quantize_model, write_quantized

    mf = models.load("float.gguf")
    result = quantize_model(mf, "q4", "gptq", calib_text=open("train.txt").read())
    write_quantized("q4.gguf", mf, result)

The steps (each a function of quant.quantizer / quant.presets, usable alone): check the options,
collect calibration statistics (weighted, gptq), measure each matrix's sensitivity (presets with a
budget and calibration text), plan a type per tensor, quantize, tune what stays float. A caller
that runs many variants of one model (the quality bench) passes the calibration, the sensitivity
or the plan it already has, and the step is skipped. Errors are PocketError with one line that
names the command-line flag to change, since that is where most options come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pocketgpt.errors import PocketError
from pocketgpt.quant import formats as F
from pocketgpt.quant import presets, quantizer
from pocketgpt.quant.presets import Choice
from pocketgpt.quant.quantizer import Calibration, Sensitivity, TensorReport, TuneReport

if TYPE_CHECKING:
    import os

    from pocketgpt.gguf_io import ModelFile, StoredTensor

__all__ = [
    "Alloc",
    "Method",
    "QuantizeResult",
    "Tune",
    "check_options",
    "quantize_model",
    "write_quantized",
]

Method = Literal["rtn", "weighted", "gptq"]
Alloc = Literal["auto", "measured", "model"]
Tune = Literal["auto", "on", "off"]


@dataclass
class QuantizeResult:
    """What quantize_model made: the stored tensors and how each was chosen and fitted."""

    qtype: str                                 # the preset or block type asked for
    method: str
    stored: dict[str, StoredTensor]            # every tensor, as write_quantized writes it
    report: list[TensorReport]                 # one row per matrix: type, bytes, relative error
    choices: dict[str, Choice]                 # the plan: type per tensor (and why, on a fallback)
    allocation: str                            # "measured", "model", or "given" (the caller's plan)
    calibration: Calibration | None = None
    sensitivity: Sensitivity | None = None
    tune: TuneReport | None = None

    @property
    def calib_tokens(self) -> int:
        return self.calibration.tokens if self.calibration is not None else 0

    def matrix_bpw(self) -> float:
        """Bits per weight over the weight matrices (position_embd, always Q8_0, left out)."""
        mats = [r for r in self.report if r.name != "position_embd.weight"]
        n_weights = sum(int(r.shape[0]) * int(r.shape[1]) for r in mats)
        return 8.0 * sum(r.n_bytes for r in mats) / n_weights

    def type_counts(self) -> dict[str, int]:
        """How many matrices each block type holds, by type name."""
        counts: dict[str, int] = {}
        for r in self.report:
            counts[F.type_name(r.qtype)] = counts.get(F.type_name(r.qtype), 0) + 1
        return counts

    def fallbacks(self) -> list[dict[str, str]]:
        """The matrices that got another type than the one asked for, and why."""
        return [{"tensor": r.name, "wanted": F.type_name(r.wanted), "type": F.type_name(r.qtype), "why": r.note}
                for r in self.report if r.note]


def check_options(qtype: str, method: str = "rtn", *, calib: bool = False, bpw: float | None = None,
                  tune: str = "auto", alloc: str = "auto", calib_tokens: int | None = None) -> None:
    """Refuse impossible option sets before any work (PocketError, one line). `calib`: whether
    calibration text (or ready statistics) will be there."""
    presets.parse_type(qtype)
    if method not in quantizer.METHODS:
        raise PocketError(f"unknown --method {method!r}; use one of {', '.join(quantizer.METHODS)}")
    if bpw is not None and not 1.0 < bpw < 16.0:
        raise PocketError(f"--bpw {bpw}: give a budget between 1 and 16 bits per weight")
    if method != "rtn" and not calib:
        raise PocketError(f"--method {method} needs calibration text: pass --calib FILE")
    if tune == "on" and not calib:
        raise PocketError("--tune on needs calibration text: pass --calib FILE")
    if calib_tokens is not None and calib_tokens < quantizer.MIN_CALIB_TOKENS:
        raise PocketError(f"--calib-tokens {calib_tokens}: at least {quantizer.MIN_CALIB_TOKENS} are needed")
    if alloc == "measured" and not calib:
        raise PocketError("--alloc measured needs calibration text: pass --calib FILE")


def quantize_model(
    model: ModelFile,
    qtype: str,
    method: Method = "rtn",
    *,
    calib_text: str | None = None,
    calib_source: str | None = None,
    calib_tokens: int | None = None,
    bpw: float | None = None,
    alloc: Alloc = "auto",
    tune: Tune = "auto",
    calibration: Calibration | None = None,
    sensitivity: Sensitivity | None = None,
    choices: dict[str, Choice] | None = None,
    progress: bool = False,
) -> QuantizeResult:
    """Quantize every tensor of `model` to `qtype` (a preset such as "q4" or a block type such as
    "Q4_K") by `method`.

    calib_text      calibration text (weighted and gptq need it; tuning and the measured
                    allocation read it); calib_source names it in errors
    calib_tokens    at most this many calibration tokens (default quantizer.DEFAULT_CALIB_TOKENS)
    bpw             another bit budget for a preset's mix
    alloc           measured: each matrix quantized alone at each type of presets.MEASURED_LADDER,
                    its KL on the calibration text priced; model: fixed sensitivities; auto:
                    measured when there is calibration text and a budget
    tune            on/off: fit norms, biases and per-row gains to the float model afterwards
                    (reads calib_text); auto: on for weighted and gptq when calib_text is given
    calibration, sensitivity, choices
                    results of earlier steps to reuse (a sensitivity saves work only when it
                    was measured by the same method)
    """
    has_text = calib_text is not None
    check_options(qtype, method, calib=has_text or calibration is not None, bpw=bpw, tune="auto",
                  alloc=alloc if sensitivity is None else "auto", calib_tokens=calib_tokens)
    if tune == "on" and not has_text:
        raise PocketError("--tune on needs calibration text: pass --calib FILE")
    preset, _single = presets.parse_type(qtype)
    tuned = tune == "on" or (tune == "auto" and method != "rtn" and has_text)
    measure = (choices is None and preset is not None and (bpw is not None or preset.bpw is not None)
               and alloc != "model" and (sensitivity is not None or has_text))
    need_calib = method != "rtn" and calibration is None
    if need_calib or (measure and sensitivity is None) or tuned:
        from pocketgpt.hf import require_toolchain

        require_toolchain()
    if need_calib:
        assert calib_text is not None  # check_options: weighted and gptq need calibration
        calibration = quantizer.collect(model, calib_text, full=method == "gptq",
                                        max_tokens=calib_tokens or quantizer.DEFAULT_CALIB_TOKENS,
                                        source=calib_source or "calibration text")
    if measure and sensitivity is None:
        assert calib_text is not None
        sensitivity = quantizer.measure_sensitivity(model, calibration if method != "rtn" else None, calib_text,
                                                    presets.MEASURED_LADDER, method, progress=progress)
    shapes = {n: t.shape for n, t in model.tensors.items()}
    if choices is not None:
        allocation = "given"
    elif measure:
        assert sensitivity is not None
        allocation = "measured"
        choices = presets.plan(shapes, model.cfg.n_layer, model.tied, qtype, bpw, measured=sensitivity.kl,
                               ladder=presets.MEASURED_LADDER)
    else:
        allocation = "model"
        choices = presets.plan(shapes, model.cfg.n_layer, model.tied, qtype, bpw)
    reuse = sensitivity if sensitivity is not None and sensitivity.method == method else None
    stored, report = quantizer.quantize_tensors(model, choices, method, calibration if method != "rtn" else None,
                                                progress=progress, done=reuse)
    tune_report = None
    if tuned:
        assert calib_text is not None
        stored, tune_report = quantizer.tune_float(model, stored, calib_text, progress=progress)
    return QuantizeResult(qtype, method, stored, report, choices, allocation,
                          calibration if method != "rtn" else None, sensitivity, tune_report)


def write_quantized(path: str | os.PathLike[str], model: ModelFile, result: QuantizeResult,
                    name: str | None = None) -> int:
    """Write the quantized model as GGUF (atomically), keeping the source's name and chat
    template and recording the type and method under pocketgpt.quantize.*. Returns the size."""
    from pathlib import Path

    from pocketgpt.chat_format import TEMPLATE_KEY
    from pocketgpt.gguf_io import write_gguf

    name = name or str(model.metadata.get("general.name") or Path(model.path).stem)
    template = model.metadata.get(TEMPLATE_KEY)
    return write_gguf(path, model.cfg, model.vocab, result.stored, name=name,
                      chat_template=template if isinstance(template, str) else None,
                      extra={"pocketgpt.quantize.type": result.qtype, "pocketgpt.quantize.method": result.method})
