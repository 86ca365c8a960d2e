#!/usr/bin/env python3
"""Build and flash the pocketgpt firmware onto an ESP32-S3 board, or swap just its model.

    python tools/flash.py                      # build if out of date, flash everything, reset
    python tools/flash.py --model my.gguf      # write only the `model` partition (seconds, no rebuild)
    python tools/flash.py --dry-run --json     # the plan (partition, file, offset, bytes); no port touched
    python tools/flash.py --monitor            # ... then the serial console (Ctrl-] leaves)

Why a script and not `pio run -t upload`: the model lives in its own data partition, which
PlatformIO does not know how to fill, and a maker swapping models should not need a compiler.

Where each offset comes from (each is stated once, in the place that owns it):
  * the partition table (names, offsets, sizes of `factory`, `model`, ...): partitions.csv, parsed
    here, and cross-checked against the build's own partitions.bin so a stale build is caught;
  * bootloader, partition-table and app offsets: the build's flasher_args.json (ESP-IDF) or
    idedata.json (PlatformIO) when present; otherwise the bootloader offset of the chip from esptool
    (ESP32S3ROM.BOOTLOADER_FLASH_OFFSET), the table offset from sdkconfig
    (CONFIG_PARTITION_TABLE_OFFSET, ESP-IDF's default when unset) and the app offset from the
    `factory` partition.

Flashing goes through esptool's Python API (esptool 5): detect_chip -> run_stub -> attach_flash ->
write_flash (each file verified by the loader's MD5 of the written flash) -> hard reset.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "host") not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "host"))

from pocketgpt.errors import PocketError  # noqa: E402

PROG = "flash.py"
DEFAULT_ENV = "esp32s3"
DEFAULT_MODEL = "builtin:device"
ROM_BAUD = 115200                 # every ESP ROM loader syncs at this rate
CONSOLE_BAUD = 115200             # firmware/ports/esp32s3/main/port_console.c
EXIT_KEY = "\x1d"                 # Ctrl-], the monitor's exit key (as in idf.py monitor and miniterm)
MODEL_PARTITION = "model"
# ESP-IDF's Kconfig default for CONFIG_PARTITION_TABLE_OFFSET, used only when no build output and
# no sdkconfig says otherwise.
IDF_DEFAULT_TABLE_OFFSET = 0x8000

# USB devices an ESP32-S3 board shows up as: (vid, pid or None for any pid) -> what it is
USB_BOARDS: dict[tuple[int, int | None], str] = {
    (0x303A, None): "Espressif USB (the ESP32-S3's own USB-Serial/JTAG or USB-OTG)",
    (0x10C4, 0xEA60): "Silicon Labs CP210x USB-UART bridge",
    (0x1A86, 0x7523): "WCH CH340 USB-UART bridge",
    (0x1A86, 0x55D4): "WCH CH9102 USB-UART bridge",
    (0x1A86, 0x55D3): "WCH CH343 USB-UART bridge",
    (0x0403, 0x6001): "FTDI FT232R USB-UART bridge",
}

PIO_INSTALL = ("install it with `python -m pip install platformio` (in this checkout: "
               "`.venv/bin/pip install platformio`), then the ESP32 platform with "
               "`pio pkg install --global --platform espressif32@6.12.0` (both need internet access to "
               "pypi.org and registry.platformio.org)")


# ---- the partition table -----------------------------------------------------------------------

TYPES = {"app": 0x00, "data": 0x01}
REGION_TYPES = {"bootloader": 0x02, "partition_table": 0x03}   # ESP-IDF 5.3+: rows for the two fixed regions
SUBTYPES = {
    0x00: {"factory": 0x00, "test": 0x20, **{f"ota_{i}": 0x10 + i for i in range(16)}},
    0x01: {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04, "efuse": 0x05,
           "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83},
}
FLAGS = {"encrypted": 0x01, "readonly": 0x02}
ENTRY = struct.Struct("<2sBBII16sI")
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb" + b"\xff" * 14
TABLE_MAX = 0xC00                 # the partition table sector's usable length
APP_ALIGN, DATA_ALIGN = 0x10000, 0x1000


@dataclass(frozen=True)
class Partition:
    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0


def _number(text: str, what: str, where: str) -> int:
    """ESP-IDF's partition numbers: decimal or 0x hex, with an optional K or M suffix."""
    t = text.strip()
    scale = 1
    if t[-1:].upper() in ("K", "M"):
        scale = 1024 if t[-1].upper() == "K" else 1024 * 1024
        t = t[:-1]
    try:
        return int(t, 0) * scale
    except ValueError:
        raise PocketError(f"{where}: {what} {text!r} is not a number (write 0x310000, 1M or 4096)") from None


