"""`pocketgpt serve` as a real process: SIGTERM drain, TLS, --open, and one-line start-up errors."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from pocketgpt.relay.auth import TokenStore
from pocketgpt.relay.client import RelayClient
from support import engine_kind, readline_within, run

pytestmark = pytest.mark.relay


class Served:
    """`pocketgpt serve ... --port 0 --http-port 0` and the ports it printed."""

    def __init__(self, model: Path, home: Path, *extra: str) -> None:
        backend = "engine" if engine_kind() == "engine" else "torch"
        cmd = [sys.executable, "-m", "pocketgpt", "serve", "--model", str(model), "--backend", backend,
               "--port", "0", "--http-port", "0", "--home", str(home), "--workers", "1", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = readline_within(self.proc, 60.0)
        if "ready" not in line:
            self.proc.kill()
            raise AssertionError(f"relay did not start: {line!r} {self.proc.stderr.read()}")
        self.ws_port = int(re.search(r"ws_port=(\d+)", line).group(1))
        self.http_port = int(re.search(r"http_port=(\d+)", line).group(1))
        self.ready_line = line
        self.signalled = False

    def sigterm(self) -> None:
        """One SIGTERM (a second one would stop the relay at once, without draining)."""
        if not self.signalled:
            self.signalled = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.sigterm()
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def test_sigterm_drains_then_exits(tiny_gguf: Path, tmp_path: Path) -> None:
    token = TokenStore(tmp_path).add("dev-sigterm")
    srv = Served(tiny_gguf, tmp_path, "--drain-timeout", "30", "--max-tokens", "900")
    try:
        async def go() -> None:
            url = f"ws://127.0.0.1:{srv.ws_port}/xiaozhi/v1/"
            async with RelayClient(url, token=token, device_id="dev-sigterm") as c:
                await c.ws.send(json.dumps({"type": "pg.generate", "id": "t", "prompt": "Long", "max_tokens": 300,
                                            "greedy": True, "raw": True}))
                assert (await c.recv())["type"] == "pg.delta"
                srv.sigterm()
                while (m := await c.recv())["type"] != "pg.done":
                    assert m["type"] == "pg.delta"
                assert m["reason"] in ("length", "stop") and (m["tokens"] == 300 or m["reason"] == "stop")
                with pytest.raises(ConnectionClosed):
                    await c.recv()
                assert c.ws.close_code == 1001
            with pytest.raises(OSError):   # no new sessions: the listener is gone
                async with RelayClient(url, token=token, device_id="dev-sigterm"):
                    pass
        try:
            run(go())
        except Exception as e:  # say how the relay ended, not only what the client saw
            code, err = srv.stop()
            raise AssertionError(f"{type(e).__name__}: {e}; relay exit status {code}, stderr: {err[-3000:]}") from e
        code, err = srv.stop()
        assert code == 0, err
        assert "draining" in err and token not in err and "Long" not in err   # no tokens, no prompts in logs
    finally:
        srv.stop()


def test_sigterm_deadline_aborts_with_a_done_message(tiny_gguf: Path, tmp_path: Path) -> None:
    srv = Served(tiny_gguf, tmp_path, "--open", "--drain-timeout", "0", "--max-tokens", "900")
    try:
        async def go() -> None:
            async with RelayClient(f"ws://127.0.0.1:{srv.ws_port}/xiaozhi/v1/") as c:
                await c.ws.send(json.dumps({"type": "pg.generate", "id": "t", "prompt": "Long", "max_tokens": 900,
                                            "raw": True}))
                assert (await c.recv())["type"] == "pg.delta"
                srv.sigterm()
                while (m := await c.recv())["type"] != "pg.done":
                    pass
                assert m["reason"] == "abort" and m["tokens"] < 900
        run(go())
        code, err = srv.stop()
        assert code == 0, err
        assert "--open is ON" in err and "OPEN MODE" in err
    finally:
        srv.stop()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "relay.crt", tmp / "relay.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(not any(os.access(os.path.join(p, "openssl"), os.X_OK) for p in os.environ.get("PATH", "").split(":")),
                    reason="openssl command not installed")
def test_tls_wss_and_https(tiny_gguf: Path, tmp_path: Path) -> None:
    import aiohttp

    cert, key = _self_signed(tmp_path)
    token = TokenStore(tmp_path).add("dev-tls")
    srv = Served(tiny_gguf, tmp_path, "--cert", str(cert), "--key", str(key))
    try:
        assert f"wss://127.0.0.1:{srv.ws_port}/xiaozhi/v1/" in srv.ready_line
        ctx = ssl.create_default_context(cafile=str(cert))

        async def go() -> None:
            async with aiohttp.ClientSession() as s:
                async with s.post(f"https://127.0.0.1:{srv.http_port}/xiaozhi/ota/", ssl=ctx,
                                  json={"application": {"version": "2.0.0"}}, headers={"Device-Id": "dev-tls"}) as r:
                    body = await r.json()
            assert body["websocket"]["url"] == f"wss://127.0.0.1:{srv.ws_port}/xiaozhi/v1/"
            assert body["websocket"]["token"] == token
            async with RelayClient(body["websocket"]["url"], token=token, device_id="dev-tls", ssl=ctx) as c:
                r = await c.generate("Secure", max_tokens=4)
                assert r.reason in ("length", "stop")
            with pytest.raises(ssl.SSLError):   # an unverified client is not silently downgraded
                async with RelayClient(body["websocket"]["url"], token=token, device_id="dev-tls",
                                       ssl=ssl.create_default_context()):
                    pass
        run(go())
    finally:
        srv.stop()


@pytest.mark.voice
def test_voice_flag_turns_the_audio_path_on(tiny_gguf: Path, tmp_path: Path) -> None:
    """Voice is on by default when its packages are here (as with --voice the hello's audio parameters are
    checked); --no-voice turns it off (a text-only relay ignores them)."""
    import shutil

    from websockets.asyncio.client import connect

    from support import opus_problem

    if opus_problem():
        pytest.skip(opus_problem())
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    hello = {"type": "hello", "version": 1, "transport": "websocket",
             "audio_params": {"format": "opus", "sample_rate": 44100, "channels": 1, "frame_duration": 60}}

    async def replies(port: int) -> list[dict]:
        async with connect(f"ws://127.0.0.1:{port}/xiaozhi/v1/", additional_headers={"Device-Id": "dev-v"}) as ws:
            await ws.send(json.dumps(hello))
            got = [json.loads(await asyncio.wait_for(ws.recv(), 30))]
            try:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 2)))
            except asyncio.TimeoutError:
                pass
            return got

    for flags, refused in ((("--open", "--voice"), True), (("--open",), True), (("--open", "--no-voice"), False)):
        srv = Served(tiny_gguf, tmp_path, *flags)
        try:
            got = run(replies(srv.ws_port))
        finally:
            srv.stop()
        assert got[0]["type"] == "hello"
        codes = [m.get("code") for m in got[1:]]
        assert ("bad_audio_params" in codes) == refused, (flags, got)


@pytest.mark.parametrize("args, message", [
    (["--backend", "openai"], "needs --url"),
    (["--model", "/nonexistent/model.gguf"], "no such file"),
    (["--cert", "/nonexistent.pem", "--key", "/nonexistent.key", "--backend", "openai", "--url", "http://127.0.0.1:9/v1"],
     "cannot load TLS certificate"),
    (["--max-sessions", "0", "--backend", "openai", "--url", "http://127.0.0.1:9/v1"], "--max-sessions must be"),
])
def test_start_up_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pocketgpt", "serve", "--port", "0", "--http-port", "0",
                        "--home", str(tmp_path), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
