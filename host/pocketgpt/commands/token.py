"""pocketgpt token: register devices with the relay (add, show, list, revoke)."""

from __future__ import annotations

import argparse

HELP = """\
Manage who may connect to the relay. State lives in $POCKETGPT_HOME (default
~/.local/share/pocketgpt): devices.json keeps only salted hashes of the tokens.

  pocketgpt token pair CODE          register the device that shows this pairing code
  pocketgpt token add DEVICE_ID      register a device ahead of time, print its token
  pocketgpt token show DEVICE_ID     print a registered device's token again
  pocketgpt token list               the registered devices
  pocketgpt token revoke DEVICE_ID   refuse the device from now on (a running relay notices at once)

Pairing: an unknown device's OTA call (POST /xiaozhi/ota/) gets a six-digit code, which the
device prints and speaks; 'token pair CODE' registers it, and that device's next OTA call gets
its token, once. DEVICE_ID is what the device sends as Device-Id: for a XiaoZhi device its MAC
address (aa:bb:cc:dd:ee:ff). After 'token add', the device's next OTA call gets the token once
(anyone sending that Device-Id first gets it: pair instead where that matters), or you paste it
into the device or client yourself.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="register devices with the relay and issue tokens", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pair", "add", "show", "list", "revoke"])
    p.add_argument("device_id", metavar="DEVICE_ID|CODE", nargs="?")
    p.add_argument("--home", default=None, help="state folder (default $POCKETGPT_HOME or ~/.local/share/pocketgpt)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pocketgpt.cli import emit
    from pocketgpt.errors import PocketError
    from pocketgpt.relay.auth import TokenStore, check_device_id

    store = TokenStore(Path(args.home) if args.home else None)
    if args.action == "list":
        devices = [e.device_id for e in store.devices()]
        emit(args, {"devices": devices, "home": str(store.home)},
             "\n".join(devices) if devices else f"no devices registered in {store.home}")
        return 0
    if args.action == "pair":
        from pocketgpt.relay.pairing import PairingBook

        if not args.device_id:
            raise PocketError("'pocketgpt token pair' needs the CODE the device shows")
        device_id = PairingBook(store).pair(args.device_id)
        emit(args, {"device_id": device_id, "paired": True, "home": str(store.home)},
             f"paired {device_id}: its next configuration call gets its token")
        return 0
    if not args.device_id:
        raise PocketError(f"'pocketgpt token {args.action}' needs a DEVICE_ID")
    device_id = check_device_id(args.device_id)
    if args.action == "add":
        token = store.add(device_id)
        emit(args, {"device_id": device_id, "token": token, "home": str(store.home)}, token)
    elif args.action == "show":
        shown = store.token_for(device_id)
        if shown is None:
            raise PocketError(f"device {device_id!r} is not registered in {store.home}: "
                              f"'pocketgpt token add {device_id}' registers it")
        emit(args, {"device_id": device_id, "token": shown}, shown)
    else:
        store.revoke(device_id)
        emit(args, {"device_id": device_id, "revoked": True}, f"revoked {device_id}")
    return 0
