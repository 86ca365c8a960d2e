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
    p.add_argument("--mic", metavar="WAV|FOLDER",
                   help="the microphone: a WAV file, or a folder of them taken in name order; each /talk is one "
                        "push-to-talk press held while the file lasts")
    p.add_argument("--speaker", metavar="OUT.wav", help="write everything the device plays to this WAV")
    p.add_argument("--listen-mode", choices=["manual", "auto", "realtime"],
                   help="voice listening mode (default manual: push-to-talk)")
    p.add_argument("--barge-in", type=int, metavar="MS",
                   help="press push-to-talk again MS milliseconds after each release (talking over the reply)")
    p.add_argument("--build-only", action="store_true", help="build the simulator, print its path and stop")
    p.add_argument("--demo", action="store_true",
                   help="the whole system on this machine: start a relay, register this device, run a short "
                        "scripted conversation (local and relay answers), then hand the console to you "
                        "when stdin is a terminal")
    p.add_argument("--relay-model", default="builtin:host", help="the relay's model for --demo (default builtin:host)")
    p.set_defaults(func=run)


def home() -> Path:
    from pocketgpt.relay.auth import pocketgpt_home

    return pocketgpt_home()


def firmware_dir() -> Path:
    """The firmware sources of this checkout (the simulator is built from them)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "firmware"
        if (cand / "app" / "app.mk").exists() and (cand / "engine" / "engine.mk").exists():
            return cand
    raise PocketError("the device simulator is built from the firmware sources, which this install lacks; "
                      "run it from a source checkout (pip install -e .)")


def sources(fw: Path) -> list[Path]:
    """The simulator's sources: sim.mk's (the POSIX port), engine.mk's host list and app.mk's."""
    from pocketgpt.srclists import app_sources, engine_sources, sim_sources

    return sim_sources(fw / "ports" / "posix") + engine_sources(fw / "engine", "x86") + app_sources(fw / "app")


def sim_cflags(fw: Path) -> list[str]:
    """The simulator's compiler flags, sim.mk's (the Makefile there uses the same)."""
    from pocketgpt.srclists import read_mk

    return read_mk(fw / "ports" / "posix" / "sim.mk")["SIM_CFLAGS"]


def opus_flags() -> tuple[list[str], list[str]]:
    """Voice in the simulator needs the host's libopus headers (Debian: libopus-dev); without them
    the simulator still builds and /talk says what is missing."""
    if shutil.which("pkg-config"):
        proc = subprocess.run(["pkg-config", "--exists", "opus"], capture_output=True)
        if proc.returncode == 0:
            return ["-DPG_SIM_OPUS"], ["-lopus"]
    if Path("/usr/include/opus/opus.h").exists():
        return ["-DPG_SIM_OPUS"], ["-lopus"]
    return [], []


def build(quiet: bool = True) -> Path:
    """Compile the simulator if no build of these exact sources exists; its path."""
    fw = firmware_dir()
    srcs = sources(fw)
    headers = [h for d in ("engine", "app", "ports/posix") for h in sorted((fw / d).glob("*.h"))]
    opus_c, opus_l = opus_flags()
    cflags = sim_cflags(fw) + ["-O2"]
    h = hashlib.sha256(" ".join(cflags + opus_c + opus_l).encode())
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
    cmd = [cc, *cflags, *opus_c, f"-I{fw / 'engine'}", f"-I{fw / 'app'}", "-o", str(tmp), *map(str, srcs), *opus_l,
           "-lm"]
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

    return str(builtin_path("device"))


def model_path(args: argparse.Namespace) -> str:
    from pocketgpt.models import resolve

    model = str(resolve(args.model)) if args.model else default_model()
    if not Path(model).is_file():
        raise PocketError(f"model {model} not found; pass --model PATH.gguf or builtin:device")
    return model


def command(args: argparse.Namespace, exe: Path) -> list[str]:
    model = model_path(args)
    settings = Path(args.settings) if args.settings else home() / "device.conf"
    settings.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(exe), "--model", model, "--settings", str(settings), "--ctx", str(args.ctx)]
    for flag, value in (("--relay", args.relay), ("--token", args.token), ("--ota", args.ota),
                        ("--device-id", args.device_id), ("--mic", getattr(args, "mic", None)),
                        ("--speaker", getattr(args, "speaker", None)),
                        ("--listen-mode", getattr(args, "listen_mode", None))):
        if value:
            cmd += [flag, value]
    if getattr(args, "barge_in", None):
        cmd += ["--barge-in", str(args.barge_in)]
    for kv in args.set:
        cmd += ["--set", kv]
    return cmd


DEMO_SCRIPT = [
    "/status",
    "Give me some advice about friends.",                        # a request about a quote subject: the device answers
    "/cloud Tell me something wise about work.",                 # forced to the relay
    "def f(x): return [i**2 for i in range(x) if i % 3 == 0]",  # code surprises the quotes model: escalated
    "/route The early bird gets the worm",                       # the router's numbers, no answer
]
DONE_MARKERS = ("(local: ", "(relay: ", "[relay] error", "[local] the prompt does not fit", "[local] error",
                "route: ", "relay: ", "error: ", "ok: ", "unknown command")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(args: argparse.Namespace, exe: Path) -> int:
    """Relay + device on one machine, a scripted conversation, then the console for a person."""
    import tempfile
    import threading
    import time
    import urllib.request

    from pocketgpt.relay.auth import TokenStore

    device_id = args.device_id or "02:00:00:00:de:60"
    with tempfile.TemporaryDirectory(prefix="pocketgpt-demo-") as tmp:
        home_dir = Path(tmp)
        TokenStore(home_dir).add(device_id)
        ws_port, http_port = free_port(), free_port()
        relay = subprocess.Popen([sys.executable, "-m", "pocketgpt", "serve", "--model", args.relay_model,
                                  "--port", str(ws_port), "--http-port", str(http_port), "--home", str(home_dir),
                                  "--workers", "1", "--log-level", "warning"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                if relay.poll() is not None:
                    err = relay.stderr.read() if relay.stderr is not None else ""
                    raise PocketError(f"the relay did not start: {err.strip()[-400:]}")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{ws_port}/healthz", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise PocketError("the relay did not come up within 120 s") from None
                    time.sleep(0.3)
            print(f"relay up: ws://127.0.0.1:{ws_port}/xiaozhi/v1/ (model {args.relay_model}); device {device_id} "
                  f"registered; the device gets its URL and token from http://127.0.0.1:{http_port}/xiaozhi/ota/",
                  flush=True)
            args.ota = f"http://127.0.0.1:{http_port}/xiaozhi/ota/"
            args.device_id = device_id
            args.relay = None
            if not args.settings:
                args.settings = str(home_dir / "device.conf")
            cmd = command(args, exe)
            sim = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            done = threading.Event()

            def pump() -> None:
                assert sim.stdout is not None
                for line in sim.stdout:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                    if line.startswith(DONE_MARKERS):
                        done.set()
                done.set()

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            assert sim.stdin is not None
            for line in DEMO_SCRIPT:
                done.clear()
                print(f"> {line}", flush=True)
                sim.stdin.write(line + "\n")
                sim.stdin.flush()
                done.wait(180)
            if sys.stdin.isatty():
                print("your turn: type a prompt, /help for commands, Ctrl-D to leave", flush=True)
                try:
                    for line in sys.stdin:
                        done.clear()
                        sim.stdin.write(line)
                        sim.stdin.flush()
                        done.wait(180)
                except KeyboardInterrupt:
                    pass
            sim.stdin.close()
            sim.wait(30)
            reader.join(5)
            return 0
        finally:
            relay.terminate()
            try:
                relay.wait(30)
            except subprocess.TimeoutExpired:
                relay.kill()


def run(args: argparse.Namespace) -> int:
    if args.relay and args.ota:
        raise PocketError("give --relay WS_URL (with --token) or --ota URL, not both")
    if not args.build_only:
        model_path(args)  # a missing model is reported before any build
    if args.demo:
        return run_demo(args, build(quiet=False))
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
