"""tools/flash.py: the plan from a build folder, the refusals a maker meets, and real esptool writes
into a double of the ESP32-S3 ROM loader (tests/esp_rom_double.py) over `socket://`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("esptool", minversion="5")
pytest.importorskip("serial")

from esp_rom_double import CHIP_ID_ESP32C3, RomDouble  # noqa: E402
from support import assert_one_line_error  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "flash.py"
DEVICE_MODEL = ROOT / "host" / "pocketgpt" / "data" / "models" / "device.gguf"
MIB = 1024 * 1024


def load_tool():
    spec = importlib.util.spec_from_file_location("pocketgpt_flash_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


flash = load_tool()


def run_tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def esp32s3_image(path: Path, load_addr: int, n: int, seed: int) -> None:
    """A real ESP32-S3 app image (header, one segment, checksum, SHA-256), as the build writes."""
    from esptool.bin_image import ELFSection, ESP32S3FirmwareImage

    img = ESP32S3FirmwareImage()
    rnd = random.Random(seed)
    img.segments = [ELFSection(b".flash.rodata", load_addr, rnd.randbytes(n), 0)]
    img.entrypoint = load_addr
    img.save(str(path))


def sample_build(folder: Path, csv: Path, table_offset: int = flash.IDF_DEFAULT_TABLE_OFFSET,
                 describe: str | None = None) -> Path:
    """A PlatformIO-like build folder: bootloader.bin, partitions.bin, firmware.bin (+ a description)."""
    folder.mkdir(parents=True, exist_ok=True)
    esp32s3_image(folder / "bootloader.bin", 0x403C9000, 5000, 1)
    esp32s3_image(folder / "firmware.bin", 0x3C000020, 90000, 2)
    parts = flash.read_partitions_csv(csv, table_offset)
    (folder / "partitions.bin").write_bytes(flash.partition_table_bin(parts))
    app = next(p for p in parts if p.name == "factory").offset
    if describe == "flasher_args":
        (folder / "flasher_args.json").write_text(json.dumps({
            "bootloader": {"offset": "0x0", "file": "bootloader.bin"},
            "partition-table": {"offset": hex(table_offset), "file": "partitions.bin"},
            "app": {"offset": hex(app), "file": "firmware.bin"}}))
    elif describe == "idedata":
        (folder / "idedata.json").write_text(json.dumps({"extra": {
            "application_offset": hex(app),
            "flash_images": [{"offset": "0x0", "path": str(folder / "bootloader.bin")},
                             {"offset": hex(table_offset), "path": str(folder / "partitions.bin")}]}}))
    return folder


def sample_project(root: Path, model_size: str = "0x2F0000", table_offset: int = 0x9000) -> Path:
    """A project folder like this checkout's, with its own (smaller, moved) partition table."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "platformio.ini").write_text("[env:esp32s3]\nplatform = espressif32\n")
    (root / "sdkconfig.defaults").write_text(f"CONFIG_PARTITION_TABLE_OFFSET={table_offset:#x}\n")
    (root / "partitions.csv").write_text(
        "# Name, Type, SubType, Offset, Size, Flags\n"
        "nvs,      data, nvs,     ,        0x6000,\n"
        "factory,  app,  factory, 0x20000, 1M,\n"
        f"model,    data, 0x40,    ,        {model_size},\n")
    return root


# ---- the partition table and the plan ------------------------------------------------------------

def test_partition_table_csv_and_binary() -> None:
    parts = flash.read_partitions_csv(ROOT / "partitions.csv")
    model = next(p for p in parts if p.name == "model")
    assert (model.type, model.subtype, model.offset, model.size) == (1, 0x40, 0x310000, 0xCF0000)
    assert flash.table_end(parts) == 16 * MIB
    blob = flash.partition_table_bin(parts)
    # ESP-IDF's layout: 32-byte entries (AA 50, type, subtype, offset, size, label, flags), an MD5 row
    assert len(blob) == 0xC00 and blob[:2] == b"\xaa\x50"
    row = blob[32 * 3:32 * 4]
    assert row[2:4] == b"\x01\x40" and int.from_bytes(row[4:8], "little") == 0x310000 and row[12:17] == b"model"
    md5_row = blob[32 * len(parts):32 * (len(parts) + 1)]
    assert md5_row[:2] == b"\xeb\xeb" and md5_row[16:] == hashlib.md5(blob[:32 * len(parts)]).digest()
    assert flash.read_partitions_bin(blob, "t") == parts
    damaged = bytearray(blob)
    damaged[40] ^= 1
    with pytest.raises(flash.PocketError, match="MD5"):
        flash.read_partitions_bin(bytes(damaged), "t")