def read_partitions_csv(path: Path, table_offset: int = IDF_DEFAULT_TABLE_OFFSET) -> list[Partition]:
    """Parse an ESP-IDF partitions.csv (blank offsets are placed the way ESP-IDF places them)."""
    if not path.is_file():
        raise PocketError(f"{path}: no partition table; the project needs partitions.csv next to platformio.ini")
    rows = [r for r in csv.reader(ln for ln in path.read_text().splitlines()
                                  if ln.strip() and not ln.lstrip().startswith("#"))]
    parts: list[Partition] = []
    cursor = table_offset + 0x1000
    for i, row in enumerate(rows, 1):
        row = [c.strip() for c in row] + [""] * 6
        name, typ, sub, off, size, flags = row[:6]
        where = f"{path} row {i} ({name or '?'})"
        if not name or not typ or not size and typ.lower() not in REGION_TYPES:
            raise PocketError(f"{where}: needs Name, Type, SubType, Offset, Size")
        if typ.lower() in REGION_TYPES:
            continue  # newer ESP-IDF's rows for the bootloader and the table: placed by the build
        type_id = TYPES.get(typ.lower()) if not typ[:1].isdigit() else _number(typ, "type", where)
        if type_id is None:
            raise PocketError(f"{where}: type {typ!r} is not app, data or a number")
        if not sub and type_id == TYPES["data"]:
            sub = "undefined"  # ESP-IDF's default for a data partition
        sub_id = (SUBTYPES.get(type_id, {}).get(sub.lower()) if not sub[:1].isdigit()
                  else _number(sub, "subtype", where))
        if sub_id is None:
            raise PocketError(f"{where}: subtype {sub!r} is unknown for type {typ}; use a number like 0x40")
        align = APP_ALIGN if type_id == 0 else DATA_ALIGN
        offset = _number(off, "offset", where) if off else (cursor + align - 1) // align * align
        if offset % align:
            raise PocketError(f"{where}: offset 0x{offset:x} is not aligned to 0x{align:x}")
        flag_bits = 0
        for f in filter(None, (x.strip() for x in flags.split(":"))):
            if f not in FLAGS:
                raise PocketError(f"{where}: unknown flag {f!r} (encrypted, readonly)")
            flag_bits |= FLAGS[f]
        p = Partition(name, type_id, sub_id, offset, _number(size, "size", where), flag_bits)
        if p.offset < cursor:
            raise PocketError(f"{where}: offset 0x{p.offset:x} overlaps the partition before it "
                              f"(which ends at 0x{cursor:x})")
        parts.append(p)
        cursor = p.offset + p.size
    if not parts:
        raise PocketError(f"{path}: the partition table is empty")
    return parts


def partition_table_bin(parts: Sequence[Partition]) -> bytes:
    """The binary table ESP-IDF's bootloader reads (what the build writes as partitions.bin)."""
    body = b"".join(ENTRY.pack(ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size,
                               p.name.encode()[:16], p.flags) for p in parts)
    body += MD5_MAGIC + hashlib.md5(body).digest()
    return body + b"\xff" * (TABLE_MAX - len(body))


def read_partitions_bin(data: bytes, where: str) -> list[Partition]:
    """Decode a binary partition table, checking its MD5 entry when it has one."""
    parts: list[Partition] = []
    for pos in range(0, min(len(data), TABLE_MAX), ENTRY.size):
        chunk = data[pos:pos + ENTRY.size]
        if chunk[:2] == ENTRY_MAGIC:
            _, typ, sub, off, size, name, flags = ENTRY.unpack(chunk)
            if typ not in REGION_TYPES.values():
                parts.append(Partition(name.split(b"\0")[0].decode(errors="replace"), typ, sub, off, size, flags))
        elif chunk[:16] == MD5_MAGIC:
            if chunk[16:] != hashlib.md5(data[:pos]).digest():
                raise PocketError(f"{where}: the partition table's MD5 does not match: rebuild the firmware")
            break
        else:
            break
    if not parts:
        raise PocketError(f"{where}: not a partition table (no 0xAA50 entries): rebuild the firmware")
    return parts


def table_end(parts: Sequence[Partition]) -> int:
    """The flash size the table needs: the end of its last partition."""
    return max(p.offset + p.size for p in parts)


# ---- the build -----------------------------------------------------------------------------------

