#!/usr/bin/env bash
# `make firmware`: the real ESP32-S3 image with ESP-IDF v5.5's own CMake build of the project's
# CMakeLists.txt (bootloader, partition table, app, flasher_args.json in build/firmware).
# Needs a full toolchain in the cache (GCC 14 + newlib + libstdc++ as xtensa-esp32s3-elf-*) and an
# ESP-IDF v5.5 tree with its submodules ($POCKETGPT_IDF, default <cache>/esp-idf). Neither is made
# by tools/esp32s3-toolchain.sh yet (docs/xtensa.md, "The full IDF link", lists the steps); when
# one is missing this prints one line saying what and exits 2. Nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${POCKETGPT_XTENSA_CACHE:-$HOME/.cache/pocketgpt-xtensa}
IDF=${POCKETGPT_IDF:-$CACHE/esp-idf}
missing() { echo "firmware: $1" >&2; exit 2; }

for f in bin/xtensa-esp32s3-elf-gcc bin/xtensa-esp32s3-elf-g++ xtensa-esp32s3-elf/lib/libc.a xtensa-esp32s3-elf/lib/libstdc++.a; do
  [ -e "$CACHE/$f" ] || missing "no full ESP32-S3 toolchain in $CACHE (missing $f: GCC 14 + newlib + libstdc++); tools/esp32s3-toolchain.sh does not build it yet: follow docs/xtensa.md, 'The full IDF link'"
done
[ -f "$IDF/tools/cmake/version.cmake" ] || missing "no ESP-IDF tree at $IDF (set POCKETGPT_IDF); export tag v5.5 with its submodules as docs/xtensa.md says"
ver=$(sed -n 's/^set(IDF_VERSION_\(MAJOR\|MINOR\) \([0-9]*\))/\2/p' "$IDF/tools/cmake/version.cmake" | paste -sd.)
[ "$ver" = "5.5" ] || missing "ESP-IDF at $IDF is $ver, not 5.5; export tag v5.5 there"
command -v ninja >/dev/null || missing "ninja not found; apt-get install ninja-build"

export IDF_PATH=$IDF PATH=$CACHE/bin:$PATH
PY=${PYTHON:-$IDF/venv/bin/python}
[ -x "$PY" ] || missing "no Python with ESP-IDF's requirements at $PY; make it: python3 -m venv $IDF/venv && $IDF/venv/bin/pip install -r $IDF/tools/requirements/requirements.core.txt"
cmake -S . -B build/firmware -G Ninja -DIDF_TARGET=esp32s3 -DPYTHON="$PY" -DPYTHON_DEPS_CHECKED=1
ninja -C build/firmware
"$PY" -m esp_idf_size build/firmware/*.map