def test_blank_offsets_and_suffixes_follow_esp_idf(tmp_path: Path) -> None:
    proj = sample_project(tmp_path / "p")
    parts = {p.name: p for p in flash.read_partitions_csv(proj / "partitions.csv", 0x9000)}
    assert parts["nvs"].offset == 0xA000          # right after the table sector
    assert parts["factory"].size == MIB
    assert parts["model"].offset == 0x120000      # after factory, 4 KiB aligned
    # newer ESP-IDF rows for the bootloader and the table, keywords in any case, a blank data subtype
    csv = tmp_path / "idf55.csv"
    csv.write_text("bootloader, bootloader, primary, N/A, N/A\npartition_table, partition_table, primary, N/A, N/A\n"
                   "nvs, DATA, NVS, , 24K\nstore, data, , , 0x1000\nfactory, app, factory, , 1M\n")
    got = [(p.name, p.type, p.subtype, p.offset, p.size) for p in flash.read_partitions_csv(csv)]
    assert got == [("nvs", 1, 2, 0x9000, 0x6000), ("store", 1, 0x06, 0xF000, 0x1000), ("factory", 0, 0, 0x10000, MIB)]
    for bad, needle in (("model, data, 0x40, 0x9001, 1M\n", "not aligned"),
                        ("a, data, nvs, 0x9000, 0x6000\nb, data, nvs, 0xA000, 0x1000\n", "overlaps"),
                        ("m, data, 0x40, 0x9000, lots\n", "not a number")):
        csv.write_text(bad)
        with pytest.raises(flash.PocketError, match=needle):
            flash.read_partitions_csv(csv)


@pytest.mark.parametrize("describe", ["flasher_args", "idedata", None])
def test_dry_run_plan_from_a_sample_build(tmp_path: Path, describe: str | None) -> None:
    proj = sample_project(tmp_path / "proj")
    build = sample_build(proj / ".pio" / "build" / "esp32s3", proj / "partitions.csv", 0x9000, describe)
    res = run_tool("--project", str(proj), "--dry-run", "--json", "--no-build")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["dry_run"] and plan["mode"] == "all"
    assert (describe or "partitions.csv") in plan["build"]["offsets_from"]
    got = [(s["partition"], Path(s["file"]).name, s["offset"], s["bytes"]) for s in plan["steps"]]
    assert got == [("bootloader", "bootloader.bin", 0x0, (build / "bootloader.bin").stat().st_size),
                   ("partition-table", "partitions.bin", 0x9000, 0xC00),
                   ("factory", "firmware.bin", 0x20000, (build / "firmware.bin").stat().st_size),
                   ("model", "device.gguf", 0x120000, DEVICE_MODEL.stat().st_size)]
    assert plan["flash_bytes_needed"] == 0x120000 + 0x2F0000
    # --model alone: just the model partition
    res = run_tool("--project", str(proj), "--dry-run", "--json", "--model", str(DEVICE_MODEL))
    steps = json.loads(res.stdout)["steps"]
    assert [(s["partition"], s["offset"]) for s in steps] == [("model", 0x120000)]


def test_plan_refuses_a_build_made_with_another_table(tmp_path: Path) -> None:
    proj = sample_project(tmp_path / "proj")
    build = sample_build(tmp_path / "b", proj / "partitions.csv", 0x9000, "flasher_args")
    other = flash.read_partitions_csv(ROOT / "partitions.csv")
    (build / "partitions.bin").write_bytes(flash.partition_table_bin(other))
    res = run_tool("--project", str(proj), "--build-dir", str(build), "--dry-run", "--no-build")
    assert_one_line_error(res, "does not match", "rebuild")