@dataclass
class Build:
    """Where the firmware's files are and the offsets the build itself says they go to."""

    folder: Path
    bootloader: tuple[int, Path]
    table: tuple[int, Path]
    app: tuple[int, Path]
    source: str                   # which build output the offsets came from
    extra: list[tuple[int, Path]] = field(default_factory=list)  # any other image the build lists


def _sdkconfig_table_offset(project: Path, env: str) -> int:
    for name in (f"sdkconfig.{env}", "sdkconfig", "sdkconfig.defaults"):
        f = project / name
        if f.is_file():
            m = re.search(r"^CONFIG_PARTITION_TABLE_OFFSET=(\S+)", f.read_text(), re.M)
            if m:
                return int(m.group(1), 0)
    return IDF_DEFAULT_TABLE_OFFSET


def _chip_bootloader_offset() -> int:
    from esptool.targets import CHIP_DEFS

    return int(CHIP_DEFS["esp32s3"].BOOTLOADER_FLASH_OFFSET)


Images = dict[str, Any]


def _from_flasher_args(folder: Path) -> Images | None:
    """ESP-IDF's build/flasher_args.json: "bootloader", "partition-table", "app" ({"offset", "file"})
    and "flash_files" ({offset: file}, every image, including any others to write)."""
    f = folder / "flasher_args.json"
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text())
        out: Images = {k: (int(doc[key]["offset"], 0), folder / doc[key]["file"])
                       for k, key in (("bootloader", "bootloader"), ("table", "partition-table"), ("app", "app"))}
        known = {off for off, _ in out.values()}
        out["extra"] = sorted((int(off, 0), folder / name) for off, name in doc.get("flash_files", {}).items()
                              if int(off, 0) not in known)
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PocketError(f"{f}: unreadable ({exc}); delete it and rebuild") from None


def _from_idedata(folder: Path) -> Images | None:
    """PlatformIO's idedata.json: extra.flash_images ({offset, path}: bootloader, partitions and any
    others) + extra.application_offset (firmware.bin)."""
    f = folder / "idedata.json"
    if not f.is_file():
        return None
    try:
        extra = json.loads(f.read_text())["extra"]
        out: Images = {"extra": []}
        for img in extra.get("flash_images", []):
            path = Path(img["path"])
            where = (int(img["offset"], 0), path if path.is_absolute() else folder / path)
            if path.name.startswith("bootloader"):
                out["bootloader"] = where
            elif path.name.startswith("partition"):
                out["table"] = where
            else:
                out["extra"].append(where)
        if "application_offset" in extra:
            out["app"] = (int(extra["application_offset"], 0), folder / "firmware.bin")
        return out if len(out) == 4 else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PocketError(f"{f}: unreadable ({exc}); delete it and rebuild") from None


def find_build(folder: Path, project: Path, env: str, parts: Sequence[Partition]) -> Build:
    """The build's three images and their offsets, from the build's own description when it has one."""
    for source, reader in (("flasher_args.json", _from_flasher_args), ("idedata.json", _from_idedata)):
        got = reader(folder)
        if got:
            return Build(folder, got["bootloader"], got["table"], got["app"], source, got["extra"])
    apps = [p for p in parts if p.type == 0]
    if not apps:
        raise PocketError("partitions.csv has no app partition (factory or ota_0): the firmware has nowhere to go")
    boot = next((p for p in apps if p.name == "factory"), apps[0])
    return Build(folder, (_chip_bootloader_offset(), folder / "bootloader.bin"),
                 (_sdkconfig_table_offset(project, env), folder / "partitions.bin"),
                 (boot.offset, folder / "firmware.bin"),
                 "partitions.csv + sdkconfig (no flasher_args.json or idedata.json in the build)")


FIRMWARE_SOURCES = ("firmware/engine", "firmware/app", "firmware/ports/esp32s3")
FIRMWARE_FILES = ("platformio.ini", "partitions.csv", "sdkconfig.defaults", "CMakeLists.txt", "firmware/srclist.cmake")


def build_state(project: Path, build: Build) -> str:
    """'missing', 'out of date' (a source is newer than firmware.bin) or 'up to date'."""
    images = [build.bootloader[1], build.table[1], build.app[1]]
    if not all(p.is_file() for p in images):
        return "missing"
    built = min(p.stat().st_mtime for p in images)
    newest = 0.0
    suffixes = (".c", ".h", ".S", ".txt", ".mk", ".cmake", ".projbuild", ".yml")
    for rel in FIRMWARE_SOURCES:
        for f in (project / rel).rglob("*"):
            if f.is_file() and "tests" not in f.relative_to(project).parts and f.suffix in suffixes:
                newest = max(newest, f.stat().st_mtime)
    for rel in FIRMWARE_FILES:
        if (project / rel).is_file():
            newest = max(newest, (project / rel).stat().st_mtime)
    return "out of date" if newest > built else "up to date"


