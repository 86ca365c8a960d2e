"""A test double of the ESP32-S3 serial ROM loader, served on a TCP socket (`socket://` for esptool).

It speaks the loader's wire protocol the way the chip does, so the real esptool (and tools/flash.py
on top of it) runs unmodified against it:

  * SLIP framing (0xC0 ends a packet, 0xDB 0xDC / 0xDB 0xDD escape 0xC0 / 0xDB);
  * requests `00 op len(2) checksum(4) data`, responses `01 op len(2) value(4) data status`, where
    the ROM appends 4 status bytes (status, error, 2 reserved) and the flasher stub 2;
  * SYNC (eight replies, as the ROM sends), READ_REG / WRITE_REG over a register file that models
    the SPI0 user-command unit (RDID 0x9F returns the JEDEC id whose capacity byte tells esptool the
    flash size; RDSFDP 0x5A returns the SFDP signature), GET_SECURITY_INFO with the ESP32-S3's chip
    id 9 (or another chip's, to test refusals), SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE;
  * FLASH_BEGIN / FLASH_DATA / FLASH_END and FLASH_DEFL_BEGIN / DATA / END (zlib) writing into a
    bytearray with NOR semantics (erase sets 0xFF, a write can only clear bits, so a missing erase
    shows up), block checksums and sequence numbers checked;
  * SPI_FLASH_MD5 (hex text from the ROM, 16 raw bytes from the stub), ERASE_REGION (stub),
    READ_FLASH_SLOW (ROM, 64 bytes a command) and READ_FLASH (stub: blocks, then their MD5);
  * MEM_BEGIN / MEM_DATA / MEM_END: the flasher-stub upload.

The stub. A real chip executes the uploaded stub; a double cannot. Instead it checks that what
esptool uploaded is byte for byte esptool's own ESP32-S3 stub (text and data at their load
addresses, entry point), then answers "OHAI" and speaks the stub's dialect from there (2 status
bytes, raw MD5, uncompressed sizes in FLASH_DEFL_BEGIN, no erase-ahead). That keeps the path a real
board takes (stub + compressed writes) under test, and `--no-stub` covers the ROM's own dialect.
What it cannot show is that the stub's machine code runs on silicon: that needs a board.

Faults to inject: `corrupt_at` (flash address whose byte is flipped after it is written),
`chip_id` (another chip), `flash_size` (a smaller flash chip).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# command opcodes (the loader's own numbering)
SYNC, READ_REG, WRITE_REG = 0x08, 0x0A, 0x09
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END = 0x10, 0x11, 0x12
SPI_FLASH_MD5, GET_SECURITY_INFO = 0x13, 0x14
ERASE_REGION, READ_FLASH, READ_FLASH_SLOW = 0xD1, 0xD2, 0x0E

# error codes the ROM puts in the second status byte
ERR_INVALID_MESSAGE, ERR_FAILED, ERR_BAD_CHECKSUM, ERR_FLASH_WRITE, ERR_DEFLATE = 0x05, 0x06, 0x07, 0x08, 0x0B

CHIP_ID_ESP32S3 = 9
CHIP_ID_ESP32C3 = 5

# ESP32-S3 SPI0 registers esptool drives for raw flash commands
SPI_BASE = 0x60002000
SPI_CMD, SPI_ADDR, SPI_USR2, SPI_MISO_DLEN, SPI_W0 = (SPI_BASE + 0x00, SPI_BASE + 0x04, SPI_BASE + 0x20,
                                                      SPI_BASE + 0x28, SPI_BASE + 0x58)
SPI_CMD_USR = 1 << 18
SECTOR = 0x1000
CHECKSUM_SEED = 0xEF


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def checksum(data: bytes) -> int:
    state = CHECKSUM_SEED
    for b in data:
        state ^= b
    return state


def esptool_stub() -> dict:
    """The ESP32-S3 flasher stub esptool uploads (same search order as esptool's StubFlasher)."""
    from esptool.loader import StubFlasher

    for sub in StubFlasher.STUB_SUBDIRS:
        path = Path(StubFlasher.STUB_DIR) / sub / "esp32s3.json"
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError("esptool ships no esp32s3 stub")


@dataclass
class _Download:
    """One FLASH_BEGIN / FLASH_DEFL_BEGIN in progress."""

    offset: int
    blocks: int
    block_size: int
    compressed: bool
    seq: int = 0
    written: int = 0
    inflate: object = None


@dataclass
class RomDouble:
    """The chip's flash, registers and loader state; `url` once `start()`ed."""

    flash_size: int = 16 * 1024 * 1024
    chip_id: int = CHIP_ID_ESP32S3
    corrupt_at: int | None = None
    flash: bytearray = field(init=False)
    commands: list[int] = field(default_factory=list)      # every opcode received, in order
    writes: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) per finished download
    stub_ran: bool = False
    app_after_flash: bool = False   # a connection after a session that wrote flash talks to "the app"
    console_lines: list[str] = field(default_factory=list)  # lines typed at the app's console
    errors: list[str] = field(default_factory=list)          # protocol problems the double saw

    def __post_init__(self) -> None:
        self.flash = bytearray(b"\xff" * self.flash_size)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.url = ""

    # ---- serving ---------------------------------------------------------------------------------
    def start(self) -> str:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1)
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.url = f"socket://127.0.0.1:{self._sock.getsockname()[1]}"
        return self.url

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._sock:
            self._sock.close()

    def __enter__(self) -> RomDouble:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(0.2)
                self._session(conn)

    def _app_session(self, conn: socket.socket) -> None:
        """The flashed app's console, as far as the monitor can tell: a banner, then one answer per line."""
        time.sleep(0.3)  # booting; also, pyserial's socket open() drops whatever already arrived
        conn.sendall(b"pocketgpt: model from the model partition\r\n> ")
        line = bytearray()
        while not self._stop.is_set():
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            for b in chunk:
                if b in (0x0D, 0x0A):
                    if line:
                        self.console_lines.append(line.decode(errors="replace"))
                        conn.sendall(b"\r\n[local] you typed " + bytes(line) + b"\r\n> ")
                        line.clear()
                else:
                    line.append(b)

    def _session(self, conn: socket.socket) -> None:
        """One connection = the chip just reset into download mode (a socket cannot toggle EN/BOOT)."""
        if self.app_after_flash and self.writes:
            self._app_session(conn)
            return
        self._stub = False
        self._regs: dict[int, int] = {}
        self._download: _Download | None = None
        self._mem: list[tuple[int, bytearray]] = []
        buf = bytearray()
        in_frame = False
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                self._finish()
                return
            if not chunk:
                self._finish()
                return
            for b in chunk:
                if b == 0xC0:
                    if in_frame and buf:
                        pkt = bytes(buf).replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
                        for reply in self._handle(pkt):
                            conn.sendall(slip_encode(reply))
                        buf.clear()
                    in_frame = True  # a 0xC0 both ends one packet and may start the next
                elif in_frame:
                    buf.append(b)

    # ---- protocol ----------------------------------------------------------------------------------
    def _reply(self, op: int, value: int = 0, data: bytes = b"", error: int = 0) -> bytes:
        status = bytes([1 if error else 0, error]) + (b"" if self._stub else b"\0\0")
        body = data + status
        return struct.pack("<BBHI", 1, op, len(body), value) + body

    def _handle(self, pkt: bytes) -> list[bytes]:
        if len(pkt) < 8 or pkt[0] != 0:
            return []
        _, op, size, chk = struct.unpack("<BBHI", pkt[:8])
        data = pkt[8:8 + size]
        self.commands.append(op)
        try:
            return self._dispatch(op, data, chk)
        except Exception as exc:  # a malformed request: the ROM answers "failed"
            self.errors.append(f"op 0x{op:02x}: {exc}")
            return [self._reply(op, error=ERR_FAILED)]

    def _dispatch(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if op == SYNC:
            if data != b"\x07\x07\x12\x20" + b"\x55" * 32:
                return []
            # the ROM answers a SYNC eight times with a non-zero value; the stub answers 0
            return [self._reply(op, 0 if self._stub else 0x20120707)] * (1 if self._stub else 8)
        if op == READ_REG:
            (addr,) = struct.unpack("<I", data[:4])
            return [self._reply(op, self._regs.get(addr, 0))]
        if op == WRITE_REG:
            for pos in range(0, len(data) - 15, 16):
                addr, value, mask, _delay = struct.unpack("<IIII", data[pos:pos + 16])
                self._regs[addr] = (self._regs.get(addr, 0) & ~mask) | (value & mask)
                if addr == SPI_CMD and value & SPI_CMD_USR:
                    self._spi_user_command()
            return [self._reply(op)]
        if op == GET_SECURITY_INFO:
            info = struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip_id, 0)
            return [self._reply(op, data=info)]
        if op in (SPI_ATTACH, SPI_SET_PARAMS, CHANGE_BAUDRATE):
            return [self._reply(op)]
        if op == MEM_BEGIN:
            size, _blocks, _bsize, offset = struct.unpack("<IIII", data[:16])
            self._mem.append((offset, bytearray()))
            return [self._reply(op)]
        if op == MEM_DATA:
            n, _seq, _, _ = struct.unpack("<IIII", data[:16])
            payload = data[16:16 + n]
            if checksum(payload) != chk:
                return [self._reply(op, error=ERR_BAD_CHECKSUM)]
            self._mem[-1][1].extend(payload)
            return [self._reply(op)]
        if op == MEM_END:
            _flag, entry = struct.unpack("<II", data[:8])
            return self._start_stub(entry)
        if op in (FLASH_BEGIN, FLASH_DEFL_BEGIN):
            return [self._begin(op, data)]
        if op in (FLASH_DATA, FLASH_DEFL_DATA):
            return [self._block(op, data, chk)]
        if op in (FLASH_END, FLASH_DEFL_END):
            self._finish()
            return [self._reply(op)]
        if op == SPI_FLASH_MD5:
            addr, size, _, _ = struct.unpack("<IIII", data[:16])
            digest = hashlib.md5(bytes(self.flash[addr:addr + size]))
            return [self._reply(op, data=digest.digest() if self._stub else digest.hexdigest().encode())]
        if op == READ_FLASH_SLOW and not self._stub:   # the ROM's read: 64 bytes per command
            offset, size = struct.unpack("<II", data[:8])
            return [self._reply(op, data=bytes(self.flash[offset:offset + 64]).ljust(64, b"\xff"))]
        if op == READ_FLASH and self._stub:   # the stub's: an ack, the data in blocks, then its MD5
            offset, size, block, _inflight = struct.unpack("<IIII", data[:16])
            blob = bytes(self.flash[offset:offset + size])
            blocks = [blob[i:i + block] for i in range(0, len(blob), block)]
            # (the host acknowledges each block with a 4-byte count; those packets are ignored)
            return [self._reply(op), *blocks, hashlib.md5(blob).digest()]
        if op == ERASE_REGION and self._stub:
            offset, size = struct.unpack("<II", data[:8])
            self._erase(offset, size)
            return [self._reply(op)]
        return [self._reply(op, error=ERR_INVALID_MESSAGE)]

    def _spi_user_command(self) -> None:
        """What the SPI0 user-command unit returns for the flash commands esptool sends."""
        cmd = self._regs.get(SPI_USR2, 0) & 0xFF
        capacity = self.flash_size.bit_length() - 1          # 16 MB -> 0x18, as flash chips report it
        if cmd == 0x9F:                                      # RDID: manufacturer, memory type, capacity
            self._regs[SPI_W0] = 0xC8 | (0x40 << 8) | (capacity << 16)
        elif cmd == 0x5A:                                    # RDSFDP
            sfdp = b"SFDP" + bytes(60)
            addr = self._regs.get(SPI_ADDR, 0) & 0xFFFFFF
            bits = (self._regs.get(SPI_MISO_DLEN, 31) + 1)
            word = int.from_bytes(sfdp[addr:addr + 4].ljust(4, b"\0"), "little")
            self._regs[SPI_W0] = word & ((1 << bits) - 1) if bits < 32 else word
        self._regs[SPI_CMD] = self._regs.get(SPI_CMD, 0) & ~SPI_CMD_USR

    def _start_stub(self, entry: int) -> list[bytes]:
        if entry == 0:
            return [self._reply(MEM_END)]
        stub = esptool_stub()
        want = {stub["text_start"]: base64.b64decode(stub["text"])}
        if "data" in stub:
            want[stub["data_start"]] = base64.b64decode(stub["data"])
        got = {offset: bytes(blob) for offset, blob in self._mem}
        if got != want or entry != stub["entry"]:
            self.errors.append("the uploaded stub is not esptool's ESP32-S3 stub")
            return [self._reply(MEM_END, error=ERR_FAILED)]
        self.stub_ran = True
        reply = self._reply(MEM_END)
        self._stub = True
        return [reply, b"OHAI"]

    def _erase(self, offset: int, size: int) -> None:
        start = offset // SECTOR * SECTOR
        end = -(-(offset + size) // SECTOR) * SECTOR
        self.flash[start:end] = b"\xff" * (end - start)

    def _begin(self, op: int, data: bytes) -> bytes:
        size, blocks, block_size, offset = struct.unpack("<IIII", data[:16])
        if offset + size > self.flash_size:
            return self._reply(op, error=ERR_FAILED)
        self._finish()
        compressed = op == FLASH_DEFL_BEGIN
        # the ROM erases the whole region up front; the stub erases as it writes, which for a
        # double is the same bytes (size = erase size for the ROM, uncompressed size for the stub)
        self._erase(offset, size)
        self._download = _Download(offset, blocks, block_size, compressed,
                                   inflate=zlib.decompressobj() if compressed else None)
        return self._reply(op)

    def _block(self, op: int, data: bytes, chk: int) -> bytes:
        d = self._download
        n, seq, _, _ = struct.unpack("<IIII", data[:16])
        payload = data[16:16 + n]
        if d is None or d.compressed != (op == FLASH_DEFL_DATA) or seq != d.seq:
            return self._reply(op, error=ERR_FAILED)
        if len(payload) != n or checksum(payload) != chk:
            return self._reply(op, error=ERR_BAD_CHECKSUM)
        if d.compressed:
            try:
                raw = d.inflate.decompress(payload)
            except zlib.error:
                return self._reply(op, error=ERR_DEFLATE)
        else:
            raw = payload
        self._program(d.offset + d.written, raw)
        d.written += len(raw)
        d.seq += 1
        return self._reply(op)

    def _program(self, addr: int, raw: bytes) -> None:
        """NOR flash: programming can only clear bits (an unerased byte keeps its zeros)."""
        end = min(addr + len(raw), self.flash_size)
        n = end - addr
        old = int.from_bytes(self.flash[addr:end], "little")
        self.flash[addr:end] = (old & int.from_bytes(raw[:n], "little")).to_bytes(n, "little")
        if self.corrupt_at is not None and addr <= self.corrupt_at < end:
            self.flash[self.corrupt_at] ^= 0x01

    def _finish(self) -> None:
        if self._download is not None and self._download.written:
            self.writes.append((self._download.offset, self._download.written))
        self._download = None

    def flush(self) -> None:
        """Record a download the client left open (esptool never ends the ROM's last one)."""
        self._finish()


if __name__ == "__main__":  # python tests/esp_rom_double.py: a double to point esptool at by hand
    double = RomDouble()
    print(double.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        double.stop()
        os._exit(0)
