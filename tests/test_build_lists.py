"""Each C library's sources are written once (firmware/engine/engine.mk, firmware/app/app.mk) and
every build compiles that list: a new engine or app file added to its .mk line, and nothing else,
reaches the engine's Makefile, the simulator's Makefile and `pocketgpt device`, the Python
extension (setup.py), the ESP-IDF components, and the tests and tools that compile the engine."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

from pocketgpt import srclists

ROOT = Path(__file__).resolve().parents[1]
NEW_ENGINE, NEW_APP = "pg_newfile.c", "newfeature.c"

# ESP-IDF's early expansion in miniature: each component's CMakeLists.txt run in CMake's script
# mode, idf_component_register recording what the component would compile and require
IDF_STUB = r"""
macro(idf_component_register)
    cmake_parse_arguments(_ "" "" "SRCS;INCLUDE_DIRS;REQUIRES;PRIV_REQUIRES" ${ARGN})
    set(_abs "")
    foreach(_s ${__SRCS})
        get_filename_component(_a "${_s}" ABSOLUTE BASE_DIR "${COMPONENT_DIR}")
        list(APPEND _abs "${_a}")
    endforeach()
    file(APPEND "${OUT}" "${COMPONENT_DIR}|${_abs}|${__REQUIRES}\n")
    return()
endmacro()
set(CONFIG_IDF_TARGET_ESP32S3 y)
foreach(COMPONENT_DIR ${DIRS})
    include("${COMPONENT_DIR}/CMakeLists.txt")
endforeach()
"""


def resolved(paths: list[Path]) -> list[Path]:
    return [Path(p).resolve() for p in paths]


def make_srcs(folder: Path) -> list[Path]:
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(folder), "print-srcs"], capture_output=True,
                         text=True, check=True).stdout
    return [(folder / w).resolve() for w in out.split()]


def setup_py_sources(root: Path) -> list[Path]:
    """The extension's sources as setup.py hands them to setuptools (setup() itself not run)."""
    import setuptools

    seen: list = []
    real = setuptools.setup
    setuptools.setup = lambda **kw: seen.extend(kw["ext_modules"])  # type: ignore[assignment]
    cwd = Path.cwd()
    try:
        os.chdir(root)
        runpy.run_path(str(root / "setup.py"))
    finally:
        os.chdir(cwd)
        setuptools.setup = real  # type: ignore[assignment]
    (ext,) = seen
    return [(root / s).resolve() for s in ext.sources]