def test_plan_refuses_an_image_for_another_chip(tmp_path: Path) -> None:
    proj = sample_project(tmp_path / "proj")
    build = sample_build(tmp_path / "b", proj / "partitions.csv", 0x9000, "flasher_args")
    app = bytearray((build / "firmware.bin").read_bytes())
    app[12:14] = (5).to_bytes(2, "little")   # an ESP32-C3 image
    (build / "firmware.bin").write_bytes(bytes(app))
    res = run_tool("--project", str(proj), "--build-dir", str(build), "--dry-run", "--no-build")
    assert_one_line_error(res, "firmware.bin was built for another chip", "esp32s3")


def test_build_state_sees_a_newer_source(tmp_path: Path) -> None:
    proj = sample_project(tmp_path / "proj")
    build_dir = sample_build(proj / ".pio" / "build" / "esp32s3", proj / "partitions.csv", 0x9000)
    parts = flash.read_partitions_csv(proj / "partitions.csv", 0x9000)
    build = flash.find_build(build_dir, proj, "esp32s3", parts)
    assert flash.build_state(proj, build) == "up to date"
    src = proj / "firmware" / "app" / "console.c"
    src.parent.mkdir(parents=True)
    src.write_text("/* edited */\n")
    later = (build_dir / "firmware.bin").stat().st_mtime + 10
    os.utime(src, (later, later))
    assert flash.build_state(proj, build) == "out of date"
    (build_dir / "firmware.bin").unlink()
    assert flash.build_state(proj, build) == "missing"


def test_missing_platformio_says_how_to_install_it(tmp_path: Path) -> None:
    proj = sample_project(tmp_path / "proj")   # no build folder: the firmware must be built
    env = {"PATH": "/usr/bin:/bin", "PLATFORMIO_CORE_DIR": str(tmp_path / "no-pio")}
    res = run_tool("--project", str(proj), "--port", "socket://127.0.0.1:9", env=env)
    # either PlatformIO itself or its ESP32 platform is missing; both say the exact command
    assert_one_line_error(res, "pio pkg install --global --platform espressif32")
    if flash.find_pio() is None:
        assert "pip install platformio" in res.stderr


def fake_pio(tmp_path: Path, prepared: Path, exit_code: int = 0) -> dict[str, str]:
    """PlatformIO's command-line contract without PlatformIO (its registry is out of reach here):
    `pio run -e ENV` in the project leaves the images in .pio/build/ENV. Returns the environment."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    script = bin_dir / "pio"
    script.write_text(f"""#!{sys.executable}
import os, shutil, sys
with open({str(tmp_path / "pio-calls")!r}, "a") as log:
    log.write(os.getcwd() + " " + " ".join(sys.argv[1:]) + "\\n")
if {exit_code}:
    sys.exit({exit_code})
