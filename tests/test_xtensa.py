"""The engine on the ESP32-S3 instruction set (tools/xtensa_check.py, docs/xtensa.md).

Without the toolchain cache (tools/esp32s3-toolchain.sh) the emulated run is skipped; what a user
sees then (one line naming what is missing and the command that makes it) is tested always."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xtensa

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("POCKETGPT_XTENSA_CACHE", Path.home() / ".cache" / "pocketgpt-xtensa"))
HAVE_TOOLCHAIN = all((CACHE / f).exists() for f in ("bin/xtensa-esp32s3-elf-gcc", "bin/qemu-system-xtensa",
                                                     "include/qemu-plugin.h"))


def _run(cmd, tmp_path, **env):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "POCKETGPT_XTENSA_CACHE": str(tmp_path / "no-cache"), **env})


def test_xtensa_check_without_toolchain_names_it_and_the_command(tmp_path):
    res = _run([sys.executable, "tools/xtensa_check.py"], tmp_path)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stdout + res.stderr
    assert "missing bin/xtensa-esp32s3-elf-gcc" in lines[0] and "tools/esp32s3-toolchain.sh" in lines[0]


def test_firmware_without_toolchain_names_what_is_missing(tmp_path):
    res = _run(["tools/firmware_build.sh"], tmp_path)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stdout + res.stderr
    assert "no full ESP32-S3 toolchain" in lines[0] and "missing bin/xtensa-esp32s3-elf-gcc" in lines[0]
    assert "tools/esp32s3-toolchain.sh" in lines[0] and "--newlib DIR" in lines[0] and "docs/xtensa.md" in lines[0]


def test_esp_idf_tree_script_without_a_clone_says_which(tmp_path):
    res = _run(["tools/esp-idf-tree.sh", "--cache", str(tmp_path / "c")], tmp_path)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1, res.stdout + res.stderr
    assert "--esp-idf" in lines[0] and "v5.5" in lines[0]
    res = _run(["tools/esp-idf-tree.sh", "--esp-idf", str(tmp_path), "--cache", str(tmp_path / "c")], tmp_path)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1 and "not a git repository" in lines[0], res.stdout + res.stderr
    assert not (tmp_path / "c").exists()


def test_toolchain_script_without_source_trees_says_which(tmp_path):
    res = _run(["tools/esp32s3-toolchain.sh", "--cache", str(tmp_path / "c")], tmp_path)
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1, res.stdout + res.stderr
    assert "--dynconfig" in lines[0] and "905b913aa65638be53ac22029c379fa16dab31db" in lines[0]
    assert not (tmp_path / "c").exists()  # nothing made before the arguments are checked


def test_harness_runtime_division_and_sqrt_are_correctly_rounded(tmp_path):
    """rt.c's __divsf3, __truncdfsf2 and sqrtf (what the emulated engine divides and takes roots
    with) give the host FPU's bits on 300,000 random inputs of every class."""
    src = tmp_path / "t.c"
    src.write_text(r'''
#include <stdint.h>
#include <stdio.h>
#include <string.h>
float __divsf3(float, float); float __truncdfsf2(double); float pg_rt_sqrtf(float);
static uint64_t s = 88172645463325252ull;
static uint32_t rnd(void) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (uint32_t)s; }
static float uf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t fu(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static int same(float a, float b) { return fu(a) == fu(b) || (a != a && b != b); }
int main(void) {
    long bad = 0;
    for (long i = 0; i < 300000; i++) {
        float a = uf(rnd()), b = uf(rnd());
        volatile float q = a / b;
        bad += !same(q, __divsf3(a, b));
        uint64_t du = ((uint64_t)rnd() << 32) | rnd();
        volatile double d; memcpy((void *)&d, &du, 8);
        volatile float t = (float)d;
        bad += !same(t, __truncdfsf2(d));
        float x = uf(rnd() & 0x7fffffffu);
        volatile float r = __builtin_sqrtf(x);
        bad += !same(r, pg_rt_sqrtf(x));
    }
    printf("%ld\n", bad);
    return 0;
}
''')
    rt = tmp_path / "rt.c"  # sqrtf renamed so the host's own stays the reference
    rt.write_text((ROOT / "firmware/xtensa/rt.c").read_text().replace("float sqrtf(float x) {", "float pg_rt_sqrtf(float x) {"))
    exe, obj = tmp_path / "t", tmp_path / "rt.o"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fno-builtin", "-fno-tree-loop-distribute-patterns",
                    f"-I{ROOT / 'firmware/xtensa/include'}", "-c", "-o", str(obj), str(rt)], check=True)
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src), str(obj), "-lm"], check=True)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.strip() == "0"


@pytest.mark.skipif(not HAVE_TOOLCHAIN, reason=f"no ESP32-S3 toolchain cache in {CACHE} (tools/esp32s3-toolchain.sh)")
def test_engine_on_the_emulated_s3_core_gives_the_host_engines_tokens():
    res = subprocess.run([sys.executable, "tools/xtensa_check.py", "--tokens", "32"], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "same 32 tokens as the host engine" in res.stdout
    assert "logits of all 32 steps bit-identical" in res.stdout
