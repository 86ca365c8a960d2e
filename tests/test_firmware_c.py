"""The device app's C code under AddressSanitizer + UndefinedBehaviorSanitizer.

`make -C firmware/ports/posix test-asan` builds firmware/app/tests/test_app.c: JSON, router,
settings, console editing, SHA-1/base64, the websocket client over an in-memory transport, and
the relay messages checked against docs/protocol_vectors.json (the relay's own vectors). Then the
sanitized simulator runs a console session on a tiny model, and talks to a real relay.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from support import DEVICE_ID

ROOT = Path(__file__).resolve().parents[1]
POSIX = ROOT / "firmware" / "ports" / "posix"

pytestmark = [pytest.mark.c,
              pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")]


def make(target: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(POSIX), target, f"OUT={out}"], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def sim_asan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulator built with the sanitizers, once for this file's two sessions."""
    out = tmp_path_factory.mktemp("sim-asan")
    res = make(str(out / "pocketgpt-sim-asan"), out)
    assert res.returncode == 0, res.stderr
    return out / "pocketgpt-sim-asan"


@pytest.mark.slow
def test_app_unit_tests_and_protocol_vectors(tmp_path: Path) -> None:
    res = make("test-asan", tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "client frames built" in res.stdout and ", 0 failures" in res.stdout


@pytest.mark.slow
def test_simulator_session_under_sanitizers(sim_asan: Path, device_gguf: Path) -> None:
    script = ("/help\nOnce upon a time\n/route the cat sat on the mat\n/set gen.temperature 0\n"
              "/local Once upon a time\n/local Once upon a time\n/set relay.url ws://127.0.0.1:1/\n"
              "/cloud hi\n/status\n" + "x" * 2000 + "\n")
    run = subprocess.run([str(sim_asan), "--model", str(device_gguf), "--ctx", "64",
                          "--set", "gen.max_tokens=8", "--set", "route.max_surprisal=0"],
                         input=script, capture_output=True, text=True, timeout=300,
                         env={"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "route: " in out and "tokens=" in out
    greedy = [ln for ln in out.splitlines() if ln.startswith("[local] ") and "relay" not in ln]
    assert greedy[1] == greedy[2], "temperature 0 must repeat the same answer"
    assert "[local] (relay unreachable: cannot connect to 127.0.0.1:1" in out
    assert "does not fit the device context" in out  # 2000 bytes: cut to the line, still too long


@pytest.mark.slow
@pytest.mark.relay
def test_relay_client_under_sanitizers(sim_asan: Path, device_gguf: Path, sim_relay: Any) -> None:
    """The websocket, HTTP and JSON code on real relay traffic: OTA call, streamed reply, a relay error."""
    script = "/cloud Once upon a time\n/cloud " + "word " * 100 + "\n/cloud again\n"
    run = subprocess.run([str(sim_asan), "--model", str(device_gguf), "--ota", sim_relay.http_url + "/xiaozhi/ota/",
                          "--device-id", DEVICE_ID, "--set", "gen.max_tokens=8", "--set", "relay.timeout_ms=20000"],
                         input=script, capture_output=True, text=True, timeout=300,
                         env={"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("(relay: 8 tokens") == 2, run.stdout
    assert "[relay] error prompt_too_long" in run.stdout
