"""pocketgpt token: register devices with the relay (add, show, list, revoke)."""

from __future__ import annotations

import argparse

HELP = """\
Manage who may connect to the relay. State lives in $POCKETGPT_HOME (default
~/.local/share/pocketgpt): devices.json keeps only salted hashes of the tokens.

  pocketgpt token add DEVICE_ID      register a device, print its token
  pocketgpt token show DEVICE_ID     print a registered device's token again
  pocketgpt token list               the registered devices
  pocketgpt token revoke DEVICE_ID   refuse the device from now on (a running relay notices at once)

DEVICE_ID is what the device sends as Device-Id: for a XiaoZhi device its MAC address
(aa:bb:cc:dd:ee:ff). A registered device gets its token from the relay's OTA call
(POST /xiaozhi/ota/), or you paste it into the device or client yourself.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="register devices with the relay and issue tokens", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["add", "show", "list", "revoke"])
    p.add_argument("device_id", metavar="DEVICE_ID", nargs="?")
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
    if not args.device_id:
        raise PocketError(f"'pocketgpt token {args.action}' needs a DEVICE_ID")
    device_id = check_device_id(args.device_id)
    if args.action == "add":
        token = store.add(device_id)
        emit(args, {"device_id": device_id, "token": token, "home": str(store.home)}, token)
    elif args.action == "show":
        token = store.token_for(device_id)
        if token is None:
            raise PocketError(f"device {device_id!r} is not registered in {store.home}: "
                              f"'pocketgpt token add {device_id}' registers it")
        emit(args, {"device_id": device_id, "token": token}, token)
    else:
        store.revoke(device_id)
        emit(args, {"device_id": device_id, "revoked": True}, f"revoked {device_id}")
    return 0