def find_pio() -> list[str] | None:
    """The PlatformIO command: on PATH, or next to this Python (a venv that was never activated)."""
    for name in ("pio", "platformio"):
        hit = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if hit:
            return [hit]
    return None


def pio_has_espressif32() -> bool:
    core = Path(os.environ.get("PLATFORMIO_CORE_DIR") or Path.home() / ".platformio")
    return any((core / "platforms").glob("espressif32*"))


def run_build(project: Path, env: str) -> None:
    """`pio run -e ENV` in the project, after checking PlatformIO and its ESP32 platform are there."""
    pio = find_pio()
    if pio is None:
        raise PocketError(f"the firmware needs building but PlatformIO is not installed: {PIO_INSTALL}; "
                          "then run this again (or flash a build made elsewhere: --no-build --build-dir DIR)")
    if not pio_has_espressif32():
        raise PocketError("the firmware needs building but PlatformIO's espressif32 platform is not installed: "
                          "run `pio pkg install --global --platform espressif32@6.12.0` (needs access to "
                          "registry.platformio.org), then run this again")
    print(f"{PROG}: building: {' '.join(pio)} run -e {env}", file=sys.stderr)
    res = subprocess.run([*pio, "run", "-e", env], cwd=project, stdout=sys.stderr)
    if res.returncode != 0:
        raise PocketError(f"`pio run -e {env}` failed (exit {res.returncode}); its output is above")


def check_image(path: Path) -> None:
    """An ESP-IDF image for this chip: magic 0xE9, chip id in the extended header (bytes 12-13)."""
    from esptool.targets import CHIP_DEFS

    rom = CHIP_DEFS["esp32s3"]
    head = path.read_bytes()[:24]
    if len(head) < 24 or head[0] != rom.ESP_IMAGE_MAGIC:
        raise PocketError(f"{path} is not an ESP-IDF image (no 0x{rom.ESP_IMAGE_MAGIC:X} magic): rebuild the firmware")
    chip = int.from_bytes(head[12:14], "little")
    if chip != rom.IMAGE_CHIP_ID:
        raise PocketError(f"{path} was built for another chip (image chip id {chip}, the ESP32-S3 is "
                          f"{rom.IMAGE_CHIP_ID}): build the esp32s3 environment")


# ---- the model -----------------------------------------------------------------------------------

def check_model(spec: str, part: Partition) -> tuple[Path, str | None]:
    """Refuse anything but a GPT-2 GGUF the device can hold and run. Returns (path, speed note)."""
    from pocketgpt import budget
    from pocketgpt.gguf_io import read_gguf
    from pocketgpt.models import resolve

    path = resolve(spec)
    if not path.is_file():
        raise PocketError(f"model {spec}: no such file; give a .gguf path or {DEFAULT_MODEL}")
    size = path.stat().st_size
    if size > part.size:
        raise PocketError(f"model {path} is {size:,} bytes, the `{part.name}` partition holds {part.size:,} "
                          "(partitions.csv): make a smaller model with `pocketgpt shrink MODEL OUT --budget esp32s3`")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise PocketError(f"{path} is not a GGUF model file (the firmware reads GGUF only): "
                              "convert it with `pocketgpt convert`")
    mf = read_gguf(path)
    # the minimum the firmware needs: weights read in place from flash (it copies them to PSRAM
    # only when they fit), session buffers in PSRAM, engine tables in internal RAM. The partition,
    # not the budget's flash goal, decides what fits in flash (checked above).
    n_ctx = min(256, mf.cfg.n_ctx)
    minimum = budget.estimate(mf, n_ctx=n_ctx, weights_in="flash")
    memory = [p for p in minimum.problems if p.startswith(("PSRAM", "internal RAM"))]
    if memory:
        raise PocketError(f"{path} is not a device model: {memory[0]} on the ESP32-S3; make one with "
                          "`pocketgpt shrink MODEL OUT --budget esp32s3` (or use builtin:device)")
    usual = budget.estimate(mf, n_ctx=n_ctx, weights_in="psram")
    slow = next((p for p in usual.problems if "tok/s" in p), None)
    return path, slow


# ---- the plan ------------------------------------------------------------------------------------

@dataclass
class Step:
    partition: str
    file: str
    offset: int
    bytes: int
    capacity: int | None = None   # bytes the region holds, when the partition table says

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["offset_hex"] = f"0x{self.offset:x}"
        return d


