#!/usr/bin/env bash
# Assemble ESP-IDF v5.5 with the submodules the pocketgpt app needs, and its Python environment,
# in the cache outside the repository (`make firmware` builds with it). Source trees are given by
# path; nothing is downloaded here except the Python packages (PyPI, through pip).
#
#   tools/esp-idf-tree.sh --esp-idf DIR [--tlsf DIR] [--mbedtls DIR] [--lwip DIR] [--phy DIR]
#                         [--coex DIR] [--micro-ecc DIR] [--mqtt DIR] [--mbedtls-framework DIR]
#                         [--wifi DIR] [--audio-codec DIR] [--cache DIR] [--no-venv]
#
# DIR is a git repository (a bare mirror is fine: the commit is exported with git archive).
#   --esp-idf      github.com/espressif/esp-idf        tag v5.5 = 8c750b088c7c... (examples/ left out)
#   --tlsf         github.com/espressif/tlsf           2867f6883a12 (pinned); else the snapshot's
#                                                      idf branch ba64d19 + tlsf_find_containing_block
#   --mbedtls      github.com/Mbed-TLS/mbedtls         tag v3.6.3 (IDF pins espressif/mbedtls 98ae8db,
#                                                      a v3.6.3 fork)
#   --lwip         github.com/espressif/esp-lwip       ebabd6d79c12 (2.2.0-esp)
#   --phy          github.com/espressif/esp-phy-lib    f6746ceea821
#   --coex         github.com/espressif/esp-coex-lib   c62361f19c98
#   --micro-ecc    github.com/kmackay/micro-ecc        24c60e243580
#   --mqtt         github.com/espressif/esp-mqtt       cac1552e62b0 (not built; ESP-IDF reads its
#                                                      CMakeLists.txt while collecting requirements)
#   --mbedtls-framework github.com/Mbed-TLS/mbedtls-framework  0f274ec05b2e (v3.6.3's pointer); else
#                                                      its newest commit: the library build
#                                                      (GEN_FILES off) reads only its blank CMakeLists.txt
#   --wifi         github.com/espressif/esp32-wifi-lib 8a1b7bbc00e8
#   --audio-codec  github.com/espressif/esp-adf-libs   (its esp_audio_codec folder, version 2.6.0)
# A submodule that is not given, or lacks its commit, is left empty and listed as missing in
# <cache>/esp-idf.manifest; `make firmware` then says which part of the image cannot be built.
#
# Makes: <cache>/esp-idf (the tree), <cache>/esp_audio_codec (the component, when given),
# <cache>/idf-venv (python3 -m venv + requirements.core.txt with tools/esp-idf-v5.5-constraints.txt),
# <cache>/esp-idf.manifest. Idempotent: an existing tree at the same inputs is kept.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${POCKETGPT_XTENSA_CACHE:-$HOME/.cache/pocketgpt-xtensa}
IDF_TAG=v5.5
IDF_COMMIT=8c750b088c7cd857d079c0eeb495da199b359461
TLSF_COMMIT=2867f6883a12920b1969ff9624c0ab0e4185c2ce
TLSF_FALLBACK=ba64d19   # espressif/tlsf branch idf, 2024-09-16: lacks tlsf_find_containing_block
MBEDTLS_TAG=v3.6.3
LWIP_COMMIT=ebabd6d79c120c5d4415755aab1d908d8b5fa372
PHY_COMMIT=f6746ceea821b3800e8700d7e535f5df7304b8e5
COEX_COMMIT=c62361f19c98a448255b53f8d31d3a23597e01e3
UECC_COMMIT=24c60e243580c7868f4334a1ba3123481fe1aa48
WIFI_COMMIT=8a1b7bbc00e895d040c5c9a6fb9d1db2bbfc7958
MQTT_COMMIT=cac1552e62b0474c162547b7cce345d7cd1aecfe
IDF=""; TLSF=""; MBEDTLS=""; MBFW=""; LWIP=""; PHY=""; COEX=""; UECC=""; MQTT=""; WIFI=""; AUDIO=""; VENV=1
USAGE="usage: tools/esp-idf-tree.sh --esp-idf DIR [--tlsf DIR] [--mbedtls DIR] [--mbedtls-framework DIR] [--lwip DIR] [--phy DIR] [--coex DIR] [--micro-ecc DIR] [--mqtt DIR] [--wifi DIR] [--audio-codec DIR] [--cache DIR] [--no-venv]"
die() { echo "esp-idf-tree: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --esp-idf) IDF=${2:-}; shift 2 ;;
    --tlsf) TLSF=${2:-}; shift 2 ;;
    --mbedtls) MBEDTLS=${2:-}; shift 2 ;;
    --lwip) LWIP=${2:-}; shift 2 ;;
    --phy) PHY=${2:-}; shift 2 ;;
    --coex) COEX=${2:-}; shift 2 ;;
    --micro-ecc) UECC=${2:-}; shift 2 ;;
    --mqtt) MQTT=${2:-}; shift 2 ;;
    --mbedtls-framework) MBFW=${2:-}; shift 2 ;;
    --wifi) WIFI=${2:-}; shift 2 ;;
    --audio-codec) AUDIO=${2:-}; shift 2 ;;
    --cache) CACHE=${2:-}; shift 2 ;;
    --no-venv) VENV=0; shift ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1'; $USAGE" ;;
  esac
