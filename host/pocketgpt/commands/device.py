"""`pocketgpt device`: the device simulator, the firmware's own app logic with a POSIX port.

The simulator is firmware/app (console, settings, router, relay client) and firmware/engine built
with the system C compiler and firmware/ports/posix: console on stdin/stdout, the relay over TCP,
settings in a file. It is built on first use into $POCKETGPT_CACHE (default ~/.cache/pocketgpt)
/sim/<source hash>/ and rebuilt
whenever a source changes, so it always runs the code the chip runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pocketgpt.errors import PocketError

ENGINE_FILES = ["pg_common.c", "gguf.c", "kernels_ref.c", "kernels_x86.c", "tokenizer.c", "sampler.c", "gpt2.c"]
APP_FILES = ["pg_json.c", "relay_proto.c", "router.c", "settings.c", "pg_ws.c", "console.c", "pg_app.c"]
CFLAGS = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-sign-conversion", "-Wno-format-truncation"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "device",
        help="the device simulator: the firmware's console on stdin/stdout",
        description="Run the firmware's portable app (the same C as on the ESP32-S3) as a simulator. "
                    "Each answer starts with [local] (the device model) or [relay] (the relay's). "
                    "Type /help inside for the commands (/cloud, /local, /set, /get, /route, /status).",
    )
    p.add_argument("--model", default=None,
                   help="device model (default builtin:device, a .gguf path works too)")
    p.add_argument("--relay", metavar="WS_URL", help="direct websocket URL, e.g. ws://127.0.0.1:8000/xiaozhi/v1/")
    p.add_argument("--token", help="device token for --relay (pocketgpt token add DEVICE_ID)")
    p.add_argument("--ota", metavar="URL", help="the relay's configuration URL, e.g. http://127.0.0.1:8003/xiaozhi/ota/")
    p.add_argument("--device-id", metavar="MAC", help="device id, aa:bb:cc:dd:ee:ff")
    p.add_argument("--settings", metavar="FILE",
                   help="settings file (the simulator's NVS; default $POCKETGPT_HOME/device.conf)")
    p.add_argument("--ctx", type=int, default=256, help="device context in tokens (default 256, as on the chip)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for this run only (repeatable), e.g. route.max_surprisal=5")
    p.add_argument("--build-only", action="store_true", help="build the simulator, print its path and stop")
    p.set_defaults(func=run)


def home() -> Path:
    from pocketgpt.relay.auth import pocketgpt_home

    return pocketgpt_home()


def firmware_dir() -> Path:
    """The firmware sources of this checkout (the simulator is built from them)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "firmware"
        if (cand / "app" / "pg_app.c").exists() and (cand / "engine" / "gpt2.c").exists():
            return cand
    raise PocketError("the device simulator is built from the firmware sources, which this install lacks; "
                      "run it from a source checkout (pip install -e .)")


def sources(fw: Path) -> list[Path]:
    return ([fw / "ports" / "posix" / "sim_main.c"] + [fw / "engine" / f for f in ENGINE_FILES]
            + [fw / "app" / f for f in APP_FILES])


def build(quiet: bool = True) -> Path:
    """Compile the simulator if no build of these exact sources exists; its path."""
    fw = firmware_dir()
    srcs = sources(fw)
    headers = sorted((fw / "engine").glob("*.h")) + sorted((fw / "app").glob("*.h"))
    h = hashlib.sha256(" ".join(CFLAGS).encode())
    for f in srcs + headers:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    cache = os.environ.get("POCKETGPT_CACHE")
    out_dir = (Path(cache).expanduser() if cache else Path.home() / ".cache" / "pocketgpt") / "sim" / h.hexdigest()[:16]
    exe = out_dir / "pocketgpt-sim"
    if exe.exists():
        return exe
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise PocketError("no C compiler found (install gcc, or set CC)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"pocketgpt-sim.{os.getpid()}.tmp"
    cmd = [cc, *CFLAGS, f"-I{fw / 'engine'}", f"-I{fw / 'app'}", "-o", str(tmp), *map(str, srcs), "-lm"]
    if not quiet:
        print("building the device simulator ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise PocketError(f"building the device simulator failed ({cc}):\n{proc.stderr.strip()[-2000:]}")
    os.replace(tmp, exe)  # atomic: a parallel build never sees half a binary
    return exe


def default_model() -> str:
    from pocketgpt.models import builtin_path

    try:
        return str(builtin_path("device"))
    except PocketError as exc:
        raise PocketError(f"{exc}; or pass --model PATH.gguf") from None


def command(args: argparse.Namespace, exe: Path) -> list[str]:
    from pocketgpt.models import resolve

    model = str(resolve(args.model)) if args.model else default_model()
    if not Path(model).is_file():
        raise PocketError(f"model {model} not found; pass --model PATH.gguf or builtin:device")
    settings = Path(args.settings) if args.settings else home() / "device.conf"
    settings.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe), "--model", model, "--settings", str(settings), "--ctx", str(args.ctx)]
    for flag, value in (("--relay", args.relay), ("--token", args.token), ("--ota", args.ota),
                        ("--device-id", args.device_id)):
        if value:
            cmd += [flag, value]
    for kv in args.set:
        cmd += ["--set", kv]
    return cmd


def run(args: argparse.Namespace) -> int:
    if args.relay and args.ota:
        raise PocketError("give --relay WS_URL (with --token) or --ota URL, not both")
    exe = build(quiet=False)
    if args.build_only:
        print(exe)
        return 0
    cmd = command(args, exe)
    sys.stdout.flush()
    # the simulator owns the terminal; its exit status is ours (2: bad settings or model)
    proc = subprocess.run(cmd)
    if proc.returncode == 2:
        return 2
    return proc.returncode
