"""CI: on a machine without Debian's libopus0 the voice tests skip, naming the package.

A fresh machine without libopus0 once stopped `make test` at collection: opuslib raises a bare
Exception when it cannot find the library. This runs the tests that touch Opus with the library
hidden (ctypes' find_library answers "not found" for opus, exactly what a machine without
libopus0 answers) and fails unless they pass or skip, and at least one skip says "libopus0".
"""

from __future__ import annotations

import ctypes.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_firmware_voice.py", "tests/test_voice_units.py", "tests/test_voice_relay.py",
         "tests/test_relay_cli.py::test_voice_flag_turns_the_audio_path_on"]


class Skips:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:
            self.reasons.append(str(report.longrepr))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.reasons.append(str(report.longrepr))


def main() -> int:
    real = ctypes.util.find_library
    ctypes.util.find_library = lambda name: None if name == "opus" else real(name)
    skips = Skips()
    rc = pytest.main(["-q", "--rootdir", str(ROOT), *[str(ROOT / t) for t in TESTS]],
                     plugins=[skips])
    named = [r for r in skips.reasons if "libopus0" in r]
    print(f"without libopus: pytest exit {rc}, {len(skips.reasons)} skip(s), {len(named)} naming libopus0")
    if rc != 0 or not named:
        print("FAIL: the Opus tests must pass or skip naming libopus0 when the library is missing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