shutil.copytree({str(prepared)!r}, os.path.join(".pio", "build", sys.argv[3]), dirs_exist_ok=True)
""")
    script.chmod(0o755)
    core = tmp_path / "pio-core"
    (core / "platforms" / "espressif32").mkdir(parents=True)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "PLATFORMIO_CORE_DIR": str(core)}


def test_a_stale_build_is_rebuilt_with_platformio_then_flashed(tmp_path: Path) -> None:
    proj = sample_project(tmp_path / "proj")
    prepared = sample_build(tmp_path / "fresh", proj / "partitions.csv", 0x9000)
    env = fake_pio(tmp_path, prepared)
    with RomDouble(flash_size=8 * MIB) as d:
        res = run_tool("--project", str(proj), "--port", d.url, "--json", env=env)
        d.flush()
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "pio-calls").read_text() == f"{proj} run -e esp32s3\n"
        out = json.loads(res.stdout)
        assert out["build"]["built"] and out["build"]["state"] == "up to date"
        for offset, name in ((0x0, "bootloader.bin"), (0x9000, "partitions.bin"), (0x20000, "firmware.bin")):
            data = (prepared / name).read_bytes()
            assert d.flash[offset:offset + len(data)] == data
    # a failing build stops before any port is opened
    proj2 = sample_project(tmp_path / "proj2")
    (tmp_path / "f2").mkdir()
    res = run_tool("--project", str(proj2), "--port", "socket://127.0.0.1:9",
                   env=fake_pio(tmp_path / "f2", prepared, exit_code=3))
    # PlatformIO's own output comes first on stderr; ours is the last line
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == ("flash.py: error: `pio run -e esp32s3` failed (exit 3); "
                                                   "its output is above")


def test_extra_images_the_build_lists_are_flashed_too(tmp_path: Path) -> None:
    proj = sample_project(tmp_path / "proj")
    build = sample_build(tmp_path / "b", proj / "partitions.csv", 0x9000, "flasher_args")
    doc = json.loads((build / "flasher_args.json").read_text())
    (build / "nvs_init.bin").write_bytes(b"\x11" * 0x100)
    doc["flash_files"] = {"0x0": "bootloader.bin", "0x9000": "partitions.bin", "0x20000": "firmware.bin",
                          "0xa000": "nvs_init.bin"}
    (build / "flasher_args.json").write_text(json.dumps(doc))
    res = run_tool("--project", str(proj), "--build-dir", str(build), "--dry-run", "--json", "--no-build")
    steps = json.loads(res.stdout)["steps"]
    assert [(s["partition"], s["offset"]) for s in steps] == [
        ("bootloader", 0), ("partition-table", 0x9000), ("nvs", 0xA000), ("factory", 0x20000), ("model", 0x120000)]


# ---- models ---------------------------------------------------------------------------------------

def test_refuses_what_is_not_a_device_model(tmp_path: Path) -> None:
    res = run_tool("--dry-run", "--model", str(ROOT / "README.md"))
    assert_one_line_error(res, "not a GGUF model")
    res = run_tool("--dry-run", "--model", str(tmp_path / "nothing.gguf"))
    assert_one_line_error(res, "no such file")
    # the 16M host model fits the 13.6 MB partition but not the chip's internal RAM
    res = run_tool("--dry-run", "--model", "builtin:host")
    assert_one_line_error(res, "not a device model", "internal RAM", "pocketgpt shrink")
    # too large for the partition: a project whose model partition is 1 MB
    proj = sample_project(tmp_path / "small", model_size="1M")
    res = run_tool("--project", str(proj), "--dry-run", "--model", "builtin:device")
    assert_one_line_error(res, f"is {DEVICE_MODEL.stat().st_size:,} bytes", "holds 1,048,576")


# ---- ports ----------------------------------------------------------------------------------------

def port(device: str, vid: int | None, pid: int | None) -> SimpleNamespace:
    return SimpleNamespace(device=device, vid=vid, pid=pid)


def test_port_auto_detection() -> None:
    s3 = port("/dev/ttyACM0", 0x303A, 0x1001)
    cp210x = port("/dev/ttyUSB0", 0x10C4, 0xEA60)
    ch9102 = port("/dev/ttyUSB1", 0x1A86, 0x55D4)
    mouse = port("/dev/ttyS0", None, None)
    modem = port("/dev/ttyACM1", 0x1234, 0x5678)
    assert flash.find_port([mouse, s3, modem], None) == "/dev/ttyACM0"
    assert flash.find_port([cp210x], None) == "/dev/ttyUSB0"
    with pytest.raises(flash.PocketError, match="no ESP32-S3 board found.*2 other serial ports"):
        flash.find_port([mouse, modem], None)
    with pytest.raises(flash.PocketError, match=r"2 boards found .*ttyUSB0.*ttyUSB1.*--port"):
        flash.find_port([cp210x, ch9102], None)   # no terminal to ask on
    asked = []
    assert flash.find_port([cp210x, ch9102], lambda q: asked.append(q) or "2") == "/dev/ttyUSB1"
    assert asked == ["which one (1-2)? "]
    with pytest.raises(flash.PocketError, match="not one of 1-2"):
        flash.find_port([cp210x, ch9102], lambda q: "7")


def test_no_port_found_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                   tmp_path: Path) -> None:
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda: [])
    proj = sample_project(tmp_path / "proj")
    rc = flash.main(["--project", str(proj), "--model", str(DEVICE_MODEL)])
    err = capsys.readouterr().err
    assert rc == 1 and "no ESP32-S3 board found on USB" in err and "--port" in err


# ---- through the ROM-loader double ---------------------------------------------------------------

@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_build(tmp_path_factory.mktemp("build"), ROOT / "partitions.csv", describe="flasher_args")


def flash_via(double: RomDouble, *args: str) -> subprocess.CompletedProcess:
    res = run_tool("--port", double.url, *args)
    double.flush()
    return res


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom-only"])
def test_everything_lands_at_its_offset(build: Path, stub: bool) -> None:
    with RomDouble() as d:
        res = flash_via(d, "--build-dir", str(build), "--no-build", "--json", *([] if stub else ["--no-stub"]))
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert d.errors == [] and d.stub_ran == stub
        expect = [(0x0, build / "bootloader.bin"), (0x8000, build / "partitions.bin"),
                  (0x10000, build / "firmware.bin"), (0x310000, DEVICE_MODEL)]
        for offset, path in expect:
            data = path.read_bytes()
            assert d.flash[offset:offset + len(data)] == data, f"{path.name} at {offset:#x}"
        assert [s["offset"] for s in out["steps"]] == [o for o, _ in expect]
        assert all(s["verified"] for s in out["steps"]) and out["chip"].startswith("ESP32-S3")
        assert out["flash_size"] == "16MB" and out["stub"] == stub
        # nothing outside the written regions was touched
        assert set(d.flash[0x8000 + 0xC00:0x10000]) == {0xFF}
        end = 0x310000 + DEVICE_MODEL.stat().st_size
        assert set(d.flash[-(-end // 0x1000) * 0x1000:]) == {0xFF}


# `make firmware`'s output (ESP-IDF v5.5's own build): the full image, else the one without radio
IDF_BUILDS = (ROOT / "build" / "firmware", ROOT / "build" / "firmware-noradio")


def test_the_esp_idf_build_lands_where_its_flasher_args_say() -> None:
    """The real bootloader, partition table and app from ESP-IDF's build (not made here), through
    the ROM loader double: each at the offset ESP-IDF's flasher_args.json gives, the app an
    ESP32-S3 image, the build's table the same as partitions.csv's."""
    folder = next((f for f in IDF_BUILDS if (f / "flasher_args.json").is_file() and (f / "pocketgpt.bin").is_file()),
                  None)
    if folder is None:
        pytest.skip("no ESP-IDF build of the firmware: make firmware (docs/xtensa.md)")
    args = json.loads((folder / "flasher_args.json").read_text())
    expect = [(int(args[k]["offset"], 0), folder / args[k]["file"]) for k in ("bootloader", "partition-table", "app")]
    assert [o for o, _ in expect] == [0x0, 0x8000, 0x10000]
    assert flash.read_partitions_bin((folder / args["partition-table"]["file"]).read_bytes(), "t") == \
        flash.read_partitions_csv(ROOT / "partitions.csv")
    with RomDouble() as d:
        res = flash_via(d, "--build-dir", str(folder), "--no-build", "--json")
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert d.errors == [] and out["build"]["offsets_from"] == "flasher_args.json"
        for offset, path in [*expect, (0x310000, DEVICE_MODEL)]:
            data = path.read_bytes()
            assert d.flash[offset:offset + len(data)] == data, f"{path.name} at {offset:#x}"
        assert all(s["verified"] for s in out["steps"])
    app = expect[2][1].read_bytes()
    assert app[0] == 0xE9 and int.from_bytes(app[12:14], "little") == 9   # image magic, chip id ESP32-S3
    assert b"pocketgpt" in app[:0x200]   # esp_app_desc_t's project name, first in the image's data


def with_our_table(d: RomDouble, csv: Path = ROOT / "partitions.csv") -> RomDouble:
    """A board that already runs this firmware: partitions.csv's table at 0x8000."""
    blob = flash.partition_table_bin(flash.read_partitions_csv(csv))
    d.flash[0x8000:0x8000 + len(blob)] = blob
    return d


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom-only"])
def test_model_alone_checks_the_boards_partition_table(tmp_path: Path, stub: bool) -> None:
    extra = [] if stub else ["--no-stub"]
    with RomDouble() as d:   # a blank board: nothing to put a model next to
        res = flash_via(d, "--model", "builtin:device", *extra)
        assert_one_line_error(res, "no partition table at 0x8000", "python tools/flash.py")
        assert d.writes == []
    other = tmp_path / "other.csv"
    other.write_text((ROOT / "partitions.csv").read_text().replace("0x310000,  0xCF0000", "0x410000,  0xBF0000"))
    with with_our_table(RomDouble(), other) as d:   # flashed with another layout
        res = flash_via(d, "--model", "builtin:device", *extra)
        assert_one_line_error(res, "not partitions.csv's", "at 0x410000", "--all")
        assert d.writes == []