def idf_components(root: Path, tmp: Path) -> dict[str, tuple[list[Path], list[str]]]:
    """{component folder name: (sources, REQUIRES)} for the engine, app and main components."""
    script, out = tmp / "idf_stub.cmake", tmp / "idf_components.txt"
    script.write_text(IDF_STUB)
    out.unlink(missing_ok=True)
    dirs = [root / "firmware" / "engine", root / "firmware" / "app", root / "firmware" / "ports" / "esp32s3" / "main"]
    subprocess.run(["cmake", f"-DOUT={out}", f"-DDIRS={';'.join(map(str, dirs))}", "-P", str(script)],
                   capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    res = {}
    for line in out.read_text().splitlines():
        d, srcs, req = line.split("|")
        res[Path(d).name] = ([Path(s).resolve() for s in srcs.split(";") if s], req.split(";"))
    return res


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the build definitions and sources with one new engine file and one new app file,
    each added by one edit: a word on its library's .mk line."""
    root = tmp_path / "tree"
    shutil.copytree(ROOT / "firmware", root / "firmware",
                    ignore=shutil.ignore_patterns("build", "model", "__pycache__"))
    (root / "host" / "pocketgpt").mkdir(parents=True)
    shutil.copy(ROOT / "host" / "pocketgpt" / "srclists.py", root / "host" / "pocketgpt")
    shutil.copy(ROOT / "setup.py", root)
    for mk, var, new in (("engine/engine.mk", "ENGINE_SRCS", NEW_ENGINE), ("app/app.mk", "APP_SRCS", NEW_APP)):
        f = root / "firmware" / mk
        text = f.read_text()
        assert text.count(f"\n{var} := ") == 1
        f.write_text(text.replace(f"\n{var} := ", f"\n{var} := {new} "))
        (f.parent / new).write_text("int pg_unused_symbol_for_the_list_test;\n")
    return root


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cmake") is None, reason="needs make and cmake")
def test_one_edit_to_a_list_reaches_every_build(tree: Path, tmp_path: Path) -> None:
    from pocketgpt.commands import device

    tree = tree.resolve()
    fw = tree / "firmware"
    engine_host = resolved(srclists.engine_sources(fw / "engine", "x86"))
    engine_s3 = resolved(srclists.engine_sources(fw / "engine", "esp32s3"))
    app = resolved(srclists.app_sources(fw / "app"))
    sim = resolved(srclists.sim_sources(fw / "ports" / "posix"))
    assert fw / "engine" / NEW_ENGINE in engine_host and fw / "engine" / NEW_ENGINE in engine_s3
    assert fw / "app" / NEW_APP in app
    assert (fw / "engine" / "kernels_x86.c") in engine_host and (fw / "engine" / "kernels_esp32s3.c") in engine_s3

    # the Makefiles (engine tests and sanitizer builds; the simulator and the app's C tests)
    assert make_srcs(fw / "engine") == engine_host
    assert make_srcs(fw / "ports" / "posix") == sim + engine_host + app
    # `pocketgpt device` builds the same simulator
    assert resolved(device.sources(fw)) == sim + engine_host + app
    # the Python extension
    binding = [tree / "host" / "pocketgpt" / f for f in ("_engine.c", "_engine_session.c", "_engine_pool.c")]
    assert setup_py_sources(tree) == binding + engine_host
    # the ESP-IDF components: the engine with the S3 kernels, the app, and a port that adds neither
    comps = idf_components(tree, tmp_path)
    assert comps["engine"][0] == engine_s3
    assert comps["app"][0] == app and "engine" in comps["app"][1]
    main_srcs, main_req = comps["main"]
    assert main_srcs and all(s.parent == fw / "ports" / "esp32s3" / "main" for s in main_srcs)
    assert {"app", "engine"} <= set(main_req)


def test_tests_and_tools_compile_the_listed_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The C the export and budget tests and tools/xtensa_check.py build is engine.mk's list."""
    import test_budget
    import test_export_c

    engine = ROOT / "firmware" / "engine"
    host = srclists.engine_sources(engine, "x86")
    assert [Path(p) for p in test_export_c.ENGINE_SRC] == host
    assert list(test_budget.ENGINE_SRC) == host

    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import xtensa_check

    cmds: list[list[str]] = []
    monkeypatch.setattr(xtensa_check, "run", lambda cmd, **kw: cmds.append([str(c) for c in cmd]))
    monkeypatch.setattr(xtensa_check, "OUT", tmp_path)
    xtensa_check.build(tmp_path / "no-toolchain")  # the emulated build: compiles each file alone
    emulated = [Path(c[c.index("-c") + 1]) for c in cmds if c[0].endswith("xtensa-esp32s3-elf-gcc") and "-c" in c]
    assert [p for p in emulated if p.parent == engine] == srclists.engine_sources(engine, "esp32s3")
    cmds.clear()
    xtensa_check.build_host(tmp_path)  # the host build of the same harness: one link line
    (link,) = [c for c in cmds if "-DPG_HARNESS_HOST" in c]
    assert [Path(a) for a in link if a.endswith(".c") and Path(a).parent == engine] == host


def test_a_list_line_make_alone_would_read_is_refused(tmp_path: Path) -> None:
    """The .mk lists stay plain lines that CMake and Python read the same way as make."""
    mk = tmp_path / "engine.mk"
    mk.write_text("ENGINE_SRCS := a.c \\\n    b.c\n")
    with pytest.raises(ValueError, match=r"engine.mk:1: not a `NAME := file.c \.\.\.` line"):
        srclists.read_mk(mk)
    mk.write_text("ENGINE_SRCS := $(wildcard *.c)\n")
    with pytest.raises(ValueError, match="engine.mk:1"):
        srclists.read_mk(mk)


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None, reason="needs make and a C compiler")
def test_the_forced_reference_build_compiles_with_warnings_as_errors(tmp_path: Path) -> None:
    """`make ref-build` (-DPG_FORCE_REF: no fast kernels, the switch the engine README offers)
    compiles engine.mk's sources under -Werror; no other test builds that variant."""
    proc = subprocess.run(["make", "-s", "-C", str(ROOT / "firmware" / "engine"), "ref-build", f"BUILD={tmp_path}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    engine = ROOT / "firmware" / "engine"
    assert sorted(p.name for p in tmp_path.glob("*.o")) == sorted(
        p.with_suffix(".o").name for p in srclists.engine_sources(engine))
