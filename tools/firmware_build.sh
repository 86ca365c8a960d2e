#!/usr/bin/env bash
# `make firmware`: the real ESP32-S3 image with ESP-IDF v5.5's own CMake build of the project's
# CMakeLists.txt: bootloader, partition table, app and flasher_args.json in build/firmware (or
# build/firmware-noradio), then ESP-IDF's size report (esp-idf-size).
#
#   tools/firmware_build.sh [--full | --no-radio]
#
# Needs, in the cache ($POCKETGPT_XTENSA_CACHE, default ~/.cache/pocketgpt-xtensa):
#   toolchain/   GCC 14.2 + newlib + libstdc++ as xtensa-esp32s3-elf-*  (tools/esp32s3-toolchain.sh --newlib)
#   esp-idf/     ESP-IDF v5.5 with its submodules, esp-idf.manifest     (tools/esp-idf-tree.sh)
#   idf-venv/    ESP-IDF's Python requirements                          (tools/esp-idf-tree.sh)
# When one is missing this prints one line saying what and the command that makes it, and exits 2.
# Nothing is downloaded.
#
# Which image: the full one needs esp-lwip, ESP-IDF's Wi-Fi libraries (esp32-wifi-lib) and the Opus
# codec (esp_audio_codec, through the component manager). Where esp-idf.manifest lists one of them
# as missing, the default is the image without radio and voice (POCKETGPT_NO_RADIO=1: the app
# component links port_offline.c instead of the Wi-Fi, network and audio ports), and the line
# before the build names what the full image lacks. --full insists on the full image; --no-radio
# asks for the other one anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${POCKETGPT_XTENSA_CACHE:-$HOME/.cache/pocketgpt-xtensa}
TC=$CACHE/toolchain
IDF=${POCKETGPT_IDF:-$CACHE/esp-idf}
PY=${PYTHON:-$CACHE/idf-venv/bin/python}
MODE=auto
case "${1:-}" in
  --full) MODE=full ;;
  --no-radio) MODE=noradio ;;
  "") ;;
  -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "firmware: unknown argument '$1'; usage: tools/firmware_build.sh [--full | --no-radio]" >&2; exit 2 ;;
esac
missing() { echo "firmware: $1" >&2; exit 2; }

for f in bin/xtensa-esp32s3-elf-gcc bin/xtensa-esp32s3-elf-g++ xtensa-esp32s3-elf/lib/libc.a xtensa-esp32s3-elf/lib/libstdc++.a; do
  [ -e "$TC/$f" ] || missing "no full ESP32-S3 toolchain in $TC (missing $f); make it: tools/esp32s3-toolchain.sh --dynconfig DIR --overlays DIR --esp-idf DIR --newlib DIR (docs/xtensa.md)"
done
[ -f "$IDF/tools/cmake/version.cmake" ] || missing "no ESP-IDF tree at $IDF; make it: tools/esp-idf-tree.sh --esp-idf DIR ... (docs/xtensa.md)"
ver=$(sed -n 's/^set(IDF_VERSION_\(MAJOR\|MINOR\) \([0-9]*\))/\2/p' "$IDF/tools/cmake/version.cmake" | paste -sd.)
[ "$ver" = "5.5" ] || missing "ESP-IDF at $IDF is $ver, not 5.5; rerun tools/esp-idf-tree.sh with an esp-idf clone that has tag v5.5"
[ -x "$PY" ] || missing "no Python with ESP-IDF's requirements at $PY; make it: tools/esp-idf-tree.sh --esp-idf DIR"
command -v ninja >/dev/null || missing "ninja not found; apt-get install ninja-build"
command -v cmake >/dev/null || missing "cmake not found; apt-get install cmake"

# what the full image lacks here: the manifest's MISSING lines, and the archives they stand for
MAN=$CACHE/esp-idf.manifest
lacks=()
if [ -f "$MAN" ]; then
  grep -q '^MISSING esp-lwip' "$MAN" && lacks+=("esp-lwip (components/lwip/lwip)")
  grep -q '^MISSING esp32-wifi-lib' "$MAN" && lacks+=("esp32-wifi-lib: esp32s3/{libcore,libespnow,libmesh,libnet80211,libpp,libsmartconfig,libwapi}.a")
