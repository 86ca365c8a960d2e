"""Helpers the bench scripts share: percentiles, a free loopback port, a voice relay process.

The scripts run as `python bench/NAME.py`, so this module is importable as `_common`.
"""

from __future__ import annotations

import socket
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
    import signal
    import sys

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