def make_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Everything to write, where, and why it is safe; touches no port."""
    project = Path(args.project).resolve()
    csv_path = project / "partitions.csv"
    build_dir = Path(args.build_dir).resolve() if args.build_dir else project / ".pio" / "build" / args.env
    table_offset = _sdkconfig_table_offset(project, args.env)
    parts = read_partitions_csv(csv_path, table_offset)
    by_name = {p.name: p for p in parts}
    model_part = by_name.get(MODEL_PARTITION)
    if model_part is None:
        raise PocketError(f"{csv_path} has no `{MODEL_PARTITION}` partition: the firmware reads its model from there")
    model_only = args.model is not None and not args.all
    plan: dict[str, Any] = {"project": str(project), "env": args.env, "partitions_csv": str(csv_path),
                            "flash_bytes_needed": table_end(parts), "mode": "model" if model_only else "all",
                            "table_offset": table_offset}
    steps: list[Step] = []
    if not model_only:
        build = find_build(build_dir, project, args.env, parts)
        state = build_state(project, build)
        plan["build"] = {"folder": str(build_dir), "offsets_from": build.source, "state": state}
        if state != "up to date" and not args.no_build and not args.dry_run:
            run_build(project, args.env)
            build = find_build(build_dir, project, args.env, parts)
            state = build_state(project, build)
            plan["build"].update(state=state, built=True)
        if state == "missing":
            missing = [str(p) for _, p in (build.bootloader, build.table, build.app) if not p.is_file()]
            if args.dry_run:
                plan["build"]["missing"] = missing
            else:
                raise PocketError(f"no firmware build: {missing[0]} is missing; run without --no-build "
                                  f"(or `pio run -e {args.env}`), or point --build-dir at a build")
        if build.table[1].is_file():
            built = read_partitions_bin(build.table[1].read_bytes(), str(build.table[1]))
            if [(p.name, p.offset, p.size) for p in built] != [(p.name, p.offset, p.size) for p in parts]:
                raise PocketError(f"{build.table[1]} does not match {csv_path} (the build used another partition "
                                  "table): rebuild the firmware")
        app_part = next((p for p in parts if p.type == 0 and p.offset == build.app[0]), None)
        if app_part is None:
            raise PocketError(f"the build puts the app at 0x{build.app[0]:x} but {csv_path} has no app partition "
                              "there: rebuild the firmware")
        regions = [("bootloader", build.bootloader, build.table[0] - build.bootloader[0]),
                   ("partition-table", build.table, TABLE_MAX),
                   (app_part.name, build.app, app_part.size)]
        for offset, path in build.extra:  # e.g. ota_data_initial.bin: goes where the build says
            part = next((p for p in parts if p.offset == offset), None)
            if part is not None and part.name == MODEL_PARTITION:
                raise PocketError(f"the build lists {path} for 0x{offset:x}, the `{MODEL_PARTITION}` partition: "
                                  "the model is written by this tool, remove it from the build's images")
            regions.append((part.name if part else path.stem, (offset, path), part.size if part else None))
        for name, (offset, path), cap in regions:
            n = path.stat().st_size if path.is_file() else 0
            if not path.is_file() and name not in ("bootloader", "partition-table", app_part.name):
                raise PocketError(f"the build lists {path} for 0x{offset:x} but it is missing: rebuild the firmware")
            if n and name in ("bootloader", app_part.name):
                check_image(path)
            if cap and n > cap:
                raise PocketError(f"{path} is {n:,} bytes but its region at 0x{offset:x} holds {cap:,}: "
                                  "check partitions.csv and rebuild")
            steps.append(Step(name, str(path), offset, n, cap))
    steps.sort(key=lambda st: st.offset)
    model_spec = args.model or DEFAULT_MODEL
    model_path, slow = check_model(model_spec, model_part)
    if slow:
        plan["model_note"] = slow
    steps.append(Step(model_part.name, str(model_path), model_part.offset, model_path.stat().st_size, model_part.size))
    plan["model"] = model_spec
    plan["steps"] = [s.as_dict() for s in steps]
    return plan


def render_plan(plan: dict[str, Any]) -> str:
    lines = []
    b = plan.get("build")
    if b:
        lines.append(f"firmware build {b['folder']} ({b['state']}; offsets from {b['offsets_from']})")
        if b["state"] == "out of date":
            lines.append("  note: a firmware source is newer than this build (run without --no-build to rebuild)")
    for s in plan["steps"]:
        cap = f" of {s['capacity']:,}" if s.get("capacity") else ""
        lines.append(f"  {s['partition']:<16} 0x{s['offset']:06x}  {Path(s['file']).name:<22} {s['bytes']:>12,} bytes{cap}")
    lines.append(f"  the partition table needs {plan['flash_bytes_needed'] / 2**20:g} MB of flash")
    if plan.get("model_note"):
        lines.append(f"  note: {plan['model_note']} (a model of the chip, not a measurement)")
    return "\n".join(lines)


# ---- the port ------------------------------------------------------------------------------------

def describe_usb(vid: int | None, pid: int | None) -> str | None:
    if vid is None:
        return None
    return USB_BOARDS.get((vid, pid)) or USB_BOARDS.get((vid, None))


def find_port(ports: Iterable[Any], ask: Callable[[str], str] | None) -> str:
    """The one board on USB; with several, ask (on a terminal) or say how to choose."""
    ports = list(ports)
    boards = [(p.device, describe_usb(p.vid, p.pid)) for p in ports]
    boards = [(dev, what) for dev, what in boards if what]
    if not boards:
        others = f" ({len(ports)} other serial port{'s' if len(ports) != 1 else ''} seen)" if ports else ""
        raise PocketError("no ESP32-S3 board found on USB: looked for Espressif (VID 303A) and CP210x/CH340/CH9102/"
                          f"CH343/FTDI bridges{others}; plug the board in with a data cable (the port marked USB or UART), "
                          "on Linux join the dialout group, or pass --port PATH")
    if len(boards) == 1:
        return boards[0][0]
    listing = "; ".join(f"{i}) {dev} {what}" for i, (dev, what) in enumerate(boards, 1))
    if ask is None:
        raise PocketError(f"{len(boards)} boards found ({listing}): choose one with --port PATH")
    print(f"{PROG}: {len(boards)} boards found:", file=sys.stderr)
    for i, (dev, what) in enumerate(boards, 1):
        print(f"  {i}) {dev}  {what}", file=sys.stderr)
    answer = ask(f"which one (1-{len(boards)})? ").strip()
    if answer.isdigit() and 1 <= int(answer) <= len(boards):
        return boards[int(answer) - 1][0]
    raise PocketError(f"{answer!r} is not one of 1-{len(boards)}: run again and pick a number, or pass --port PATH")


def resolve_port(arg: str) -> str:
    if arg != "auto":
        return arg
    from serial.tools import list_ports

    ask = input if sys.stdin.isatty() and sys.stderr.isatty() else None
    return find_port(list_ports.comports(), ask)


# ---- flashing ------------------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def esptool_output(verbose: bool) -> Iterator[None]:
    """esptool's own log: on stderr with --verbose, else kept out of sight (errors are ours, one line)."""
    if verbose:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def check_board_table(esp: Any, table_offset: int, parts: Sequence[Partition], say: Callable[[str], None]) -> None:
    """Before writing only the model: the board's own partition table must be partitions.csv's,
    or the model would land where the firmware does not look for it (or over the app)."""
    from esptool.util import FatalError

    try:
        data = esp.read_flash(table_offset, TABLE_MAX)
    except FatalError:
        if esp.IS_STUB:  # the stub always reads flash: this is a real failure
            raise
        say("note: this ROM loader would not read flash, so the board's partition table was not checked")
        return
    if data[:2] != ENTRY_MAGIC:
        raise PocketError(f"the board has no partition table at 0x{table_offset:x} (no firmware flashed yet?): "
                          "flash everything first with `python tools/flash.py`")
    board = read_partitions_bin(data, f"the board's partition table at 0x{table_offset:x}")
    if [(p.name, p.offset, p.size) for p in board] != [(p.name, p.offset, p.size) for p in parts]:
        on_board = next((p for p in board if p.name == MODEL_PARTITION), None)
        where = (f"its `{MODEL_PARTITION}` partition is at 0x{on_board.offset:x}, {on_board.size:,} bytes"
                 if on_board else f"it has no `{MODEL_PARTITION}` partition")
        raise PocketError(f"the board's partition table is not partitions.csv's ({where}): flash everything with "
                          "`python tools/flash.py --model MODEL --all`")
    say("the board's partition table matches partitions.csv")


