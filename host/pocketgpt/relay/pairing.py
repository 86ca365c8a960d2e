"""Pairing by activation code, as XiaoZhi servers do it: a device id alone never earns a token.

1. An unknown device's OTA call (POST /xiaozhi/ota/) gets an ``activation`` object: a six-digit
   code, a message, a challenge and a timeout. The device shows the code on its console and
   speaks it; a stock XiaoZhi device then polls POST /xiaozhi/ota/activate (202: still waiting).
2. The owner runs ``pocketgpt token pair CODE`` on the relay's machine: the device is registered,
   its token pending hand-out to the Client-Id that asked for the code.
3. The device's next OTA call (same Device-Id and Client-Id) gets its token, once.

Pending codes live in ``pairing.json`` beside devices.json (private file, the store's lock), so
the relay that hands out codes and the command line that pairs them may be different processes.
Codes expire after `CODE_TTL_S`; at most `MAX_PENDING` wait at once (made-up ids cannot grow the
file without bound; the relay's per-address and per-id OTA limits slow them further).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pocketgpt.errors import PocketError, atomic_path
from pocketgpt.relay.auth import TokenStore

CODE_TTL_S = 600.0
MAX_PENDING = 256
CODE_DIGITS = 6


@dataclass(frozen=True)
class Pending:
    code: str
    device_id: str
    client_id: str
    challenge: str
    expires: float

    def activation(self, now: float) -> dict[str, Any]:
        """The OTA reply's `activation` object (the fields stock XiaoZhi firmware reads)."""
        return {"code": self.code, "challenge": self.challenge,
                "message": f"Pair this device: on the relay's machine run 'pocketgpt token pair {self.code}'",
                "timeout_ms": int(max(0.0, self.expires - now) * 1000)}


class PairingFull(Exception):
    """Too many devices wait to be paired at once."""


class PairingBook:
    """The pending codes of one token store."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self.path = store.home / "pairing.json"

    def _read(self, now: float) -> dict[str, Pending]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            items = {c: Pending(c, e["device_id"], e["client_id"], e["challenge"], float(e["expires"]))
                     for c, e in data["codes"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}  # a damaged file of short-lived codes: start afresh (devices just ask again)
        return {c: p for c, p in items.items() if p.expires > now}

    def _write(self, codes: dict[str, Pending]) -> None:
        doc = {"version": 1, "codes": {p.code: {"device_id": p.device_id, "client_id": p.client_id,
                                                "challenge": p.challenge, "expires": p.expires}
                                       for p in codes.values()}}
        with atomic_path(self.path, private=True) as tmp:
            tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")

    def code_for(self, device_id: str, client_id: str) -> Pending:
        """The device's pending code (the same one while it lasts and the Client-Id is the same)."""
        now = time.time()
        with self.store.locked():
            codes = self._read(now)
            for p in codes.values():
                if p.device_id == device_id and p.client_id == client_id:
                    return p
            codes = {c: p for c, p in codes.items() if p.device_id != device_id}  # one code per device
            if len(codes) >= MAX_PENDING:
                raise PairingFull(f"{len(codes)} devices are waiting to be paired; retry later")
            code = _new_code(codes)
            p = Pending(code, device_id, client_id, secrets.token_hex(16), now + CODE_TTL_S)
            codes[code] = p
            self._write(codes)
            return p

    def waiting(self, device_id: str) -> bool:
        now = time.time()
        with self.store.locked():
            return any(p.device_id == device_id for p in self._read(now).values())

    def pair(self, code: str) -> str:
        """Register the device that was given `code`; returns its id. Its token waits for that
        device's next OTA call (same Client-Id), which gets it once."""
        code = code.strip()
        if not (len(code) == CODE_DIGITS and code.isdigit()):
            raise PocketError(f"pairing code {code!r} is not {CODE_DIGITS} digits: use the code the device shows")
        now = time.time()
        with self.store.locked():
            codes = self._read(now)
            p = codes.pop(code, None)
            if p is None:
                raise PocketError(f"no device is waiting with code {code} (codes last {CODE_TTL_S / 60:.0f} "
                                  "minutes): restart the device for a new one")
            if p.device_id in {e.device_id for e in self.store._by_device.values()}:
                self._write(codes)
                raise PocketError(f"device {p.device_id} is already registered: 'pocketgpt token revoke "
                                  f"{p.device_id}' first to pair it again")
            self._write(codes)
        self.store.add(p.device_id, handout=p.client_id)
        return p.device_id


def _new_code(codes: dict[str, Pending]) -> str:
    while True:
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        if code not in codes:
            return code
