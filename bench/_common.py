"""Helpers the bench scripts share: percentiles, a free loopback port, relay processes.

The scripts run as `python bench/NAME.py`, so this module is importable as `_common`.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no samples."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return float(xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_voice_relay(model: str, port: int, max_tokens: int, voice: Any = True) -> int:
    """A relay with voice on, open mode on loopback (a bench, never a deployment), until SIGTERM.

    Prints "ready" once it listens on `port`; `voice` is True or a VoiceConfig.
    """
    import asyncio
    import logging

    from pocketgpt import models
    from pocketgpt.relay.backends import EngineBackend, load_engine
    from pocketgpt.relay.server import Relay, RelayConfig

    logging.basicConfig(level="WARNING", stream=sys.stderr)
    engine = load_engine(str(models.resolve(model)), threads=None)
    backend = EngineBackend(engine, model)
    cfg = RelayConfig(host="127.0.0.1", port=port, http_port=0, open=True, voice=voice,
                      default_max_tokens=max_tokens)

    async def main() -> None:
        relay = Relay(cfg, backend)
        await relay.start()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, relay.request_drain)
        print("ready", flush=True)
        await relay.wait_stopped()

    asyncio.run(main())
    return 0


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident set of a process, KiB, from /proc."""
    cur = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return cur, peak


def start_relay(args: list[str]) -> tuple[subprocess.Popen, str, str]:
    """`pocketgpt serve ARGS` (on free ports, warnings only, text turns only) as its own process:
    (process, websocket URL, HTTP URL) once it printed its ready line. Raises RuntimeError (the
    process stopped) when it does not start."""
    cmd = [sys.executable, "-m", "pocketgpt", "serve", "--port", "0", "--http-port", "0",
           "--log-level", "warning", "--no-voice", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.search(r"ws_port=(\d+) http_port=(\d+)", line)
    if not m:
        stop_process(proc)
        raise RuntimeError(f"relay did not start: {line!r}")
    return proc, f"ws://127.0.0.1:{m.group(1)}/xiaozhi/v1/", f"http://127.0.0.1:{m.group(2)}"


def stop_process(proc: subprocess.Popen, seconds: float = 30.0) -> None:
    """SIGTERM (the relay drains on it), then kill if it has not exited within `seconds`."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def relay_child_process(script: str | Path, child_flag: str, model: str, max_tokens: int,
                        extra: tuple[str, ...] = ()) -> Iterator[str]:
    """Run `script child_flag --port P ...` (which calls run_voice_relay) as its own process and
    yield its websocket URL once it says "ready"; SIGTERM (then kill) on the way out.
    Raises RuntimeError when it does not start."""
    port = free_port()
    child = subprocess.Popen([sys.executable, str(script), child_flag, "--port", str(port), "--model", model,
                              "--max-tokens", str(max_tokens), *extra], stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline() if child.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"the relay did not start (exit {child.poll()})")
        yield f"ws://127.0.0.1:{port}/xiaozhi/v1/"
    finally:
        stop_process(child)
