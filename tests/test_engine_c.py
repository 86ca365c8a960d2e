"""The engine's own C tests under AddressSanitizer and UndefinedBehaviorSanitizer, and a seeded
random-mutation fuzz of the GGUF loader and tokenizer through the binding: a damaged model file
must give a one-line error, never a crash or a read outside the file."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from support import make_hf_model, small_vocab, write_model

ENGINE_DIR = Path(__file__).resolve().parents[1] / "firmware" / "engine"


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    # head size 32: the Q8_0 KV cache runs too
    model, vocab = make_hf_model(n_embd=64, n_layer=2, n_head=2, n_ctx=16, vocab=small_vocab(), seed=9)
    return write_model(tmp_path_factory.mktemp("c") / "tiny.gguf", model, vocab)


@pytest.mark.slow
@pytest.mark.c
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("gcc") is None, reason="needs make and gcc")
def test_c_unit_tests_pass_under_address_and_ub_sanitizers(tiny_path, tmp_path):
    proc = subprocess.run(
        ["make", "-s", "-C", str(ENGINE_DIR), "test-asan", f"MODEL={tiny_path}", f"BUILD={tmp_path / 'build'}",
         "MUTATIONS=3000", "CC=gcc"],
        capture_output=True, text=True, timeout=600)
    print(proc.stdout[-2000:], proc.stderr[-4000:])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "0 failures" in proc.stdout


def _can_build_32bit(tmp_path: Path) -> bool:
    src = tmp_path / "probe.c"
    src.write_text("#include <stdint.h>\nint main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n")
    proc = subprocess.run(["gcc", "-m32", "-o", str(tmp_path / "probe"), str(src)], capture_output=True)
    return proc.returncode == 0


@pytest.mark.slow
@pytest.mark.c
def test_c_tests_pass_as_a_32_bit_build(tiny_path, tmp_path):
    """The ESP32-S3 is 32-bit: sizes and offsets must not wrap with a 4-byte size_t."""
    if shutil.which("gcc") is None or not _can_build_32bit(tmp_path):
        pytest.skip("no 32-bit gcc here (apt-get install gcc-multilib)")
    proc = subprocess.run(
        ["make", "-s", "-C", str(ENGINE_DIR), "test-32", f"MODEL={tiny_path}", f"BUILD={tmp_path / 'build'}",
         "MUTATIONS=1000", "CC=gcc"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "0 failures" in proc.stdout


def _mutate(rng: random.Random, blob: bytes, header_end: int) -> bytes:
    b = bytearray(blob)
    kind = rng.randrange(5)
    if kind == 0:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(header_end)] ^= 1 << rng.randrange(8)
    elif kind == 1:
        del b[rng.randrange(len(b)):]
    elif kind == 2:
        at = rng.randrange(header_end - 8)
        b[at:at + 8] = rng.choice([0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1, 64]).to_bytes(8, "little")
    elif kind == 3:
        at = rng.randrange(header_end)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    else:
        at = rng.randrange(header_end - 4)
        b[at:at + 4] = rng.randrange(64 if rng.random() < 0.7 else 2**32).to_bytes(4, "little")
    return bytes(b)


def test_mutated_model_files_are_rejected_with_one_line_errors(tiny_path):
    from pocketgpt import _engine
    from pocketgpt.errors import PocketError

    blob = tiny_path.read_bytes()
    _engine.check_blob(blob)  # the original loads
    # the tensor data dominates the file; mutations aim at the header, metadata and tensor table
    header_end = blob.index(b"blk.1.ffn_down.bias") + 64
    rng = random.Random(1234)
    rejected = 0
    for _ in range(3000):
        try:
            _engine.check_blob(_mutate(rng, blob, header_end))
        except PocketError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg
            rejected += 1
    assert rejected > 1000  # most mutations of the header really are damage


def test_truncated_and_garbage_files_give_a_clear_error(tiny_path, tmp_path):
    from pocketgpt.engine import Engine
    from pocketgpt.errors import PocketError

    blob = tiny_path.read_bytes()
    cases = {"empty": b"", "text": b"hello, not a model\n" * 10, "truncated": blob[: len(blob) // 2],
             "header-only": blob[:64]}
    for name, data in cases.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        with pytest.raises(PocketError) as info:
            Engine(p, threads=1)
        assert str(p) in str(info.value) and "\n" not in str(info.value), name


def test_random_bytes_tokenize_and_decode_back_exactly(tiny_path):
    from pocketgpt.engine import Engine

    eng = Engine(tiny_path, threads=1)
    rng = random.Random(99)
    alphabet = [b" ", b"'", b"s", b"\xc3", b"\xa9", b"\xf0\x9f", b"\x98\x80", b"\n", b"a", b"1", b"\x00", b"\xff"]
    for i in range(3000):
        if i % 2:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        else:
            data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        ids = eng._model.tokenize(data, bool(i % 3))
        assert eng._model.detokenize(ids) == data
