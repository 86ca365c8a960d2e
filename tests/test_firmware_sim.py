"""The device simulator (`pocketgpt device`: firmware/app + the POSIX port) against a real relay.

The relay runs in this process on free ports with the tiny host model; the simulator is the real
binary `pocketgpt device` builds, fed a scripted console on stdin. Each answer must say where it
came from ([local] or [relay]).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support import DEVICE_ID as DEV

# every `pocketgpt device` here finds the simulator conftest built (under a lock) in the shared cache
pytestmark = [pytest.mark.c, pytest.mark.relay,
              pytest.mark.usefixtures("shared_sim")]


def sim(home: Path, model: Path, script: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run `pocketgpt device` with a scripted console; routing rules off unless a test sets them."""
    env = {**os.environ, "POCKETGPT_HOME": str(home)}
    cmd = [sys.executable, "-m", "pocketgpt", "device", "--model", str(model), "--settings", str(home / "dev.conf"),
           "--device-id", DEV, "--set", "route.max_surprisal=0", "--set", "route.max_bytefrac=2",
           "--set", "gen.max_tokens=12", "--set", "relay.timeout_ms=20000", *args]
    return subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=timeout, env=env)


def answers(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.startswith(("[local]", "[relay]"))]


def test_local_answer_without_a_relay(tmp_path: Path, device_gguf: Path) -> None:
    out = sim(tmp_path, device_gguf, "Once upon a time\n")
    assert out.returncode == 0, out.stderr
    got = answers(out.stdout)
    assert len(got) == 1 and got[0].startswith("[local] ") and len(got[0]) > len("[local] ")
    assert "(local: " in out.stdout


def test_every_local_request_gets_words_even_punctuation_emoji_and_other_languages(tmp_path: Path,
                                                                                    device_gguf: Path) -> None:
    """The device's chat turn (its prompt is the relay's template, checked on docs/chat_vectors.json by the C
    tests) answers every request in words: no empty reply, no silence, whatever the model does; a request
    longer than the context and an empty one get one line that says what to do."""
    lines = ["?!", "...", "\U0001F600\U0001F389", "\u00bfQu\u00e9 es la vida?", "\u4eba\u751f\u306e\u610f\u5473",
             "What is the meaning of life?"]
    too_long = "\U0001F600" * 100  # about 300 tokens: more than the 128-token context
    out = sim(tmp_path, device_gguf, "".join(f"/local {ln}\n" for ln in lines) + "/set gen.max_tokens 1\n/local Hi\n \n"
              + f"/local {too_long}\n/local\n")
    assert out.returncode == 0, out.stderr
    assert "(an empty line: type a request, or /help for the commands)" in out.stdout
    assert "(give a prompt: /local TEXT)" in out.stdout
    got = [a[len("[local] "):] for a in answers(out.stdout)]
    assert len(got) == len(lines) + 2, out.stdout
    assert all(any(c.isalnum() for c in a) for a in got), got
    assert got[-1].startswith("the prompt does not fit the device context") and got[-1].endswith("shorten it"), got


def test_cloud_streams_from_the_relay(sim_relay: Any, sim_home: tuple[Path, str], device_gguf: Path) -> None:
    out = sim(sim_home[0], device_gguf, "/cloud Once upon a time\n", "--relay", sim_relay.ws_url, "--token", sim_home[1])
    assert out.returncode == 0, out.stderr
    got = answers(out.stdout)
    assert got and got[0].startswith("[relay] "), out.stdout
    assert re.search(r"\(relay: [1-9]\d* tokens, (length|stop)\)", out.stdout), out.stdout


def test_ota_configuration_then_relay(sim_relay: Any, sim_home: tuple[Path, str], device_gguf: Path) -> None:
    out = sim(sim_home[0], device_gguf, "/cloud Hello\n", "--ota", sim_relay.http_url + "/xiaozhi/ota/")
    assert out.returncode == 0, out.stderr
    assert answers(out.stdout)[0].startswith("[relay] "), out.stdout


def test_an_unpaired_device_shows_its_code_then_pairs_and_keeps_its_token(sim_relay: Any, device_gguf: Path,
                                                                          tmp_path: Path) -> None:
    """The firmware's side of pairing: it prints the relay's code, and after `token pair CODE` its
    next configuration call gets the token (handed out once), which it saves for later boots."""
    home = Path(sim_relay.relay.store.home)
    env = {**os.environ, "POCKETGPT_HOME": str(home)}
    cmd = [sys.executable, "-m", "pocketgpt", "device", "--model", str(device_gguf), "--settings",
           str(tmp_path / "dev.conf"), "--device-id", "02:00:00:00:00:2b", "--set", "route.max_surprisal=0",
           "--set", "route.max_bytefrac=2", "--set", "gen.max_tokens=8", "--set", "relay.timeout_ms=20000",
           "--ota", sim_relay.http_url + "/xiaozhi/ota/"]

    def boot() -> subprocess.CompletedProcess:
        return subprocess.run(cmd, input="/cloud Hello\n", capture_output=True, text=True, timeout=90, env=env)

    first = boot()
    m = re.search(r"pairing code (\d{6}): on the relay's machine run 'pocketgpt token pair \1'", first.stdout)
    assert m, first.stdout
    assert answers(first.stdout)[0].startswith("[local] (relay unreachable: this device is not paired"), first.stdout
    paired = subprocess.run([sys.executable, "-m", "pocketgpt", "token", "pair", m.group(1)], capture_output=True,
                            text=True, timeout=60, env=env)
    assert paired.returncode == 0, paired.stderr
    for _ in range(2):  # the second boot's configuration call hands no token: the saved one is used
        again = boot()
        assert answers(again.stdout)[0].startswith("[relay] "), again.stdout


