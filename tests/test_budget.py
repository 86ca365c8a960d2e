"""The ESP32-S3 budget model: its memory arithmetic is the engine's own (checked against the C
pg_model_mem_size / pg_state_mem_size, 64-bit here and 32-bit as on the chip), its speed model
moves the right way with bandwidth and size, and every report says it is a model."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pocketgpt.srclists import engine_sources
from support import make_hf_model, small_vocab, write_model

ROOT = Path(__file__).resolve().parents[1]
ENGINE_DIR = ROOT / "firmware" / "engine"
ENGINE_SRC = engine_sources(ENGINE_DIR)

PROBE = r"""
#include <stdio.h>
#include <stdlib.h>
#include "gpt2.h"
int main(int argc, char **argv) {
    if (argc != 4) return 1;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 2;
    fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
    void *blob = aligned_alloc(64, ((size_t)n + 63) / 64 * 64);
    if (fread(blob, 1, (size_t)n, f) != (size_t)n) return 3;
    fclose(f);
    pg_status st; size_t need = 0, state = 0;
    if (pg_model_mem_size(blob, (size_t)n, &need, &st)) { puts(st.msg); return 4; }
    pg_model m; void *mem = malloc(need);
    if (pg_model_init(&m, blob, (size_t)n, mem, need, 1, &st)) { puts(st.msg); return 5; }
    if (pg_state_mem_size(&m, atoi(argv[2]), atoi(argv[3]), &state, &st)) { puts(st.msg); return 6; }
    size_t f16 = 0;
    if (pg_state_mem_size_kv(&m, atoi(argv[2]), atoi(argv[3]), PG_TYPE_F16, &f16, &st)) { puts(st.msg); return 7; }
    printf("%zu %zu %zu %zu %zu %zu %zu\n", need, state, sizeof(pg_model), sizeof(pg_state), sizeof(pg_layer), f16,
           sizeof(pg_kernels));
    return 0;
}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    model, vocab = make_hf_model(n_embd=64, n_layer=3, n_head=4, n_ctx=64, n_ff=96, vocab=small_vocab(700), seed=3)
    from pocketgpt.quant.formats import F32, Q8_0

    return write_model(tmp_path_factory.mktemp("budget") / "tiny.gguf", model, vocab,
                       lambda n, a: Q8_0 if a.ndim == 2 and a.shape[1] % 32 == 0 else F32)


def _build_probe(tmp_path: Path, m32: bool) -> Path | None:
    exe = tmp_path / ("probe32" if m32 else "probe64")
    src = tmp_path / "probe.c"
    src.write_text(PROBE)
    cmd = ["gcc", "-std=c11", "-O0", "-Wall", "-Wextra", "-Werror", *(["-m32"] if m32 else []), f"-I{ENGINE_DIR}",
           "-o", str(exe), str(src), *map(str, ENGINE_SRC), "-lm", "-lpthread"]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return None
    return exe


