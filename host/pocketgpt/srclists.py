"""The C source lists: firmware/engine/engine.mk and firmware/app/app.mk, read for the Python side.

Each library's sources are written once, in its .mk file, as `NAME := a.c b.c` lines; the
Makefiles include them, the ESP-IDF components parse them in CMake, and everything in Python that
compiles C (setup.py's extension, `pocketgpt device`'s simulator, the tests, tools/xtensa_check.py)
reads them here. Standard library only: setup.py loads this file by path before the package (and
its dependencies) is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

_LINE = re.compile(r"^([A-Z0-9_]+)\s*:=\s*(.*)$")
# the chips with their own kernel list in engine.mk (ENGINE_SRCS_<CHIP>)
CHIPS = ("x86", "esp32s3")


def read_mk(path: Path) -> dict[str, list[str]]:
    """The `NAME := words` lines of a .mk list file, as {NAME: [words]}; a `\\` continuation or any
    other make syntax on a NAME line is refused rather than misread."""
    lists: dict[str, list[str]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].rstrip()
        if not line:
            continue
        m = _LINE.match(line)
        if not m or line.endswith("\\") or "$" in line:
            raise ValueError(f"{path}:{n}: not a `NAME := file.c ...` line; the source lists are one plain line "
                             f"per list (CMake and Python read them too)")
        lists[m.group(1)] = m.group(2).split()
    return lists


def engine_sources(engine_dir: Path, chip: str = "x86") -> list[Path]:
    """The engine's sources for one target: the portable ones, then the chip's kernels."""
    if chip not in CHIPS:
        raise ValueError(f"no kernel list for chip {chip!r}; engine.mk has {', '.join(CHIPS)}")
    lists = read_mk(Path(engine_dir) / "engine.mk")
    return [Path(engine_dir) / f for f in lists["ENGINE_SRCS"] + lists[f"ENGINE_SRCS_{chip.upper()}"]]


def app_sources(app_dir: Path) -> list[Path]:
    """The app's sources (no chip code: the ports hold that)."""
    return [Path(app_dir) / f for f in read_mk(Path(app_dir) / "app.mk")["APP_SRCS"]]


def sim_sources(posix_dir: Path) -> list[Path]:
    """The POSIX port's own sources (the simulator adds the engine's and the app's)."""
    return [Path(posix_dir) / f for f in read_mk(Path(posix_dir) / "sim.mk")["SIM_SRCS"]]
