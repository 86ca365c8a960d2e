"""`pocketgpt export-c`: the C array is the GGUF's bytes, compiles warning-free, and the engine
reading it generates the same tokens as reading the file; --partition writes the raw image."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pocketgpt.srclists import engine_sources
from support import assert_one_line_error, pocketgpt, pocketgpt_json

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "firmware" / "engine"
ENGINE_SRC = [str(p) for p in engine_sources(ENGINE)]
CHECK = ROOT / "firmware" / "app" / "tests" / "gen_check.c"

pytestmark = [pytest.mark.c,
              pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")]


def export(model: Path, out: Path, *extra: str) -> dict:
    return pocketgpt_json("export-c", str(model), "--out", str(out), *extra)


@pytest.mark.slow
def test_array_is_the_gguf_compiles_clean_and_generates_the_same(tmp_path: Path, device_gguf: Path) -> None:
    res = export(device_gguf, tmp_path)
    for key in ("flash_bytes", "psram_bytes", "sram_bytes", "modeled_tok_s"):
        assert key in res
    assert "not measured" in res["note"]
    src = (tmp_path / "pg_model_data.c").read_text()
    body = src[src.index("= {") + 3: src.rindex("};")]
    data = bytes(int(x, 16) for x in re.findall(r"0x([0-9a-f]{2})", body))
    assert data == device_gguf.read_bytes()  # exactly the file's bytes
    hdr = (tmp_path / "pg_model_data.h").read_text()
    assert "#define PG_MODEL_N_CTX 128" in hdr and f"#define PG_MODEL_FILE_BYTES {len(data)}u" in hdr
    # the exported C compiles with every warning as an error
    cc = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", str(tmp_path / "pg_model_data.c"),
                         "-o", str(tmp_path / "pg_model_data.o")], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    flags = ["cc", "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{ENGINE}", f"-I{tmp_path}"]
    linked = tmp_path / "gen_linked"
    from_file = tmp_path / "gen_file"
    for exe, extra in ((linked, ["-DPG_LINKED", str(tmp_path / "pg_model_data.c")]), (from_file, [])):
        b = subprocess.run([*flags, "-o", str(exe), str(CHECK), *extra, *ENGINE_SRC, "-lm"], capture_output=True, text=True)
        assert b.returncode == 0, b.stderr
    a = subprocess.run([str(linked), "Once upon a time", "24"], capture_output=True, text=True)
    f = subprocess.run([str(from_file), str(device_gguf), "Once upon a time", "24"], capture_output=True, text=True)
    assert a.returncode == 0 and f.returncode == 0, a.stderr + f.stderr
    assert len(a.stdout.split()) == 24 and a.stdout == f.stdout


def test_partition_image_and_its_offset(tmp_path: Path, device_gguf: Path) -> None:
    res = export(device_gguf, tmp_path, "--partition")
    assert (tmp_path / "model.bin").read_bytes() == device_gguf.read_bytes()
    assert not (tmp_path / "pg_model_data.c").exists()
    rows = [ln.split(",") for ln in (ROOT / "partitions.csv").read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    model = next(r for r in rows if r[0].strip() == "model")
    assert res["partition_offset"] == int(model[3], 0) and res["partition_size"] == int(model[4], 0)
    assert res["file_bytes"] <= res["partition_size"]
    assert "PG_MODEL_IN_PARTITION 1" in (tmp_path / "pg_model_data.h").read_text()


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    assert_one_line_error(pocketgpt("export-c", str(bad), "--out", str(tmp_path / "o")), "bad.gguf")
    assert_one_line_error(pocketgpt("export-c", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "o")), "not found")
    assert not (tmp_path / "o" / "pg_model_data.c").exists()