def write_board(port: str, steps: Sequence[dict[str, Any]], need: int, baud: int, no_stub: bool,
                reset: bool = True, verbose: bool = False, say: Callable[[str], None] = lambda s: None,
                board_table: tuple[int, Sequence[Partition]] | None = None) -> dict[str, Any]:
    """detect_chip -> stub -> attach_flash -> size (and, for a model alone, table) check ->
    write_flash (MD5-verified) per step -> reset."""
    import serial
    from esptool.cmds import attach_flash, detect_chip, detect_flash_size, reset_chip, run_stub, write_flash
    from esptool.util import FatalError, flash_size_bytes

    out: dict[str, Any] = {"port": port, "stub": not no_stub, "steps": []}
    t0 = time.monotonic()
    with esptool_output(verbose):
        try:
            esp = detect_chip(port, ROM_BAUD)
        except (FatalError, OSError, serial.SerialException) as exc:
            msg = _first_line(exc)
            if "could not open" in msg.lower():
                raise PocketError(f"cannot open {port} ({msg}): check the name (ls /dev/ttyACM* /dev/ttyUSB*), "
                                  "close any serial monitor holding it, and on Linux join the dialout group") from None
            raise PocketError(f"no ESP ROM loader answered on {port} ({msg}): check the cable; if it "
                              "still fails hold BOOT, tap RESET, release BOOT and run this again") from None
        try:
            out["chip"] = esp.CHIP_NAME
            if esp.CHIP_NAME != "ESP32-S3":
                raise PocketError(f"the board on {port} is an {esp.CHIP_NAME}, not an ESP32-S3: this firmware "
                                  "runs only on an ESP32-S3 (an ESP32-S3-DevKitC-1 N16R8 is the reference board)")
            with contextlib.suppress(Exception):
                out["chip"] = esp.get_chip_description()
            if not no_stub:
                esp = run_stub(esp)
            if baud != ROM_BAUD:
                esp.change_baud(baud)
            attach_flash(esp)
            size = detect_flash_size(esp)
            out["flash_size"] = size
            if size is None:
                say("note: the flash chip did not report its size; writing anyway")
            elif flash_size_bytes(size) < need:
                raise PocketError(f"the board's flash is {size}, the partition table needs "
                                  f"{need / 2**20:g} MB: use a board with 16 MB flash (ESP32-S3 N16R8) "
                                  "or shrink the partitions in partitions.csv")
            if board_table is not None:
                check_board_table(esp, board_table[0], board_table[1], say)
            for st in steps:
                say(f"writing {st['partition']} ({st['bytes']:,} bytes) at 0x{st['offset']:x} ...")
                try:
                    write_flash(esp, [(st["offset"], st["file"])], flash_size="keep", no_progress=True)
                except FatalError as exc:
                    msg = _first_line(exc)
                    if "MD5" in msg or "empty" in msg:
                        raise PocketError(f"verification failed for {st['partition']} at 0x{st['offset']:x}: the "
                                          f"flash does not hold what was sent ({msg}); check the USB cable and "
                                          "power, then run again (a lower --baud helps on long cables)") from None
                    raise PocketError(f"writing {st['partition']} at 0x{st['offset']:x} failed: {msg} "
                                      "(--verbose shows esptool's log)") from None
                out["steps"].append({**st, "verified": True})
                say("  written and verified (MD5 of the flash matches the file)")
            if reset:
                reset_chip(esp, "hard-reset")
        except (FatalError, serial.SerialException) as exc:
            raise PocketError(f"talking to the board on {port} failed: {_first_line(exc)} "
                              "(--verbose shows esptool's log)") from None
        finally:
            with contextlib.suppress(Exception):
                esp._port.close()
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