def _probe(exe: Path, model: Path, n_ctx: int, n_batch: int) -> list[int]:
    out = subprocess.run([str(exe), str(model), str(n_ctx), str(n_batch)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("m32", [False, True], ids=["64-bit", "32-bit"])
def test_memory_arithmetic_equals_the_engines_own_size_queries(tiny, tmp_path, m32):
    from pocketgpt import budget
    from pocketgpt.gguf_io import read_gguf

    mf = read_gguf(tiny)
    c = mf.cfg
    exe = _build_probe(tmp_path, m32)
    if exe is None:
        assert m32, "the 64-bit probe must build"
        pytest.skip("no 32-bit gcc here (apt-get install gcc-multilib)")
    for n_ctx, n_batch in ((64, 1), (17, 8)):
        got = _probe(exe, tiny, n_ctx, n_batch)
        model_need, state_need, s_model, s_state, s_layer, f16_need, s_kernels = got
        token_bytes = sum(budget._token_raw_len(t) for t in mf.vocab.tokens)
        assert budget.model_arena_bytes(c.n_layer, c.n_vocab, len(mf.vocab.merges), token_bytes,
                                        sizeof_layer=s_layer, sizeof_kernels=s_kernels) == model_need
        assert budget.state_arena_bytes(c.n_layer, c.n_embd, c.n_ff, c.n_head, c.n_vocab, n_ctx, n_batch) == state_need
        assert budget.state_arena_bytes(c.n_layer, c.n_embd, c.n_ff, c.n_head, c.n_vocab, n_ctx, n_batch,
                                        "f16") == f16_need
        if m32:  # the chip's struct sizes the budget uses
            assert (s_model, s_state, s_layer, s_kernels) == (budget.SIZEOF_PG_MODEL, budget.SIZEOF_PG_STATE,
                                                              budget.SIZEOF_PG_LAYER, budget.SIZEOF_PG_KERNELS)


def test_report_says_it_is_a_model_and_lists_its_assumptions(tiny):
    from pocketgpt.budget import estimate
    from pocketgpt.gguf_io import read_gguf

    rep = estimate(read_gguf(tiny), n_ctx=64)
    text = rep.render()
    assert "not a measurement" in text.lower()
    assert all(a in text for a in rep.assumptions) and len(rep.assumptions) >= 10
    d = rep.as_dict()
    for key in ("flash_bytes", "psram_bytes", "sram_bytes", "modeled_tok_s", "assumptions", "fits"):
        assert key in d
    assert "not measured" in d["note"]
    assert rep.fits and not rep.problems
    # flash holds the whole file; PSRAM at least the KV cache (float32 K and V for every layer)
    assert rep.flash_bytes >= tiny.stat().st_size
    assert rep.psram_bytes >= 2 * 3 * 64 * 64 * 4 + tiny.stat().st_size


def test_speed_follows_bandwidth_and_context(tiny):
    from pocketgpt.budget import estimate
    from pocketgpt.gguf_io import read_gguf

    mf = read_gguf(tiny)
    psram64 = estimate(mf, n_ctx=64, cache_line=64)
    psram32 = estimate(mf, n_ctx=64, cache_line=32)
    flash = estimate(mf, n_ctx=64, weights_in="flash")
    short = estimate(mf, n_ctx=8)
    assert psram64.modeled_tok_s > psram32.modeled_tok_s > 0
    assert psram64.modeled_tok_s > flash.modeled_tok_s
    assert flash.psram_bytes < psram64.psram_bytes  # weights stay in flash
    assert short.modeled_tok_s > psram64.modeled_tok_s  # less KV cache to read
    half = estimate(mf, n_ctx=64, kv="f16")
    assert half.modeled_tok_s_full > psram64.modeled_tok_s_full and half.psram_bytes < psram64.psram_bytes
    assert half.breakdown["kv_bytes_last"] * 2 == psram64.breakdown["kv_bytes_last"]
    assert any("F16" in a for a in half.assumptions)
    assert psram64.modeled_tok_s_full < psram64.modeled_tok_s


def test_too_large_a_model_does_not_fit_and_says_why():
    from pocketgpt.budget import estimate
    from pocketgpt.gguf_io import GPT2Config
    from pocketgpt.shrink.plan import planned_types

    cfg = GPT2Config(50257, 1024, 768, 12, 12, 3072)  # GPT-2 124M
    rep = estimate((cfg, planned_types(cfg, "q8")), n_ctx=256)
    assert not rep.fits
    text = " ".join(rep.problems)
    assert "PSRAM" in text and "tok/s" in text and "flash" in text


def test_planned_estimate_matches_the_written_file(tiny):
    """The planner sizes models before they exist; its file-size guess must be close."""
    from pocketgpt.budget import estimate
    from pocketgpt.gguf_io import read_gguf

    mf = read_gguf(tiny)
    planned = estimate((mf.cfg, {n: (t.qtype, t.n_bytes) for n, t in mf.tensors.items()}), n_ctx=64,
                       vocab=mf.vocab)
    real = estimate(mf, n_ctx=64)
    assert planned.sram_bytes == real.sram_bytes and planned.psram_bytes != 0
    assert abs(planned.breakdown["file_bytes"] - real.breakdown["file_bytes"]) < 0.1 * real.breakdown["file_bytes"]
    assert abs(planned.modeled_tok_s / real.modeled_tok_s - 1) < 0.05


def test_bad_arguments_are_one_line_errors(tiny):
    from pocketgpt.budget import estimate
    from pocketgpt.errors import PocketError
    from pocketgpt.gguf_io import read_gguf

    mf = read_gguf(tiny)
    with pytest.raises(PocketError, match="weights_in"):
        estimate(mf, weights_in="sdcard")
    with pytest.raises(PocketError, match="cache line"):
        estimate(mf, cache_line=48)


def test_docs_list_every_assumption():
    from pocketgpt.budget import describe

    doc = (ROOT / "docs" / "budget.md").read_text(encoding="utf-8")
    for a in describe():
        assert f"- {a}" in doc, f"docs/budget.md lacks: {a}"


def test_planner_picks_the_largest_fitting_quantizable_shape_for_the_host_teacher():
    """The host model's shape (4 x 256, 50,257 tokens) planned for the ESP32-S3: the pick fits with
    the speed margin, rows divide into Q8_0 blocks, and nothing fitting is larger."""
    from pocketgpt.budget import estimate
    from pocketgpt.gguf_io import GPT2Config
    from pocketgpt.shrink.plan import choose, planned_types

    teacher = GPT2Config(50257, 128, 256, 4, 4, 1024)
    res = choose(teacher)
    cfg = res.shape.config(teacher)
    assert res.report.fits and res.report.modeled_tok_s >= 33.0 and res.report.modeled_tok_s_full >= 30.0
    assert cfg.n_embd % 32 == 0 and cfg.n_ff % 32 == 0 and cfg.n_layer >= 2 and cfg.n_ctx == 256
    assert res.n_fitting >= 1
    # one step larger in MLP width no longer fits with the margin (the pick is at the edge)
    bigger = res.shape.__class__(res.shape.n_merges, res.shape.n_layer, cfg.n_embd, cfg.n_ff + cfg.n_embd, 256)
    bcfg = bigger.config(teacher)
    rep = estimate((bcfg, planned_types(bcfg, "q8")))
    assert bcfg.n_params() > cfg.n_params() and (rep.modeled_tok_s < 1.1 * 30 or not rep.fits)


def test_a_model_too_slow_only_at_the_last_position_does_not_fit():
    """The mean over the context hides the longest attention; the goal must hold there too."""
    from pocketgpt.budget import estimate
    from pocketgpt.gguf_io import GPT2Config
    from pocketgpt.shrink.plan import planned_types

    cfg = GPT2Config(2257, 256, 192, 2, 3, 384)  # the first device model's shape
    rep = estimate((cfg, planned_types(cfg, "q8")), n_ctx=256)
    assert rep.modeled_tok_s >= 30 > rep.modeled_tok_s_full
    assert not rep.fits and any("last position" in p for p in rep.problems)
    kv = rep.breakdown["kv_bytes_last"]
    assert kv == 2 * 2 * 256 * 192 * 4 and f"{kv / 1e6:.2f} MB at the last position" in rep.render()
