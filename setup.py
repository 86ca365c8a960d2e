"""Build hook: compiles the C engine (firmware/engine/*.c) into the extension pocketgpt._engine.

Plain setuptools and the system C compiler, nothing else. The x86 fast kernels carry their own
target attributes and are picked at run time, so no per-file flags are needed and the wheel runs
on any x86-64 CPU.
"""

from __future__ import annotations

import glob
import sys

from setuptools import Extension, setup

ENGINE = sorted(p for p in glob.glob("firmware/engine/*.c") if not p.endswith(("_esp32s3.c", "fuzz_main.c")))
ENGINE = [p for p in ENGINE if "/test_" not in p and "/fuzz_" not in p]

compile_args = [] if sys.platform == "win32" else ["-O2", "-std=c11", "-D_GNU_SOURCE", "-fvisibility=hidden"]

setup(
    ext_modules=[
        Extension(
            "pocketgpt._engine",
            sources=["host/pocketgpt/_engine.c", "host/pocketgpt/_engine_session.c", "host/pocketgpt/_engine_pool.c", *ENGINE],
            include_dirs=["firmware/engine"],
            extra_compile_args=compile_args,
            libraries=["m"] if sys.platform != "win32" else [],
        )
    ]
)