def test_model_alone_rewrites_only_the_model_partition() -> None:
    with with_our_table(RomDouble()) as d:
        d.flash[0x10000:0x20000] = b"\x5a" * 0x10000          # an app already on the board
        d.flash[0x310000:0x320000] = b"\x00" * 0x10000        # an older model (all bits cleared)
        before = bytes(d.flash)
        res = flash_via(d, "--model", "builtin:device")
        assert res.returncode == 0, res.stderr
        n = DEVICE_MODEL.stat().st_size
        assert d.flash[0x310000:0x310000 + n] == DEVICE_MODEL.read_bytes()   # the erase happened
        assert d.flash[:0x310000] == before[:0x310000]
        assert [w[0] for w in d.writes] == [0x310000]
        assert "verified" in res.stdout


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom-only"])
def test_verification_catches_a_corrupted_write(stub: bool) -> None:
    with with_our_table(RomDouble(corrupt_at=0x310000 + 123_457)) as d:
        res = flash_via(d, "--model", "builtin:device", *([] if stub else ["--no-stub"]))
        assert_one_line_error(res, "verification failed for model at 0x310000", "MD5")
        assert "restarting" not in res.stdout   # a failed write does not reboot into a broken model


def test_wrong_chip_is_refused_before_writing() -> None:
    with RomDouble(chip_id=CHIP_ID_ESP32C3) as d:
        res = flash_via(d, "--model", "builtin:device")
        assert_one_line_error(res, "ESP32-C3, not an ESP32-S3")
        assert d.writes == [] and set(d.flash) == {0xFF}