def test_long_prompt_is_escalated(sim_relay: Any, sim_home: tuple[Path, str], device_gguf: Path) -> None:
    prompt = " ".join(["the cat sat on the mat"] * 25)  # ~150 tokens > the device's 128-token context
    out = sim(sim_home[0], device_gguf, prompt + "\n", "--relay", sim_relay.ws_url, "--token", sim_home[1])
    assert "longer than the device context" in out.stdout
    assert answers(out.stdout)[0].startswith("[relay] "), out.stdout


def test_relay_unreachable_answers_locally_with_a_notice(tmp_path: Path, device_gguf: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    out = sim(tmp_path, device_gguf, "/cloud Once upon a time\n", "--relay", f"ws://127.0.0.1:{dead}/xiaozhi/v1/")
    got = answers(out.stdout)
    assert got[0].startswith("[local] (relay unreachable: cannot connect to 127.0.0.1"), out.stdout
    assert got[1].startswith("[local] ") and "(local: " in out.stdout


def test_bad_token_is_a_refusal_then_local(sim_relay: Any, sim_home: tuple[Path, str], device_gguf: Path) -> None:
    out = sim(sim_home[0], device_gguf, "/cloud hi there\n", "--relay", sim_relay.ws_url, "--token", "wrong")
    assert "relay unreachable: the relay refused the websocket: HTTP 401" in out.stdout, out.stdout


def test_relay_error_is_shown(sim_relay: Any, sim_home: tuple[Path, str], device_gguf: Path) -> None:
    prompt = "/cloud " + "word " * 100  # 500 characters > the relay's max_prompt_chars (400)
    out = sim(sim_home[0], device_gguf, prompt + "\n", "--relay", sim_relay.ws_url, "--token", sim_home[1])
    assert "[relay] error prompt_too_long: " in out.stdout, out.stdout


def test_router_escalates_a_surprising_prompt(sim_relay: Any, sim_home: tuple[Path, str], device_gguf: Path) -> None:
    out = sim(sim_home[0], device_gguf, "the quick brown fox jumps\n", "--relay", sim_relay.ws_url, "--token", sim_home[1],
              "--set", "route.max_surprisal=0.5")
    assert "(to the relay: the device model finds the prompt unfamiliar)" in out.stdout
    assert answers(out.stdout)[0].startswith("[relay] ")


def test_bad_settings_are_rejected(tmp_path: Path, device_gguf: Path) -> None:
    out = sim(tmp_path, device_gguf, "/set gen.top_p 7\n/set relay.url http://x/\n/set wifi.pass short\n"
                                     "/set nope 1\n/set gen.top_k 5\n/get gen.top_k\n")
    assert "error: gen.top_p: 7 is out of range" in out.stdout
    assert "error: relay.url: the websocket URL starts with ws:// or wss://" in out.stdout
    assert "error: wifi.pass: WPA2 passwords have 8-63 characters" in out.stdout
    assert "error: unknown setting 'nope'" in out.stdout
    assert "ok: gen.top_k = 5" in out.stdout
    assert "gen.top_k=5" in (tmp_path / "dev.conf").read_text()  # saved (the simulator's NVS)
    bad = sim(tmp_path, device_gguf, "", "--device-id", "not-a-mac")
    assert bad.returncode == 2 and "device.id: use the MAC form" in bad.stderr
    (tmp_path / "dev.conf").write_text("gen.temperature=hot\n")
    bad = sim(tmp_path, device_gguf, "")
    assert bad.returncode == 2 and "dev.conf line 1: gen.temperature: 'hot' is not a number" in bad.stderr


def test_demo_runs_the_whole_system(tmp_path: Path, tiny_gguf: Path, device_gguf: Path) -> None:
    """`pocketgpt device --demo`: relay + registered device (OTA call) + scripted turns, no terminal."""
    env = {**os.environ, "POCKETGPT_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "pocketgpt", "device", "--demo", "--model", str(device_gguf),
                          "--relay-model", str(tiny_gguf), "--set", "gen.max_tokens=8"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr
    assert "relay up: ws://127.0.0.1:" in out.stdout
    assert "> /cloud " in out.stdout and "(relay: 8 tokens" in out.stdout
    assert "route: " in out.stdout  # the script ran to its last line
