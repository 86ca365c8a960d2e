"""Optional system packages some tests need, found without failing collection.

`pytest.importorskip("opuslib")` is not enough on a machine without Debian's libopus0: opuslib
imports, then raises a plain Exception ("Could not find Opus library") that stops pytest at
collection. These helpers turn every such absence into a skip that names the package to install.
"""

from __future__ import annotations

from typing import Any

import pytest

OPUS_HINT = "needs Debian's libopus0 and the voice extra (apt-get install libopus0; pip install -e '.[voice]')"


def opus_problem() -> str | None:
    """Why opuslib cannot run here (None: it can)."""
    try:
        import opuslib
        import opuslib.api  # noqa: F401  (loads libopus)
    except Exception as exc:  # ImportError, OSError, or opuslib's bare Exception for a missing libopus
        return f"{OPUS_HINT} ({exc.__class__.__name__}: {exc})"
    return None


def need_opuslib() -> Any:
    """The opuslib module, or a skip (module-level: skips the whole file) naming libopus0."""
    problem = opus_problem()
    if problem:
        pytest.skip(problem, allow_module_level=True)
    import opuslib

    return opuslib