def monitor(port: str, baud: int = CONSOLE_BAUD, opens: int = 10) -> None:
    """The device console through pyserial's miniterm; Ctrl-] leaves."""
    import serial
    from serial.tools.miniterm import Miniterm

    ser = None
    for attempt in range(opens):
        try:
            ser = serial.serial_for_url(port, baudrate=baud, do_not_open=True)
            ser.timeout = 0.5  # lets the reader thread notice the exit key on ports without cancel_read
            # a USB-UART bridge wires DTR/RTS to BOOT/EN: keep both released or the chip stays in reset
            ser.dtr = False
            ser.rts = False
            ser.open()
            break
        except (serial.SerialException, ValueError, OSError) as exc:
            # the S3's own USB port disappears for a moment while the chip restarts
            if attempt == opens - 1:
                raise PocketError(f"cannot open {port} for the console: {_first_line(exc)}") from None
            time.sleep(0.3)
    term = Miniterm(ser, echo=False, eol="crlf", filters=["direct"])
    term.exit_character = EXIT_KEY
    term.set_rx_encoding("utf-8", "replace")
    term.set_tx_encoding("utf-8")
    print(f"--- pocketgpt console on {port} at {baud} baud; Ctrl-] leaves; type /help ---", file=sys.stderr)
    term.start()
    try:
        term.join(True)
    except KeyboardInterrupt:
        pass
    term.join()
    term.close()
    print("\n--- console closed ---", file=sys.stderr)