fi
[ -f "$CACHE/esp_audio_codec/lib/esp32s3/libesp_audio_codec.a" ] || lacks+=("esp_audio_codec: lib/esp32s3/libesp_audio_codec.a")
if [ "$MODE" = auto ]; then
  MODE=full
  if [ ${#lacks[@]} -gt 0 ]; then
    MODE=noradio
    echo "firmware: building the image without radio and voice; the full one lacks: $(IFS=';'; echo "${lacks[*]}")" >&2
  fi
elif [ "$MODE" = full ] && [ ${#lacks[@]} -gt 0 ]; then
  missing "the full image cannot be built here; it lacks: $(IFS=';'; echo "${lacks[*]}") (tools/esp-idf-tree.sh --wifi/--lwip/--audio-codec)"
fi

export IDF_PATH=$IDF PATH=$TC/bin:$PATH
if [ "$MODE" = noradio ]; then
  B=build/firmware-noradio
  export POCKETGPT_NO_RADIO=1 IDF_COMPONENT_MANAGER=0
else
  B=build/firmware
  unset POCKETGPT_NO_RADIO
fi
mkdir -p "$B"
# the sdkconfig goes into the build folder (sdkconfig.defaults is the committed source)
DEFAULTS="$PWD/sdkconfig.defaults"
if [ -f "$MAN" ] && grep -q '^mbedtls .*github.com/Mbed-TLS/mbedtls' "$MAN"; then
  # upstream mbedtls instead of IDF's fork: the fork's software GCM for non-AES ciphers
  # (mbedtls_gcm_context_soft, behind IDF's hardware AES-GCM) does not exist upstream
  printf '%s\n' "# tools/firmware_build.sh: ESP-IDF's mbedtls fork is not available here (esp-idf.manifest)" \
    "CONFIG_MBEDTLS_GCM_SUPPORT_NON_AES_CIPHER=n" > "$B/sdkconfig.upstream-mbedtls"
  DEFAULTS="$DEFAULTS;$PWD/$B/sdkconfig.upstream-mbedtls"
  echo "firmware: upstream mbedtls: GCM only with AES (CONFIG_MBEDTLS_GCM_SUPPORT_NON_AES_CIPHER=n)" >&2
fi
if [ ! -f "$B/build.ninja" ]; then
  cmake -S . -B "$B" -G Ninja -DIDF_TARGET=esp32s3 -DPYTHON="$PY" -DPYTHON_DEPS_CHECKED=1 \
    -DSDKCONFIG="$PWD/$B/sdkconfig" -DSDKCONFIG_DEFAULTS="$DEFAULTS" >"$B/configure.log" 2>&1 \
    || { { grep -E 'CMake Error|error' -A3 "$B/configure.log" | head -30; } || true; echo "firmware: ESP-IDF's CMake configure failed; see $B/configure.log" >&2; exit 1; }
  grep -E '^CMake Warning' -A4 "$B/configure.log" | head -40 || true
  # Kconfig's: a symbol of sdkconfig.defaults no component in the build defines is dropped silently
  grep -E '^warning:' "$B/configure.log" | sort -u || true
fi
set +e
ninja -C "$B" -k 0 >"$B/build.log" 2>&1
rc=$?
set -e
# warnings are read, not silenced: every distinct one is listed (ESP-IDF's and ours)
nw=$(grep -c 'warning:' "$B/build.log" || true)
if [ "$nw" -gt 0 ]; then
  echo "firmware: $nw compiler/linker warning lines (all in $B/build.log):"
  { grep 'warning:' "$B/build.log" | sed "s|$IDF/||; s|$PWD/||" | sort | uniq -c | sort -rn | head -40; } || true
fi
if [ $rc -ne 0 ]; then
  { grep -E 'error:|Error|overflowed|too small|FAILED' "$B/build.log" | head -30; } || true   # head may close the pipe
  echo "firmware: the build failed; see $B/build.log" >&2
  exit 1
fi
for f in bootloader/bootloader.bin partition_table/partition-table.bin pocketgpt.bin flasher_args.json; do
  [ -f "$B/$f" ] || { echo "firmware: the build made no $B/$f" >&2; exit 1; }
done
"$PY" -m esp_idf_size "$B/pocketgpt.map" | tee "$B/size.txt"
"$PY" -m esp_idf_size --archives "$B/pocketgpt.map" > "$B/size-archives.txt"
"$PY" -m esp_idf_size --format json "$B/pocketgpt.map" > "$B/size.json"
echo "firmware: $B/{bootloader/bootloader.bin,partition_table/partition-table.bin,pocketgpt.bin,flasher_args.json}$([ "$MODE" = noradio ] && echo ' (no radio, no voice)')"
