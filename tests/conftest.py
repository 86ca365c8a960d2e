"""Fixtures every test file can ask for by name (pytest finds them here; nothing is imported).

The models and the simulator are made once per source state and kept in pytest's cache folder
(.pytest_cache/d/...), so a later run skips importing torch for them. Under pytest-xdist
(`make test` runs `pytest -n auto`) each worker is its own process with its own session fixtures:
the files they share are built under a file lock (support.built_once), by the first worker that
needs them, while the others wait for that file instead of building it again.

Markers (registered in pyproject.toml, `--strict-markers`): slow, c, relay, voice, xtensa; the
README says how to pick a subset with `-m`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Under pytest-xdist each worker gets its share of the cores for torch's and OpenBLAS's thread pools
# (read once, when they load: so before `support` imports numpy). Left at their default, every
# worker would start one thread per core, and `make test`'s one-worker-per-core run would spend
# much of its CPU time on threads spinning against each other. Subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT") and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

from support import (
    DEVICE_ID,
    DEVICE_NAME,
    TINY_NAME,
    RelayThread,
    build_device_gguf,
    build_tiny_gguf,
    built_once,
    engine_kind,
    file_lock,
    is_gguf,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with the most slow tests first, each file's tests in their own order. `make test`
    hands whole files to its workers in this order (--dist loadfile --no-loadscope-reorder): the
    long files start at once and the short ones fill in, instead of one worker running a long file
    alone at the end."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: a file's tests stay together, in order


@pytest.fixture(scope="session")
def tiny_gguf(pytestconfig: pytest.Config) -> Path:
    """The relay tests' model (support.build_tiny_gguf): the real GPT-2 vocabulary, n_embd 64."""
    path = Path(pytestconfig.cache.mkdir("pocketgpt-relay")) / TINY_NAME
    return built_once(path, build_tiny_gguf, usable=is_gguf)


@pytest.fixture(scope="session")
def engine(tiny_gguf: Path) -> Any:
    """The tiny model loaded in the engine the relay would use (the C engine when it is built).

    A cached file the engine cannot load (the format changed since) is built again."""
    from pocketgpt.errors import PocketError
    from pocketgpt.relay.backends import load_engine

    reference = engine_kind() == "torch"
    try:
        return load_engine(str(tiny_gguf), threads=1, reference=reference)
    except PocketError:
        with file_lock(tiny_gguf.with_name(tiny_gguf.name + ".lock")):
            try:  # another worker may have rebuilt it while this one waited
                return load_engine(str(tiny_gguf), threads=1, reference=reference)
            except PocketError:
                build_tiny_gguf(tiny_gguf)
        return load_engine(str(tiny_gguf), threads=1, reference=reference)


@pytest.fixture(scope="session")
def device_gguf(pytestconfig: pytest.Config) -> Path:
    """A device-sized model (support.build_device_gguf): ~560-token vocabulary, 128-token context."""
    path = Path(pytestconfig.cache.mkdir("pocketgpt-firmware")) / DEVICE_NAME
    return built_once(path, build_device_gguf, usable=is_gguf)


@pytest.fixture(scope="session")
def sim_cache(pytestconfig: pytest.Config) -> Path:
    """The simulator build cache the firmware tests share: `pocketgpt device` compiles into it once
    per source state (its own cache key), so every test and worker runs the same binary."""
    return Path(pytestconfig.cache.mkdir("pocketgpt-sim-build"))


@pytest.fixture(scope="session")
def sim_exe(sim_cache: Path) -> Path:
    """The simulator exactly as `pocketgpt device` builds it, built here first under a lock (two
    workers would otherwise compile it side by side); `pocketgpt device` then finds it built."""
    from pocketgpt.commands import device

    before = os.environ.get("POCKETGPT_CACHE")
    os.environ["POCKETGPT_CACHE"] = str(sim_cache)
    try:
        with file_lock(sim_cache / "build.lock"):
            return device.build()
    finally:
        if before is None:
            del os.environ["POCKETGPT_CACHE"]
        else:
            os.environ["POCKETGPT_CACHE"] = before


@pytest.fixture()
def shared_sim(sim_exe: Path, sim_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For a test that runs `pocketgpt device`: POCKETGPT_CACHE points at the shared, built simulator."""
    monkeypatch.setenv("POCKETGPT_CACHE", str(sim_cache))
    return sim_exe


@pytest.fixture(scope="module")
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A relay home with the simulated device (support.DEVICE_ID) registered: (folder, its token)."""
    from pocketgpt.relay.auth import TokenStore

    path = tmp_path_factory.mktemp("fw-home")
    return path, TokenStore(path).add(DEVICE_ID)


@pytest.fixture(scope="module")
def sim_relay(engine: Any, sim_home: tuple[Path, str]) -> Iterator[RelayThread]:
    """The relay the simulator talks to: the tiny model, one worker, prompts up to 400 characters."""
    from pocketgpt.relay.backends import EngineBackend

    rt = RelayThread(EngineBackend(engine, "tiny", workers=1), home=sim_home[0], max_prompt_chars=400)
    yield rt
    rt.stop()