# ---- the command line ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Build the pocketgpt firmware with PlatformIO when it is out of date and flash bootloader, "
                    "partition table, app and model onto an ESP32-S3 through esptool; with --model alone only "
                    "the model partition is written.",
        epilog="Offsets come from the build's flasher_args.json / idedata.json and partitions.csv. "
               "Every file is verified by the board's MD5 of what it wrote. Docs: docs/flashing.md")
    p.add_argument("--port", default="auto", help="serial port or pyserial URL (default auto: the one ESP32-S3 on USB)")
    p.add_argument("--env", default=DEFAULT_ENV, help=f"PlatformIO environment (default {DEFAULT_ENV})")
    p.add_argument("--model", metavar="MODEL", help="write only the model partition with MODEL (a .gguf or "
                   f"builtin:device); with --all, flash everything with it (default model {DEFAULT_MODEL})")
    p.add_argument("--all", action="store_true", help="with --model: also write bootloader, table and app")
    p.add_argument("--no-build", action="store_true", help="never run PlatformIO; flash the build as it is")
    p.add_argument("--build-dir", help="the build folder (default PROJECT/.pio/build/ENV)")
    p.add_argument("--project", default=str(ROOT), help="the project with platformio.ini and partitions.csv "
                   "(default this checkout)")
    p.add_argument("--baud", type=int, default=460800, help="flashing baud rate after the ROM sync (default 460800)")
    p.add_argument("--no-stub", action="store_true", help="talk to the ROM loader only (slower; for boards "
                   "where the flasher stub will not start)")
    p.add_argument("--monitor", action="store_true", help="open the serial console afterwards (Ctrl-] leaves)")
    p.add_argument("--monitor-only", action="store_true", help="only open the serial console")
    p.add_argument("--dry-run", action="store_true", help="print the plan; touch no port and build nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--verbose", action="store_true", help="show esptool's own log on stderr")
    return p


def run(args: argparse.Namespace) -> int:
    if args.all and args.model is None:
        raise PocketError("--all goes with --model (without --model everything is flashed anyway)")
    if args.monitor_only:
        monitor(resolve_port(args.port), opens=1)
        return 0
    plan = make_plan(args)
    if args.dry_run:
        plan["dry_run"] = True
        print(json.dumps(plan) if args.json else render_plan(plan))
        return 0
    if not args.json:
        print(render_plan(plan))
    port = resolve_port(args.port)
    stdout = sys.stdout  # bound now: esptool's log is redirected while it runs
    say = (lambda s: None) if args.json else (lambda s: print(s, file=stdout, flush=True))
    say(f"board on {port}")
    board_table = None
    if plan["mode"] == "model":  # only the model moves: the board's table must already be ours
        board_table = (plan["table_offset"], read_partitions_csv(Path(plan["partitions_csv"]), plan["table_offset"]))
    result = write_board(port, plan["steps"], plan["flash_bytes_needed"], args.baud, args.no_stub,
                         verbose=args.verbose, say=say, board_table=board_table)
    plan.update(result)
    if args.json:
        print(json.dumps(plan))
    else:
        print(f"flashed {len(result['steps'])} file(s) to {result.get('chip', '?')} on {port}, every one verified, "
              f"in {result['seconds']:.1f} s; the board is restarting")
    if args.monitor:
        monitor(port)
    return 0


def check_dependencies() -> None:
    """esptool 5 and pyserial, with an answer a maker can act on instead of an ImportError."""
    fix = ("run this with the checkout's venv (`.venv/bin/python tools/flash.py`, made by `make test`) "
           "or install them: `pip install 'esptool>=5,<6' pyserial`")
    try:
        import esptool
        import serial  # noqa: F401
    except ImportError as exc:
        raise PocketError(f"flash.py needs esptool 5 and pyserial ({exc.name} is missing): {fix}") from None
    major = int(str(getattr(esptool, "__version__", "0")).split(".")[0] or 0)
    if major != 5:
        raise PocketError(f"flash.py uses esptool 5's Python API, this is esptool {esptool.__version__}: {fix}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_dependencies()
        return run(args)
    except ImportError as exc:  # pocketgpt's own dependencies (numpy, gguf) outside the venv
        print(f"{PROG}: error: {exc.name or exc} is not installed: run this with the checkout's venv "
              "(`.venv/bin/python tools/flash.py`, made by `make test`)", file=sys.stderr)
        return 1
    except PocketError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