def test_flash_too_small_for_the_table_is_refused(build: Path) -> None:
    with RomDouble(flash_size=4 * MIB) as d:
        res = flash_via(d, "--build-dir", str(build), "--no-build")
        assert_one_line_error(res, "flash is 4MB", "needs 16 MB")
        assert d.writes == [] and set(d.flash) == {0xFF}


def test_nobody_answering_on_the_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a listening socket that never speaks the ROM protocol
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"socket://127.0.0.1:{s.getsockname()[1]}"
        cfg = tmp_path / "esptool.cfg"
        cfg.write_text("[esptool]\nconnect_attempts = 1\n")   # give up after one reset-and-sync round
        res = run_tool("--port", url, "--model", "builtin:device", env={"ESPTOOL_CFGFILE": str(cfg)})
    assert_one_line_error(res, "no ESP ROM loader answered", "BOOT")
    res = run_tool("--port", str(tmp_path / "ttyNOPE"), "--model", "builtin:device")
    assert_one_line_error(res, "cannot open", "dialout")


def test_monitor_after_flashing_and_its_exit_key() -> None:
    """--monitor: the console of the freshly flashed board on a terminal; Ctrl-] ends it cleanly."""
    import pty
    import select
    import time

    with with_our_table(RomDouble(app_after_flash=True)) as d:
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, str(TOOL), "--port", d.url, "--model", "builtin:device", "--monitor"],
                                stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=dict(os.environ))
        os.close(slave)
        seen = b""

        def read_until(needle: bytes, limit: float = 60) -> None:
            nonlocal seen
            end = time.monotonic() + limit
            while needle not in seen and time.monotonic() < end:
                if select.select([master], [], [], 0.2)[0]:
                    try:
                        seen += os.read(master, 4096)
                    except OSError:
                        break
            assert needle in seen, seen.decode(errors="replace")

        try:
            read_until(b"> ")                    # the app's banner and prompt, after the flash
            os.write(master, b"/status\r")       # Enter on a terminal
            read_until(b"[local] you typed /status")
            os.write(master, b"\x1d")            # Ctrl-]
            assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
        assert d.console_lines == ["/status"]   # one line, CR LF not doubled into an empty line
        assert b"written and verified" in seen
