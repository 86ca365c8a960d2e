"""Run the real `pocketgpt` command line in a subprocess, the way a user does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def pocketgpt(*args: str, input: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pocketgpt", *args], input=input, capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def pocketgpt_json(*args: str, **kw: Any) -> dict:
    res = pocketgpt(*args, "--json", **kw)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: non-zero exit, no traceback, one line on stderr that says what failed."""
    assert res.returncode != 0, res.stdout
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
