"""Build hook: compiles the C engine (the sources firmware/engine/engine.mk lists, read with
host/pocketgpt/srclists.py) into the extension pocketgpt._engine.

Plain setuptools and the system C compiler, nothing else. The x86 fast kernels carry their own
target attributes and are picked at run time, so no per-file flags are needed and the wheel runs
on any x86-64 CPU.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import Extension, setup


def engine_sources() -> list[str]:
    """engine.mk's host list (portable + x86 kernels), relative paths as setuptools wants them;
    srclists.py is loaded by path: the package and its dependencies are not installed yet."""
    spec = importlib.util.spec_from_file_location("_pg_srclists", Path("host/pocketgpt/srclists.py"))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return [p.as_posix() for p in mod.engine_sources(Path("firmware/engine"), "x86")]


ENGINE = engine_sources()
# the CPython binding itself (host/pocketgpt/_engine.h says which file holds what)
BINDING = ["host/pocketgpt/_engine.c", "host/pocketgpt/_engine_session.c", "host/pocketgpt/_engine_pool.c"]

# warnings are errors, as in every C build of the project (firmware/engine/Makefile)
compile_args = ([] if sys.platform == "win32"
                else ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-fvisibility=hidden"])

setup(
    ext_modules=[
        Extension(
            "pocketgpt._engine",
            sources=[*BINDING, *ENGINE],
            include_dirs=["firmware/engine"],
            extra_compile_args=compile_args,
            libraries=["m"] if sys.platform != "win32" else [],
        )
    ]
)