done
[ -n "$IDF" ] || die "no --esp-idf: give a clone of github.com/espressif/esp-idf with tag $IDF_TAG; $USAGE"
git -C "$IDF" rev-parse --git-dir >/dev/null 2>&1 || die "$IDF is not a git repository; give a clone of github.com/espressif/esp-idf"
got=$(git -C "$IDF" rev-parse "$IDF_TAG^{commit}" 2>/dev/null) || die "$IDF has no tag $IDF_TAG; run: git -C $IDF fetch origin tag $IDF_TAG"
[ "$got" = "$IDF_COMMIT" ] || die "$IDF: $IDF_TAG is $got, expected $IDF_COMMIT"
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
T=$CACHE/esp-idf
MAN=$CACHE/esp-idf.manifest

# git archive of COMMIT from REPO into DEST, leaving out blobs the snapshot lacks (a partial
# mirror); prints the commit, or nothing when the repository lacks it
export_at() {  # repo commit dest
  local repo=$1 want=$2 dest=$3 full missing
  full=$(git -C "$repo" rev-parse --verify -q "$want^{commit}" 2>/dev/null) || return 0
  missing=$(git -C "$repo" rev-list --objects --missing=print "$full^{tree}" 2>/dev/null | sed -n 's/^?//p')
  local ex=()
  if [ -n "$missing" ]; then
    mapfile -t ex < <(git -C "$repo" ls-tree -r "$full" | awk -v m="$missing" \
      'BEGIN { n = split(m, a, "\n"); for (i = 1; i <= n; i++) miss[a[i]] = 1 }
       $2 == "blob" && ($3 in miss) { sub(/^[^\t]*\t/, ""); print ":!" $0 }')
  fi
  rm -rf "$dest" && mkdir -p "$dest"
  git -C "$repo" archive "$full" -- . "${ex[@]}" | tar -x -C "$dest"
  echo "$full${ex:+ (left out, absent from the snapshot: ${ex[*]#:!})}"
}

if [ ! -f "$T/.pocketgpt-idf" ] || [ "$(cat "$T/.pocketgpt-idf")" != "$IDF_COMMIT" ]; then
  rm -rf "$T" && mkdir -p "$T"
  # examples/ holds blobs a partial mirror may lack, and no build needs it
  git -C "$IDF" archive "$IDF_COMMIT" -- . ':!examples' 2>/dev/null | tar -x -C "$T"
  [ -f "$T/tools/cmake/version.cmake" ] || die "exporting $IDF_TAG from $IDF failed"
  echo "$IDF_COMMIT" > "$T/.pocketgpt-idf"
fi
{
  echo "esp-idf $IDF_TAG $IDF_COMMIT (git archive, examples/ left out) -> $T"
} > "$MAN.tmp"

sub() {  # name repo commit path-in-idf url
  local name=$1 repo=$2 want=$3 path=$4 url=$5 got=""
  if [ -n "$repo" ]; then
    git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 || die "$repo is not a git repository (for $name: $url)"
    got=$(export_at "$repo" "$want" "$T/$path")
  fi
  if [ -n "$got" ]; then
    echo "$name $got ($url) -> $path" >> "$MAN.tmp"
    return 0
  fi
  echo "MISSING $name: $url at $want${repo:+ (not in $repo)} -> $path" >> "$MAN.tmp"
  return 1
}

sub esp-phy-lib "$PHY" "$PHY_COMMIT" components/esp_phy/lib github.com/espressif/esp-phy-lib || true
sub esp-coex-lib "$COEX" "$COEX_COMMIT" components/esp_coex/lib github.com/espressif/esp-coex-lib || true
sub micro-ecc "$UECC" "$UECC_COMMIT" components/bootloader/subproject/components/micro-ecc/micro-ecc github.com/kmackay/micro-ecc || true
sub esp-mqtt "$MQTT" "$MQTT_COMMIT" components/mqtt/esp-mqtt github.com/espressif/esp-mqtt || true
sub esp-lwip "$LWIP" "$LWIP_COMMIT" components/lwip/lwip github.com/espressif/esp-lwip || true
sub esp32-wifi-lib "$WIFI" "$WIFI_COMMIT" components/esp_wifi/lib github.com/espressif/esp32-wifi-lib || true

# mbedtls: upstream's release tag of the version IDF's fork is based on
if [ -n "$MBEDTLS" ] && c=$(git -C "$MBEDTLS" rev-parse --verify -q "$MBEDTLS_TAG^{commit}"); then
  got=$(export_at "$MBEDTLS" "$c" "$T/components/mbedtls/mbedtls")
  # upstream's CMakeLists.txt forces C99 on its targets, which IDF's port sources (compiled in
  # those targets: inline asm, static_assert) cannot be; IDF's fork leaves the standard to IDF
  # (-std=gnu17)
  sed -i 's/^set(CMAKE_C_STANDARD 99)$/# pocketgpt: C standard left to ESP-IDF (gnu17), as its fork does/' \
    "$T/components/mbedtls/mbedtls/CMakeLists.txt"
  echo "mbedtls $MBEDTLS_TAG $got (github.com/Mbed-TLS/mbedtls; IDF pins the espressif/mbedtls fork 98ae8db of 3.6.3; CMAKE_C_STANDARD 99 dropped) -> components/mbedtls/mbedtls" >> "$MAN.tmp"
  fw=$(git -C "$MBEDTLS" ls-tree "$c" framework | awk '{print $3}')
  if [ -n "$MBFW" ] && got=$(export_at "$MBFW" "$fw" "$T/components/mbedtls/mbedtls/framework") && [ -n "$got" ]; then
    echo "mbedtls-framework $got (v3.6.3's pointer) -> components/mbedtls/mbedtls/framework" >> "$MAN.tmp"
  elif [ -n "$MBFW" ] && got=$(export_at "$MBFW" HEAD "$T/components/mbedtls/mbedtls/framework") && [ -n "$got" ]; then
    echo "mbedtls-framework SUBSTITUTE $got (v3.6.3 points at $fw, absent; unused by the library build, GEN_FILES off) -> components/mbedtls/mbedtls/framework" >> "$MAN.tmp"
  else
    echo "MISSING mbedtls-framework: github.com/Mbed-TLS/mbedtls-framework at $fw -> components/mbedtls/mbedtls/framework" >> "$MAN.tmp"
  fi
else
  echo "MISSING mbedtls: github.com/Mbed-TLS/mbedtls tag $MBEDTLS_TAG -> components/mbedtls/mbedtls" >> "$MAN.tmp"
fi

# tlsf: the pinned commit, or the snapshot's idf branch with the one function IDF 5.5's
# multi_heap.c needs and that snapshot lacks (written here, from what multi_heap.c expects: the
# start of the used block of a pool that contains a pointer)
TL=$T/components/heap/tlsf
if ! sub tlsf "$TLSF" "$TLSF_COMMIT" components/heap/tlsf github.com/espressif/tlsf; then
  if [ -n "$TLSF" ] && got=$(export_at "$TLSF" "$TLSF_FALLBACK" "$TL") && [ -n "$got" ]; then
    sed -i '$d' "$MAN.tmp"
    grep -q tlsf_find_containing_block "$TL/include/tlsf.h" || {
      sed -i 's|^void tlsf_walk_pool(pool_t pool, tlsf_walker walker, void\* user);|&\n/* pocketgpt: the start of the used block of POOL that contains PTR, or NULL */\nvoid* tlsf_find_containing_block(pool_t pool, void* ptr);|' "$TL/include/tlsf.h"
      cat >> "$TL/tlsf.c" <<'EOF'

/* pocketgpt: ESP-IDF v5.5's multi_heap.c asks which allocation a pointer lies in. Walk the
   pool's blocks as tlsf_walk_pool does and return the used block whose payload holds PTR. */
void* tlsf_find_containing_block(pool_t pool, void* ptr)
{
	const char* p = (const char*)ptr;
	block_header_t* block = offset_to_block(pool, -(int)block_header_overhead);
	for (; block && !block_is_last(block); block = block_next(block))
	{
		const char* start = (const char*)block_to_ptr(block);
		if (!block_is_free(block) && start <= p && p < start + block_size(block))
			return (void*)start;
	}
	return NULL;
}
EOF
    }
    grep -q 'tlsf_find_containing_block(pool_t pool' "$TL/include/tlsf.h" || die "could not declare tlsf_find_containing_block in $TL/include/tlsf.h"
    echo "tlsf SUBSTITUTE $got (github.com/espressif/tlsf branch idf; IDF pins $TLSF_COMMIT, absent) + tlsf_find_containing_block added -> components/heap/tlsf" >> "$MAN.tmp"
  fi
fi

# esp_audio_codec (the app's idf_component.yml dependency, ~2.6.0), as a local component
if [ -n "$AUDIO" ]; then
  got=$(export_at "$AUDIO" HEAD "$CACHE/esp-adf-libs")
  rm -rf "$CACHE/esp_audio_codec" && mv "$CACHE/esp-adf-libs/esp_audio_codec" "$CACHE/esp_audio_codec" && rm -rf "$CACHE/esp-adf-libs"
  v=$(sed -n 's/^version: *//p' "$CACHE/esp_audio_codec/idf_component.yml")
  echo "esp_audio_codec $v from esp-adf-libs $got -> $CACHE/esp_audio_codec" >> "$MAN.tmp"
else
  echo "MISSING esp_audio_codec: github.com/espressif/esp-adf-libs (esp_audio_codec 2.6.0)" >> "$MAN.tmp"
fi

if [ "$VENV" = 1 ]; then
  PY=$CACHE/idf-venv/bin/python
  if [ ! -x "$PY" ] || ! "$PY" -c 'import esp_idf_size, kconfgen, idf_component_manager, esptool' 2>/dev/null; then
    python3 -m venv "$CACHE/idf-venv"
    "$PY" -m pip install -q -r "$T/tools/requirements/requirements.core.txt" \
      -c "$HERE/tools/esp-idf-v5.5-constraints.txt" >"$CACHE/idf-venv.log" 2>&1 \
      || { tail -5 "$CACHE/idf-venv.log"; die "pip install of IDF's requirements failed; see $CACHE/idf-venv.log"; }
  fi
  echo "python $("$PY" -c 'import sys; print(sys.version.split()[0])') venv $CACHE/idf-venv:" \
    "$("$PY" -m pip freeze 2>/dev/null | grep -iE '^(esptool|esp-idf-kconfig|esp-idf-size|idf-component-manager)==' | paste -sd' ')" >> "$MAN.tmp"
fi
mv "$MAN.tmp" "$MAN"
cat "$MAN"
