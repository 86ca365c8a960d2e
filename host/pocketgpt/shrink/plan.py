"""Pick the student's shape for a device: the largest model the budget model says fits.

Candidates: every combination of the allowed vocabulary sizes, depths, widths (whole teacher
heads) and MLP widths (2x..4x the width, at most the teacher's); each is sized exactly as it would
be stored (the quantization preset's per-tensor types) and put through pocketgpt.budget.estimate.
A shape fits when the budget model says it fits, its mean speed over the context
has `margin` to spare and even its last position (the longest attention) reaches the goal.
Widths and MLP widths that quantized blocks do not divide (multiples of 32) are skipped. The one with most parameters wins (ties: the
deeper one, then the larger vocabulary). The margin absorbs what the budget model cannot know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pocketgpt.errors import PocketError
from pocketgpt.gguf_io import GPT2Config, expected_shapes
from pocketgpt.shrink.prune import Shape

if TYPE_CHECKING:
    from pocketgpt.budget import BudgetReport

DEFAULT_MERGES = (1000, 1500, 2000)  # up to 2047: the tokenizer's merge table stays 64 KiB of SRAM


@dataclass
class PlanResult:
    shape: Shape
    report: BudgetReport  # of the planned (not yet written) model
    n_candidates: int
    n_fitting: int


def planned_types(cfg: GPT2Config, qspec: str) -> dict[str, tuple[int, int]]:
    """{tensor: (GGML type, stored bytes)} as `pocketgpt quantize --type qspec` would store it."""
    from pocketgpt.quant import formats as F
    from pocketgpt.quant import presets

    shapes = expected_shapes(cfg, tied=True)
    if qspec == "f32":
        return {n: (F.F32, F.tensor_bytes(F.F32, s)) for n, s in shapes.items()}
    choices = presets.plan(shapes, cfg.n_layer, True, qspec, None)
    return {n: (c.qtype, F.tensor_bytes(c.qtype, shapes[n])) for n, c in choices.items()}


def choose(teacher: GPT2Config, *, budget: str = "esp32s3", n_ctx: int = 256, qspec: str = "q8",
           merges: Sequence[int] | None = None, layers: Sequence[int] | None = None,
           widths: Sequence[int] | None = None, ffs: Sequence[int] | None = None,
           margin: float = 1.1, weights_in: str = "psram") -> PlanResult:
    from pocketgpt.budget import ESP32S3, estimate

    if budget != "esp32s3":
        raise PocketError(f"--budget {budget!r}: the only device budget is esp32s3")
    head = teacher.n_embd // teacher.n_head
    merges = list(merges or DEFAULT_MERGES)
    layers = list(layers or range(min(2, teacher.n_layer), teacher.n_layer + 1))  # one layer: too weak
    widths = list(widths or range(head, teacher.n_embd + 1, head))
    block = 1 if qspec == "f32" else 32  # quantized rows (and the PIE kernel) need multiples of 32
    best = None
    n_cand = n_fit = 0
    for k in merges:
        for n_layer in layers:
            for e in widths:
                if block > 1 and e % block:
                    continue
                for f in (ffs or sorted({min(teacher.n_ff, m * e) for m in (2, 3, 4)})):
                    if block > 1 and f % block:
                        continue
                    shape = Shape(k, n_layer, e, f, n_ctx)
                    cfg = shape.config(teacher)
                    n_cand += 1
                    rep = estimate((cfg, planned_types(cfg, qspec)), n_ctx=n_ctx, weights_in=weights_in)
                    if (not rep.fits or rep.modeled_tok_s < margin * ESP32S3.target_tok_s
                            or rep.modeled_tok_s_full < ESP32S3.target_tok_s):
                        continue
                    n_fit += 1
                    key = (cfg.n_params(), n_layer, k)
                    if best is None or key > best[0]:
                        best = (key, shape, rep)
    if best is None:
        raise PocketError(f"no shape among {n_cand} candidates fits the {budget} budget with a {margin:.1f}x "
                          "speed margin; allow smaller --vocab/--layers/--width values")
    return PlanResult(best[1], best[2], n_cand, n_fit)
