"""Pairing by activation code through the stock XiaoZhi OTA flow, over real sockets.

A device id is not a secret: an unknown id gets a code, never a token; after the owner runs
`pocketgpt token pair CODE` the device that asked (same Device-Id and Client-Id) gets its token
from its next OTA call, once. OTA calls are rate limited per source address and per id.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pocketgpt.relay.auth import TokenStore
from pocketgpt.relay.backends import EngineBackend
from pocketgpt.relay.client import RelayClient
from support import RelayThread, run, token_env

pytestmark = pytest.mark.relay

MAC = "02:11:22:33:44:55"
BODY = {"application": {"version": "1.7.0", "name": "xiaozhi"}, "mac_address": MAC, "chip_model_name": "esp32s3"}
HEADERS = {"Device-Id": MAC, "Client-Id": "3f2a9c1e-0000-4000-8000-00000000c1d0", "Activation-Version": "1"}


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pocketgpt", "token", *args], capture_output=True, text=True,
                          env=token_env(home), timeout=120)


async def post(rt: RelayThread, path: str, headers: dict[str, str], body: Any = BODY) -> tuple[int, dict[str, Any]]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(rt.http_url + path, data=json.dumps(body), headers=headers) as r:
            return r.status, await r.json()


def test_a_device_pairs_by_code_and_gets_its_token_once(engine: Any, tmp_path: Path) -> None:
    rt = RelayThread(EngineBackend(engine, "tiny"), home=tmp_path)
    try:
        status, first = run(post(rt, "/xiaozhi/ota/", HEADERS))
        assert status == 200 and "token" not in first["websocket"] and first["websocket"]["url"] == rt.ws_url
        act = first["activation"]
        code = act["code"]
        assert len(code) == 6 and code.isdigit() and f"token pair {code}" in act["message"]
        assert act["challenge"] and act["timeout_ms"] > 0
        assert run(post(rt, "/xiaozhi/ota/", HEADERS))[1]["activation"]["code"] == code  # the same code while it lasts
        assert run(post(rt, "/xiaozhi/ota/activate", HEADERS, {}))[0] == 202             # stock firmware polls

        bad = cli(tmp_path, "pair", "000000" if code != "000000" else "111111")
        assert bad.returncode != 0 and "no device is waiting" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
        paired = cli(tmp_path, "pair", code, "--json")
        assert paired.returncode == 0, paired.stderr
        assert json.loads(paired.stdout)["device_id"] == MAC
        assert cli(tmp_path, "pair", code).returncode != 0  # a code works once

        assert run(post(rt, "/xiaozhi/ota/activate", HEADERS, {}))[0] == 200
        # the id alone is not enough: another caller (another Client-Id) gets no token
        status, other = run(post(rt, "/xiaozhi/ota/", {**HEADERS, "Client-Id": "someone-else"}))
        assert status == 200 and "token" not in other["websocket"] and "activation" not in other
        status, mine = run(post(rt, "/xiaozhi/ota/", HEADERS))
        token = mine["websocket"]["token"]
        assert status == 200 and token.startswith("pgt_") and "activation" not in mine
        status, again = run(post(rt, "/xiaozhi/ota/", HEADERS))
        assert status == 200 and "token" not in again["websocket"]  # once

        async def chat() -> str:
            async with RelayClient(rt.ws_url, token=token, device_id=MAC) as c:
                return (await c.generate("Hello", max_tokens=3, greedy=True)).reason
        assert run(chat()) in ("length", "stop")
    finally:
        rt.stop()


def test_unknown_and_registered_ids_look_alike_and_never_get_a_token(engine: Any, tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.add("aa:00:00:00:00:01", handout=None)  # registered, token given to its owner by hand
    rt = RelayThread(EngineBackend(engine, "tiny"), home=tmp_path)
    try:
        for dev in ("aa:00:00:00:00:01", "aa:00:00:00:00:02"):
            status, got = run(post(rt, "/xiaozhi/ota/", {"Device-Id": dev, "Client-Id": "x"}, {**BODY, "mac_address": dev}))
            assert status == 200 and "pgt_" not in json.dumps(got)
        status, got = run(post(rt, "/xiaozhi/ota/", {}, {**BODY, "mac_address": "evil\nINFO forged line"}))
        assert status == 400 and got["error"]["code"] == "bad_device_id"
    finally:
        rt.stop()


def test_no_pairing_keeps_pre_registration_only(engine: Any, tmp_path: Path) -> None:
    added = cli(tmp_path, "add", MAC)
    assert added.returncode == 0
    rt = RelayThread(EngineBackend(engine, "tiny"), home=tmp_path, pairing=False)
    try:
        status, got = run(post(rt, "/xiaozhi/ota/", {"Device-Id": "aa:00:00:00:00:09"}))
        assert status == 403 and got["error"]["code"] == "unknown_device"
        status, got = run(post(rt, "/xiaozhi/ota/", HEADERS))
        assert status == 200 and got["websocket"]["token"] == added.stdout.strip()
    finally:
        rt.stop()


def test_ota_is_rate_limited_per_address_and_per_id(engine: Any, tmp_path: Path) -> None:
    import aiohttp

    rt = RelayThread(EngineBackend(engine, "tiny"), home=tmp_path, ota_per_minute=0.001, ota_burst=3)
    try:
        async def call(device: str, source: str) -> int:
            conn = aiohttp.TCPConnector(local_addr=(source, 0))
            async with aiohttp.ClientSession(connector=conn) as s:
                async with s.post(rt.http_url + "/xiaozhi/ota/", json={**BODY, "mac_address": device},
                                  headers={"Device-Id": device}) as r:
                    return r.status

        async def go() -> tuple[list[int], list[int]]:
            # many ids from one address: the address's bucket empties
            by_addr = [await call(f"bb:00:00:00:00:{i:02x}", "127.0.0.1") for i in range(5)]
            # one id from many addresses (loopback has all of 127/8): the id's bucket empties
            by_id = [await call("bb:00:00:00:00:ff", f"127.0.0.{i}") for i in range(2, 7)]
            return by_addr, by_id
        assert run(go()) == ([200, 200, 200, 429, 429], [200, 200, 200, 429, 429])
    finally:
        rt.stop()


def test_store_files_are_private_from_their_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """relay.secret, devices.json and pairing.json are never readable by others, not even for the
    moment between creating the temporary file and writing the secret into it."""
    seen: list[tuple[str, int]] = []
    real_bytes, real_text = Path.write_bytes, Path.write_text

    def spy_bytes(self: Path, data: bytes) -> int:
        seen.append((self.name, stat.S_IMODE(self.stat().st_mode)))
        return real_bytes(self, data)

    def spy_text(self: Path, data: str, *a: Any, **kw: Any) -> int:
        seen.append((self.name, stat.S_IMODE(self.stat().st_mode)))
        return real_text(self, data, *a, **kw)

    monkeypatch.setattr(Path, "write_bytes", spy_bytes)
    monkeypatch.setattr(Path, "write_text", spy_text)
    home = tmp_path / "home"
    store = TokenStore(home)
    store.add("cc:00:00:00:00:01")
    from pocketgpt.relay.pairing import PairingBook

    PairingBook(store).code_for("cc:00:00:00:00:02", "client")
    assert {name.split(".")[1] for name, _ in seen} >= {"relay", "devices", "pairing"}
    assert all(mode & 0o077 == 0 for _, mode in seen), seen
    assert stat.S_IMODE(home.stat().st_mode) & 0o077 == 0
    for f in ("relay.secret", "devices.json", "pairing.json"):
        assert stat.S_IMODE((home / f).stat().st_mode) == 0o600


def test_a_replaced_secret_is_picked_up_without_a_restart(tmp_path: Path) -> None:
    relay_store = TokenStore(tmp_path)  # the relay's long-lived store
    relay_store.add("dd:00:00:00:00:01")
    (tmp_path / "relay.secret").unlink()
    (tmp_path / "devices.json").unlink()
    fresh = cli(tmp_path, "add", "dd:00:00:00:00:02")  # the command line makes a new secret
    assert fresh.returncode == 0
    assert relay_store.verify(fresh.stdout.strip()) == "dd:00:00:00:00:02"
    assert relay_store.take_handout("dd:00:00:00:00:02", "any") == fresh.stdout.strip()
    assert os.stat(tmp_path / "relay.secret").st_size == 32


def test_devices_registered_before_pairing_get_their_token_once_more(tmp_path: Path) -> None:
    """A devices.json from before pairing (no hand-out field): each device's next OTA call gets
    its token once, as it always did, and never again."""
    store = TokenStore(tmp_path)
    token = store.add("ab:00:00:00:00:01")
    doc = json.loads((tmp_path / "devices.json").read_text())
    del doc["devices"]["ab:00:00:00:00:01"]["handout"]
    (tmp_path / "devices.json").write_text(json.dumps(doc))
    fresh = TokenStore(tmp_path)
    assert fresh.take_handout("ab:00:00:00:00:01", "any") == token
    assert fresh.take_handout("ab:00:00:00:00:01", "any") is None
    assert TokenStore(tmp_path).verify(token) == "ab:00:00:00:00:01"
