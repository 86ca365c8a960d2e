"""Who may talk to the relay: registered devices and their tokens, stored hashed.

State lives under $POCKETGPT_HOME (default ~/.local/share/pocketgpt):

- ``relay.secret``  32 random bytes (mode 0600), created by the first ``pocketgpt token add``;
- ``devices.json``  one entry per device: a public key id, a per-token salt and
  sha256(salt || token). The token itself is never written down.

A token is ``pgt_<key_id>_<secret>``, where the secret is HMAC-SHA256(relay.secret,
key_id || device_id). Deriving it (rather than storing it) lets ``token show`` print it again
while the file of record keeps only hashes: a leaked devices.json grants nothing. ``token
revoke`` deletes the entry; a later ``token add`` picks a new key id, so a revoked token never
comes back.

The OTA call hands a device its token once (``handout`` in its entry: pending for any caller
after ``token add``, or for the one Client-Id that asked for the pairing code after ``token
pair``), never again: an id is not a secret, so knowing it must not be enough to get a token.

The relay re-reads devices.json whenever its modification time changes and relay.secret whenever
it is replaced, so ``token add``/``pair``/``revoke`` and a new secret take effect on a running
relay without a restart. Every write holds an exclusive lock on ``.lock`` in the same folder
(the relay and the command line both write) and goes through a private temporary file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pocketgpt.errors import PocketError, atomic_path

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$")
STORE_VERSION = 1


def pocketgpt_home() -> Path:
    """$POCKETGPT_HOME, else ~/.local/share/pocketgpt (XDG-style, per user)."""
    env = os.environ.get("POCKETGPT_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "pocketgpt"


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID_RE.match(device_id or ""):
        raise PocketError(f"device id {device_id!r} is not valid: use 1-64 characters of letters, digits, "
                          "':', '.', '_' or '-' (a MAC address such as aa:bb:cc:dd:ee:ff works)")
    return device_id


def _hash(salt: bytes, token: str) -> str:
    return hashlib.sha256(salt + token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DeviceEntry:
    device_id: str
    key_id: str
    salt: str
    token_hash: str
    created: float
    handout: str | None = None  # the OTA call may hand the token out once: "" to anyone, else to this Client-Id


class TokenStore:
    """devices.json plus relay.secret under one folder; safe to share between threads."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home) if home is not None else pocketgpt_home()
        self.devices_path = self.home / "devices.json"
        self.secret_path = self.home / "relay.secret"
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._by_device: dict[str, DeviceEntry] = {}
        self._by_key: dict[str, DeviceEntry] = {}
        self._secret: bytes | None = None
        self._secret_stamp: tuple[int, int] | None = None  # (inode, mtime) of the relay.secret read

    # ---- reading --------------------------------------------------------------------------

    def _load(self) -> None:
        """(Re)read devices.json if it changed since the last look."""
        try:
            mtime = self.devices_path.stat().st_mtime_ns
        except FileNotFoundError:
            self._mtime, self._by_device, self._by_key = None, {}, {}
            return
        if mtime == self._mtime:
            return
        try:
            data = json.loads(self.devices_path.read_text(encoding="utf-8"))
            entries = [DeviceEntry(d, e["key_id"], e["salt"], e["hash"], float(e.get("created", 0)), _handout(e))
                       for d, e in data["devices"].items()]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PocketError(f"{self.devices_path} is damaged ({exc}); fix it or delete it and re-add devices") from None
        self._by_device = {e.device_id: e for e in entries}
        self._by_key = {e.key_id: e for e in entries}
        self._mtime = mtime

    def _read_secret(self, create: bool) -> bytes | None:
        """relay.secret, re-read when the file was replaced (a new secret needs no restart)."""
        try:
            st = self.secret_path.stat()
        except FileNotFoundError:
            st = None
        if st is not None:
            stamp = (st.st_ino, st.st_mtime_ns)
            if self._secret is not None and stamp == self._secret_stamp:
                return self._secret
            data = self.secret_path.read_bytes()
            if len(data) != 32:
                raise PocketError(f"{self.secret_path} should hold 32 bytes, has {len(data)}; "
                                  "delete it and re-add every device")
            self._secret, self._secret_stamp = data, stamp
        elif create:
            self._make_home()
            with atomic_path(self.secret_path, private=True) as tmp:
                tmp.write_bytes(secrets.token_bytes(32))
            return self._read_secret(create=False)
        else:
            self._secret = self._secret_stamp = None
        return self._secret

    def _make_home(self) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """This store's thread lock plus an exclusive file lock shared with other processes
        (the relay and `pocketgpt token` both write), with devices.json re-read inside it."""
        import fcntl

        with self._lock:
            self._make_home()
            fd = os.open(self.home / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._mtime = None  # whatever another process wrote counts
                self._load()
                yield
            finally:
                os.close(fd)  # closing releases the lock

    def _derive(self, key_id: str, device_id: str, secret: bytes) -> str:
        mac = hmac.new(secret, f"{key_id}\0{device_id}".encode(), hashlib.sha256).digest()
        return f"pgt_{key_id}_" + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def devices(self) -> list[DeviceEntry]:
        with self._lock:
            self._load()
            return sorted(self._by_device.values(), key=lambda e: e.device_id)

    # ---- writing --------------------------------------------------------------------------

    def _write(self) -> None:
        self._make_home()
        devices = {}
        for e in self._by_device.values():
            devices[e.device_id] = {"key_id": e.key_id, "salt": e.salt, "hash": e.token_hash, "created": e.created,
                                    "handout": e.handout}
        doc = {"version": STORE_VERSION, "devices": devices}
        self._mtime = None  # re-read next time: the new file, or the old one if this write fails
        try:
            with atomic_path(self.devices_path, private=True) as tmp:
                tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        except OSError as exc:
            self._load()  # forget the change that was not written
            raise PocketError(f"cannot write {self.devices_path}: {exc.strerror or exc}; nothing was changed "
                              "(free some space and retry)") from None

    def add(self, device_id: str, handout: str | None = "") -> str:
        """Register a device and return its token (the only time it is shown by this call).

        `handout`: "" lets the device's next OTA call fetch the token once (pre-registration),
        a Client-Id limits that to the device that asked for a pairing code, None never."""
        check_device_id(device_id)
        with self.locked():
            if device_id in self._by_device:
                raise PocketError(f"device {device_id} already has a token: 'pocketgpt token show {device_id}' "
                                  f"prints it, 'pocketgpt token revoke {device_id}' removes it")
            secret = self._read_secret(create=True)
            assert secret is not None
            key_id = secrets.token_hex(6)
            while key_id in self._by_key:
                key_id = secrets.token_hex(6)
            token = self._derive(key_id, device_id, secret)
            salt = secrets.token_bytes(16)
            entry = DeviceEntry(device_id, key_id, salt.hex(), _hash(salt, token), time.time(), handout)
            self._by_device[device_id] = entry
            self._by_key[key_id] = entry
            self._write()
            return token

    def revoke(self, device_id: str) -> None:
        with self.locked():
            if device_id not in self._by_device:
                raise PocketError(f"device {device_id!r} is not registered ('pocketgpt token list' shows them)")
            entry = self._by_device.pop(device_id)
            self._by_key.pop(entry.key_id, None)
            self._write()

    # ---- checking -------------------------------------------------------------------------

    def entry(self, device_id: str) -> DeviceEntry | None:
        with self._lock:
            self._load()
            return self._by_device.get(device_id)

    def take_handout(self, device_id: str, client_id: str | None) -> str | None:
        """The token for the device's OTA call, once: only while its hand-out is pending and, for
        a paired device, only to the Client-Id that asked for the code. Then never again."""
        with self.locked():
            entry = self._by_device.get(device_id)
            if entry is None or entry.handout is None or (entry.handout and entry.handout != client_id):
                return None
            token = self._token_locked(entry)
            if token is None:
                return None
            done = DeviceEntry(entry.device_id, entry.key_id, entry.salt, entry.token_hash, entry.created, None)
            self._by_device[device_id] = done
            self._by_key[entry.key_id] = done
            self._write()
            return token

    def _token_locked(self, entry: DeviceEntry) -> str | None:
        secret = self._read_secret(create=False)
        if secret is None:
            return None
        token = self._derive(entry.key_id, entry.device_id, secret)
        if not hmac.compare_digest(_hash(bytes.fromhex(entry.salt), token), entry.token_hash):
            return None  # relay.secret was replaced: this device needs a new token
        return token

    def token_for(self, device_id: str) -> str | None:
        """The token of a registered device (re-derived, then checked against its hash), else None."""
        with self._lock:
            self._load()
            entry = self._by_device.get(device_id)
            return None if entry is None else self._token_locked(entry)

    def verify(self, token: str | None) -> str | None:
        """The device id a token belongs to, or None for a missing, malformed, wrong or revoked one."""
        if not token or len(token) > 200:
            return None
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "pgt":
            return None
        with self._lock:
            self._load()
            entry = self._by_key.get(parts[1])
            if entry is None:
                return None
            ok = hmac.compare_digest(_hash(bytes.fromhex(entry.salt), token), entry.token_hash)
            return entry.device_id if ok else None


def _handout(entry: dict) -> str | None:
    """An entry's pending hand-out. One written before pairing existed (no "handout" key) was
    handed out at every OTA call: it gets one more, then none, like a fresh `token add`."""
    if "handout" not in entry:
        return ""
    return entry["handout"] if isinstance(entry["handout"], str) else None


def bearer(value: str | None) -> str | None:
    """The token in an Authorization value: "Bearer X" or a bare X (some clients skip the scheme)."""
    if not value:
        return None
    parts = value.split(None, 1)
    if parts and parts[0].lower() == "bearer":
        return parts[1].strip() if len(parts) == 2 and parts[1].strip() else None
    return value.strip() or None
