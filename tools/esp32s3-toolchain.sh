#!/usr/bin/env bash
# Build the ESP32-S3 instruction-set toolchain into a cache outside the repository, from Debian
# packages and from source trees given by path. Never downloads a prebuilt toolchain.
#
#   tools/esp32s3-toolchain.sh --dynconfig DIR --overlays DIR --esp-idf DIR [--newlib DIR]
#                              [--cache DIR] [--no-qemu] [--jobs N]
#
# DIR is a git repository (a bare mirror is fine; the pinned commit is exported with git archive)
# or a plain tree at that commit:
#   --dynconfig  github.com/espressif/xtensa-dynconfig   905b913aa65638be53ac22029c379fa16dab31db
#   --overlays   github.com/espressif/xtensa-overlays    dd1cf19f6eb327a9db51043439974a6de13f5c7f
#   --esp-idf    github.com/espressif/esp-idf            tag v5.5 (only core-matmap.h of the S3 is read)
#   --newlib     github.com/espressif/newlib-esp32       tag esp-4.3.0_20240322 (7cdcb0b0848a...)
#                given: also build the full GCC 14.2 toolchain (C, C++, newlib, libstdc++) that
#                ESP-IDF's build needs, into toolchain/ (60-90 min on 2 cores, nice 19, resumable)
# The same can be given as POCKETGPT_XTENSA_DYNCONFIG / _OVERLAYS / _ESP_IDF / _NEWLIB.
#
# What it makes under the cache (default ~/.cache/pocketgpt-xtensa, or $POCKETGPT_XTENSA_CACHE):
#   lib/esp32s3.so          the S3 core plugin (XTENSA_GNU_CONFIG) for binutils and GCC
#   bin/xtensa-esp32s3-elf-{gcc,as,ld,objdump,nm,objcopy,readelf,size,ar}
#                           Debian bookworm's binutils-xtensa-lx106 2.40 and Debian trixie's
#                           gcc-xtensa-lx106 13.3 (its cc1 runs on trixie's glibc, unpacked here)
#                           with the plugin set: ESP32-S3 windowed code, FPU, MAC16, PIE mnemonics
#   bin/qemu-system-xtensa  Debian's QEMU 7.2 source with an "esp32s3" core imported (TCG plugins on)
#   toolchain/bin/xtensa-esp32s3-elf-{gcc,g++,cpp,ar,ranlib,as,ld,objcopy,...}
#                           (with --newlib) GCC 14.2.0 from trixie's gcc-14-source with the
#                           overlay's xtensa-config.h (+ GCC 14's macros from IDF's core-isa.h),
#                           Espressif's newlib 4.3 and libstdc++; binutils as above
#   manifest.txt            what was used: package versions, commits, build times
#
# Debian packages come through a private apt configuration under the cache (its own sources list,
# state and archives): the system's apt never sees trixie and nothing is installed system-wide.
# Needs: apt-get, dpkg-deb, git, cc, make; for QEMU also ninja, meson's Python, libglib2.0-dev,
# libpixman-1-dev, libfdt-dev (bookworm packages). Idempotent: finished steps are skipped.
set -euo pipefail

DYNCONFIG_COMMIT=905b913aa65638be53ac22029c379fa16dab31db
OVERLAYS_COMMIT=dd1cf19f6eb327a9db51043439974a6de13f5c7f
IDF_TAG=v5.5
IDF_COMMIT=8c750b088c7cd857d079c0eeb495da199b359461
GCC_DEB=gcc-xtensa-lx106=13.3.0-16+14+b4
BINUTILS_DEB=binutils-xtensa-lx106=2.40-2+5+b1
QEMU_SRC=qemu=1:7.2+dfsg-7+deb12u18
GCC_SRC_DEB=gcc-14-source=14.2.0-19
GCC_TARBALL=gcc-14.2.0-dfsg.tar.xz
NEWLIB_TAG=esp-4.3.0_20240322
NEWLIB_COMMIT=7cdcb0b0848a5d909e906834fe81903ba9466c90
TARGET=xtensa-esp32s3-elf
TRIXIE_LIBS="libc6 libstdc++6 libgcc-s1 libgmp10 libmpfr6 libmpc3 libisl23 libzstd1 zlib1g"
TRIXIE_KEY=/usr/share/keyrings/debian-archive-trixie-stable.gpg
BOOKWORM_KEY=/usr/share/keyrings/debian-archive-bookworm-stable.gpg
HERE=$(cd "$(dirname "$0")/.." && pwd)

CACHE=${POCKETGPT_XTENSA_CACHE:-$HOME/.cache/pocketgpt-xtensa}
DYNCONFIG=${POCKETGPT_XTENSA_DYNCONFIG:-}
OVERLAYS=${POCKETGPT_XTENSA_OVERLAYS:-}
ESP_IDF=${POCKETGPT_XTENSA_ESP_IDF:-}
NEWLIB=${POCKETGPT_XTENSA_NEWLIB:-}
QEMU=1
JOBS=$(nproc)
USAGE="usage: tools/esp32s3-toolchain.sh --dynconfig DIR --overlays DIR --esp-idf DIR [--newlib DIR] [--cache DIR] [--no-qemu] [--jobs N]"

die() { echo "esp32s3-toolchain: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dynconfig) DYNCONFIG=${2:-}; shift 2 ;;
    --overlays) OVERLAYS=${2:-}; shift 2 ;;
    --esp-idf) ESP_IDF=${2:-}; shift 2 ;;
    --newlib) NEWLIB=${2:-}; shift 2 ;;
    --cache) CACHE=${2:-}; shift 2 ;;
    --no-qemu) QEMU=0; shift ;;
    --jobs) JOBS=${2:-}; shift 2 ;;
    -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1'; $USAGE" ;;
  esac
done
[ -n "$DYNCONFIG" ] || die "no --dynconfig: give a clone of github.com/espressif/xtensa-dynconfig at $DYNCONFIG_COMMIT; $USAGE"
[ -n "$OVERLAYS" ] || die "no --overlays: give a clone of github.com/espressif/xtensa-overlays at $OVERLAYS_COMMIT; $USAGE"
[ -n "$ESP_IDF" ] || die "no --esp-idf: give a clone of github.com/espressif/esp-idf with tag $IDF_TAG; $USAGE"
for t in apt-get dpkg-deb git cc make tar; do command -v $t >/dev/null || die "'$t' not found; install it (apt-get install $t)"; done

mkdir -p "$CACHE"/{debs,src,build,lib,bin,stamps}
CACHE=$(cd "$CACHE" && pwd)
LOG=$CACHE/build/last.log
step_done() { [ -f "$CACHE/stamps/$1" ]; }
mark() { date -u +%FT%TZ > "$CACHE/stamps/$1"; }
timed() { local t0; t0=$(date +%s); "$@"; echo $(( $(date +%s) - t0 )); }

# export a tree at a pinned commit: git repository -> git archive; plain tree -> copied as is
# (its commit cannot be checked: said in the manifest)
export_tree() {  # src commit dest [paths...]
  local src=$1 want=$2 dest=$3; shift 3
  [ -d "$src" ] || die "$src: no such folder"
  rm -rf "$dest"; mkdir -p "$dest"
  if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$src" cat-file -e "$want^{commit}" 2>/dev/null \
      || die "$src lacks commit $want; run: git -C $src fetch origin && git -C $src checkout $want"
    git -C "$src" archive "$want" "$@" | tar -x -C "$dest"
    echo "$want"
  else
    cp -a "$src"/. "$dest"/
    echo "plain-tree(unchecked)"
  fi
}

# -- 1. Debian packages, through a private apt configuration ---------------------------------
APT=$CACHE/apt
aptp() {
  apt-get -q -o Dir::Etc="$APT/etc" -o Dir::Etc::SourceList="$APT/etc/sources.list" \
    -o Dir::Etc::SourceParts="$APT/etc/sources.list.d" -o Dir::Etc::Parts="$APT/etc/apt.conf.d" \
    -o Dir::Etc::PreferencesParts="$APT/etc/preferences.d" -o Dir::Etc::Preferences="$APT/etc/preferences" \
    -o Dir::State="$APT/state" -o Dir::State::status="$APT/state/status" -o Dir::Cache="$APT/cache" \
    -o APT::Architecture=amd64 -o APT::Architectures::=amd64 -o APT::Sandbox::User=root "$@"
}
if ! step_done debs; then
  for k in "$TRIXIE_KEY" "$BOOKWORM_KEY"; do
    [ -f "$k" ] || die "$k missing; install Debian's archive keyring: apt-get install debian-archive-keyring"
  done
  mkdir -p "$APT"/etc/{apt.conf.d,preferences.d,sources.list.d} "$APT"/state/lists/partial "$APT"/cache/archives/partial
  : > "$APT/state/status"
  cat > "$APT/etc/sources.list" <<EOF
deb [signed-by=$TRIXIE_KEY] http://deb.debian.org/debian trixie main
deb [signed-by=$BOOKWORM_KEY] http://deb.debian.org/debian bookworm main
deb-src [signed-by=$BOOKWORM_KEY] http://deb.debian.org/debian bookworm main
EOF
  aptp update >"$LOG" 2>&1 || { tail -5 "$LOG"; die "apt update (private trixie/bookworm lists) failed; see $LOG"; }
  rm -f "$CACHE"/debs/*.deb
  # bookworm's binutils (runs on this glibc); trixie's GCC and the runtime its cc1 needs
  (cd "$CACHE/debs" && aptp download "$BINUTILS_DEB" >>"$LOG" 2>&1 \
      -o APT::Default-Release=bookworm) || die "apt-get download $BINUTILS_DEB failed; see $LOG"
  (cd "$CACHE/debs" && aptp download "$GCC_DEB" >>"$LOG" 2>&1) || die "apt-get download $GCC_DEB failed; see $LOG"
  for p in $TRIXIE_LIBS; do
    (cd "$CACHE/debs" && aptp download "$p/trixie" >>"$LOG" 2>&1) || die "apt-get download $p/trixie failed; see $LOG"
  done
  mark debs
fi

if ! step_done unpack; then
  rm -rf "$CACHE/root"; mkdir -p "$CACHE/root"
  for d in "$CACHE"/debs/*.deb; do dpkg-deb -x "$d" "$CACHE/root"; done
  mark unpack
fi
ROOT=$CACHE/root
LIBDIR=$ROOT/usr/lib/x86_64-linux-gnu
LOADER=$LIBDIR/ld-linux-x86-64.so.2
GCCDIR=$(ls -d "$ROOT"/usr/lib/gcc/xtensa-lx106-elf/* | head -1)
[ -x "$GCCDIR/cc1" ] || die "$GCCDIR/cc1 missing after unpacking; remove $CACHE/stamps/debs and rerun"

# -- 2. the core plugin (xtensa-dynconfig + the overlay's xtensa_esp32s3) ----------------------
if ! step_done plugin; then
  B=$CACHE/build/dynconfig
  got_dyn=$(export_tree "$DYNCONFIG" "$DYNCONFIG_COMMIT" "$B")
  got_ovl=$(export_tree "$OVERLAYS" "$OVERLAYS_COMMIT" "$CACHE/build/overlays" xtensa_esp32s3)
  [ -d "$CACHE/build/overlays/xtensa_esp32s3" ] || die "$OVERLAYS has no xtensa_esp32s3 folder (wrong repository?)"
  mkdir -p "$B/config" && cp -a "$CACHE/build/overlays/xtensa_esp32s3" "$B/config/esp32s3"
  (cd "$B/config" && sh ../scripts/fix-known-overlay-issues.sh) >"$LOG" 2>&1
  (cd "$B" && make esp32s3.so) >>"$LOG" 2>&1 || { tail -5 "$LOG"; die "plugin build failed; see $LOG"; }
  cp "$B/esp32s3.so" "$CACHE/lib/esp32s3.so"
  printf 'xtensa-dynconfig %s\nxtensa-overlays %s\n' "$got_dyn" "$got_ovl" > "$CACHE/build/plugin.sources"
  mark plugin
fi

# -- 3. wrappers: xtensa-esp32s3-elf-* --------------------------------------------------------
if ! step_done wrappers; then
  for t in as ld objdump nm objcopy readelf size ar ranlib strip strings addr2line c++filt; do
    cat > "$CACHE/bin/xtensa-esp32s3-elf-$t" <<EOF
#!/bin/sh
XTENSA_GNU_CONFIG="$CACHE/lib/esp32s3.so" exec "$ROOT/usr/bin/xtensa-lx106-elf-$t" "\$@"
EOF
  done
  # the driver and cc1 are trixie binaries: start them through trixie's loader; -B makes the
  # driver find the cc1 and as wrappers first
  mkdir -p "$CACHE/libexec"
  cat > "$CACHE/libexec/cc1" <<EOF
#!/bin/sh
exec "$LOADER" --library-path "$LIBDIR" "$GCCDIR/cc1" "\$@"
EOF
  cp "$CACHE/bin/xtensa-esp32s3-elf-as" "$CACHE/libexec/as"
  cat > "$CACHE/bin/xtensa-esp32s3-elf-gcc" <<EOF
#!/bin/sh
XTENSA_GNU_CONFIG="$CACHE/lib/esp32s3.so" exec "$LOADER" --library-path "$LIBDIR" \\
  "$ROOT/usr/bin/xtensa-lx106-elf-gcc" -B"$CACHE/libexec/" "\$@"
EOF
  chmod +x "$CACHE"/bin/* "$CACHE"/libexec/*
  mark wrappers
fi

# -- 4. QEMU 7.2 (Debian's source) with the S3 core ----------------------------------------------
if [ "$QEMU" = 1 ] && ! step_done qemu; then
  for t in ninja python3 pkg-config; do command -v $t >/dev/null || die "'$t' not found; apt-get install ninja-build python3 pkg-config"; done
  for p in glib-2.0 pixman-1; do
    pkg-config --exists $p || die "$p development files missing; apt-get install libglib2.0-dev libpixman-1-dev libfdt-dev"
  done
  [ -f /usr/include/libfdt.h ] || die "libfdt development files missing; apt-get install libfdt-dev"
  if ! ls "$CACHE"/src/qemu_7.2+dfsg.orig.tar.xz >/dev/null 2>&1; then
    (cd "$CACHE/src" && aptp source --download-only "$QEMU_SRC" >"$LOG" 2>&1) \
      || die "apt-get source $QEMU_SRC failed; see $LOG"
  fi
  Q=$CACHE/src/qemu-7.2.0
  QB=$CACHE/build/qemu
  # resumable: an interrupted build continues where it stopped (ninja); a fresh one starts from
  # the tarball
  if [ ! -f "$Q/target/xtensa/core-esp32s3.c" ]; then
    rm -rf "$Q" "$QB" && tar -xf "$CACHE/src/qemu_7.2+dfsg.orig.tar.xz" -C "$CACHE/src"
    # the overlay archive import_core.sh reads: the overlay's core-isa.h, gdb and binutils tables,
    # and ESP-IDF's core-matmap.h (the overlay has no matmap)
    O=$CACHE/build/overlay-tar
    rm -rf "$O" && mkdir -p "$O"/xtensa/config "$O"/gdb "$O"/binutils
    S3=$CACHE/build/dynconfig/config/esp32s3
    cp "$S3/newlib/newlib/libc/sys/xtensa/include/xtensa/config/core-isa.h" "$O/xtensa/config/"
    cp "$S3/gdb/gdb/xtensa-config.c" "$O/gdb/"
    cp "$S3/binutils/bfd/xtensa-modules.c" "$O/binutils/"
    MATMAP=components/xtensa/esp32s3/include/xtensa/config/core-matmap.h
    if git -C "$ESP_IDF" rev-parse --git-dir >/dev/null 2>&1; then
      got=$(git -C "$ESP_IDF" rev-parse "$IDF_TAG^{commit}" 2>/dev/null) \
        || die "$ESP_IDF has no tag $IDF_TAG; run: git -C $ESP_IDF fetch origin tag $IDF_TAG"
      [ "$got" = "$IDF_COMMIT" ] || die "$ESP_IDF: $IDF_TAG is $got, expected $IDF_COMMIT; fetch the real tag"
      git -C "$ESP_IDF" show "$IDF_TAG:$MATMAP" > "$O/xtensa/config/core-matmap.h"
      echo "esp-idf $IDF_TAG $got ($MATMAP)" > "$CACHE/build/idf.sources"
    else
      [ -f "$ESP_IDF/$MATMAP" ] || die "$ESP_IDF/$MATMAP missing; give an esp-idf $IDF_TAG tree"
      cp "$ESP_IDF/$MATMAP" "$O/xtensa/config/"
      echo "esp-idf plain-tree(unchecked) ($MATMAP)" > "$CACHE/build/idf.sources"
    fi
    tar -czf "$CACHE/build/esp32s3-overlay.tar.gz" -C "$O" xtensa gdb binutils
    (cd "$Q" && target/xtensa/import_core.sh "$CACHE/build/esp32s3-overlay.tar.gz" esp32s3 240000) >"$LOG" 2>&1
  fi
  # import_core.sh registers only the core opcodes: give the S3 core the FPU's translators too
  # (its core-isa.h says DFPU, single precision only: QEMU's xtensa_fpu_opcodes), as QEMU's own
  # de233_fpu core does; otherwise every float instruction traps as illegal
  grep -q opcode_translators "$Q/target/xtensa/core-esp32s3.c" || sed -i \
    's|^    DEFAULT_SECTIONS$|    .opcode_translators = (const XtensaOpcodeTranslators *[]){\n        \&xtensa_core_opcodes, \&xtensa_fpu_opcodes, NULL,\n    },\n    DEFAULT_SECTIONS|' \
    "$Q/target/xtensa/core-esp32s3.c"
  t0=$(date +%s)
  if [ ! -f "$QB/build.ninja" ]; then
    rm -rf "$QB" "$CACHE/build/qemu.time" && mkdir -p "$QB"
    (cd "$QB" && nice -n 10 "$Q/configure" --target-list=xtensa-softmmu --without-default-features \
        --enable-tcg --enable-plugins --enable-fdt=system --disable-docs --disable-werror \
        --disable-install-blobs) >>"$LOG" 2>&1 || { tail -5 "$LOG"; die "QEMU configure failed; see $LOG"; }
  fi
  (cd "$QB" && nice -n 10 ninja -j"$(nproc)" qemu-system-xtensa) >>"$LOG" 2>&1 \
    || { tail -5 "$LOG"; die "QEMU build failed; see $LOG"; }
  [ -f "$CACHE/build/qemu.time" ] || echo "qemu-build-seconds $(( $(date +%s) - t0 )) (configure + ninja, nice 10, $(nproc) jobs)" > "$CACHE/build/qemu.time"
  cmp -s "$QB/qemu-system-xtensa" "$CACHE/bin/qemu-system-xtensa" || cp "$QB/qemu-system-xtensa" "$CACHE/bin/qemu-system-xtensa"
  mkdir -p "$CACHE/include" && cp "$Q/include/qemu/qemu-plugin.h" "$CACHE/include/"
  mark qemu
fi

# -- 5. the full toolchain for ESP-IDF: GCC 14.2 + newlib 4.3 (Espressif) + libstdc++ -----------
# One combined build (newlib linked into the GCC tree; no libgloss: IDF has the syscalls), the binutils above as the
# target's assembler and linker. Long (60-90 min on 2 cores): run at nice 19, log in
# build/gcc.log; a rerun continues the interrupted make where it stopped.
TC=$CACHE/toolchain
if [ -n "$NEWLIB" ] && ! step_done gcc; then
  for t in autoreconf2.69 automake; do
    command -v $t >/dev/null || die "'$t' not found; apt-get install autoconf2.69 automake"
  done
  for h in gmp.h mpfr.h mpc.h; do
    [ -f /usr/include/$h ] || [ -f /usr/include/x86_64-linux-gnu/$h ] \
      || die "$h missing; apt-get install libgmp-dev libmpfr-dev libmpc-dev"
  done
  GLOG=$CACHE/build/gcc.log
  # GCC: the upstream 14.2.0 tarball inside trixie's gcc-14-source (Debian's own patches are
  # for Debian's native compilers and are not applied)
  GSRC=$CACHE/src/gcc-14.2.0
  if [ ! -f "$CACHE/src/gcc14/$GCC_TARBALL" ]; then
    mkdir -p "$CACHE/src/gcc14"
    (cd "$CACHE/src/gcc14" && rm -f gcc-14-source_*.deb && aptp download "$GCC_SRC_DEB" >"$LOG" 2>&1) \
      || die "apt-get download $GCC_SRC_DEB failed; see $LOG"
    rm -rf "$CACHE/src/gcc14/deb" && dpkg-deb -x "$CACHE"/src/gcc14/gcc-14-source_*.deb "$CACHE/src/gcc14/deb"
    mv "$CACHE/src/gcc14/deb/usr/src/gcc-14/$GCC_TARBALL" "$CACHE/src/gcc14/" && rm -rf "$CACHE/src/gcc14/deb"
  fi
  if [ ! -f "$CACHE/stamps/gcc-src" ]; then
    rm -rf "$GSRC" "$CACHE/build/gcc" && tar -xf "$CACHE/src/gcc14/$GCC_TARBALL" -C "$CACHE/src"
    [ -f "$GSRC/gcc/BASE-VER" ] && [ "$(cat "$GSRC/gcc/BASE-VER")" = 14.2.0 ] \
      || die "$GCC_TARBALL is not GCC 14.2.0; remove $CACHE/src/gcc14 and rerun"
    # newlib: the pinned tag. The snapshot may lack newlib/Makefile.in (over 4 MiB): left out of
    # the export and regenerated with autoconf 2.69 / automake, as newlib's maintainers do
    NL=$CACHE/src/newlib-esp32
    got_nl=$(export_tree "$NEWLIB" "$NEWLIB_COMMIT" "$NL" -- . ':!newlib/Makefile.in')
    [ -f "$NL/newlib/libc/include/sys/reent.h" ] || die "$NEWLIB is not a newlib tree (no newlib/libc/include/sys/reent.h)"
    # IDF's newlib component needs newlib 4.3's global __sglue (its sys/reent.h builds
    # _REENT_SDIDINIT on it); Debian's newlib 3.3 has neither
    grep -q 'extern struct _glue __sglue' "$NL/newlib/libc/include/sys/reent.h" \
      || die "$NEWLIB lacks the global __sglue (not Espressif's newlib at $NEWLIB_TAG); give github.com/espressif/newlib-esp32"
    if [ ! -f "$NL/newlib/Makefile.in" ]; then
      (cd "$NL/newlib" && AUTOCONF=autoconf2.69 AUTOHEADER=autoheader2.69 AUTOM4TE=autom4te2.69 \
        autoreconf2.69 -f) >"$LOG" 2>&1 || { tail -5 "$LOG"; die "regenerating newlib/Makefile.in failed; see $LOG"; }
      echo "newlib/Makefile.in regenerated with $(autoconf2.69 --version | head -1), $(automake --version | head -1)" > "$CACHE/build/newlib.regen"
    fi
    ln -sfn "$NL/newlib" "$GSRC/newlib"
    # the S3's configuration: the overlay's xtensa-config.h, plus the macros GCC 14 reads that
    # the overlay (written for older GCC) lacks, with the values of IDF's S3 core-isa.h;
    # otherwise GCC 14 assumes no CLAMPS and strict alignment
    S3=$CACHE/build/dynconfig/config/esp32s3
    cp "$S3/gcc/include/xtensa-config.h" "$GSRC/include/xtensa-config.h"
    cat >> "$GSRC/include/xtensa-config.h" <<'EOF'

/* pocketgpt: GCC 14's xtensa macros the overlay lacks, as in ESP-IDF v5.5's
   components/xtensa/esp32s3/include/xtensa/config/core-isa.h */
#undef XCHAL_HAVE_CLAMPS
#define XCHAL_HAVE_CLAMPS 1
#undef XCHAL_HAVE_DEPBITS
#define XCHAL_HAVE_DEPBITS 0
#undef XCHAL_HAVE_EXCLUSIVE
#define XCHAL_HAVE_EXCLUSIVE 0
#undef XCHAL_HAVE_XEA3
#define XCHAL_HAVE_XEA3 0
#undef XCHAL_HAVE_DFP
#define XCHAL_HAVE_DFP 0
#undef XCHAL_DATA_WIDTH
#define XCHAL_DATA_WIDTH 16
#undef XCHAL_UNALIGNED_LOAD_EXCEPTION
#define XCHAL_UNALIGNED_LOAD_EXCEPTION 0
#undef XCHAL_UNALIGNED_STORE_EXCEPTION
#define XCHAL_UNALIGNED_STORE_EXCEPTION 0
#undef XCHAL_UNALIGNED_LOAD_HW
#define XCHAL_UNALIGNED_LOAD_HW 1
#undef XCHAL_UNALIGNED_STORE_HW
#define XCHAL_UNALIGNED_STORE_HW 1
EOF
    # ESP-IDF adds -mdisable-hardware-atomics when PSRAM is on (S32C1I does not work on external
    # RAM; CONFIG_STDATOMIC_S32C1I_SPIRAM_WORKAROUND, a hidden option that follows SPIRAM). The
    # option is Espressif's, not upstream GCC's: give GCC 14 the same switch. With it the atomic
    # builtins are not expanded inline with S32C1I but call __atomic_*/__sync_* functions, which
    # IDF's newlib component provides (checking whether the address is in PSRAM).
    X=$GSRC/gcc/config/xtensa
    grep -q mdisable-hardware-atomics "$X/xtensa.opt" || cat >> "$X/xtensa.opt" <<'EOF'

mdisable-hardware-atomics
Target Mask(DISABLE_HARDWARE_ATOMICS)
Do not use the S32C1I instruction for atomic operations; call library functions instead.
EOF
    sed -i 's/^#define TARGET_S32C1I\t\tXCHAL_HAVE_S32C1I$/#define TARGET_S32C1I\t\t(XCHAL_HAVE_S32C1I \&\& !TARGET_DISABLE_HARDWARE_ATOMICS)/' "$X/xtensa.h"
    grep -q 'TARGET_DISABLE_HARDWARE_ATOMICS)' "$X/xtensa.h" || die "could not add -mdisable-hardware-atomics to $X/xtensa.h (GCC changed?)"
    printf 'gcc %s (%s from Debian trixie %s)\nnewlib-esp32 %s %s\n' "$(cat "$GSRC/gcc/BASE-VER")" \
      "$GCC_TARBALL" "$GCC_SRC_DEB" "$NEWLIB_TAG" "$got_nl" > "$CACHE/build/gcc.sources"
    [ -f "$CACHE/build/newlib.regen" ] && cat "$CACHE/build/newlib.regen" >> "$CACHE/build/gcc.sources"
    mark gcc-src
  fi
  # binutils for the toolchain: the plugin wrappers, under the target's names, in toolchain/bin
  mkdir -p "$TC/bin"
  for t in as ld objdump nm objcopy readelf size ar ranlib strip strings addr2line c++filt; do
    cat > "$TC/bin/$TARGET-$t" <<EOF
#!/bin/sh
XTENSA_GNU_CONFIG="$CACHE/lib/esp32s3.so" exec "$ROOT/usr/bin/xtensa-lx106-elf-$t" "\$@"
EOF
    chmod +x "$TC/bin/$TARGET-$t"
  done
  GB=$CACHE/build/gcc
  export PATH="$TC/bin:$PATH"
  TFLAGS="-O2 -g -mlongcalls -ffunction-sections -fdata-sections"
  # newlib 4.3 predates GCC 14, which made C's implicit declarations (getentropyr.c calls
  # _getentropy undeclared) and int/pointer mixes errors; -fpermissive makes them warnings again
  # (C only: the C++ flags stay strict). Also given to make, so a resumed build uses it.
  TCFLAGS="$TFLAGS -fpermissive"
  t0=$(date +%s)
  # configure once; when the flags below change, the top level is configured again in place (the
  # finished host and target parts stay)
  # newlib's headers where a cross GCC looks for the target's own (<tooldir>/sys-include), before
  # GCC is built: GCC's limits.h then chains to newlib's (PATH_MAX, ...) instead of standing
  # alone, which newlib's POSIX directory and ESP-IDF need
  if [ ! -e "$TC/$TARGET/sys-include/limits.h" ]; then
    mkdir -p "$TC/$TARGET" && rm -rf "$TC/$TARGET/sys-include"
    cp -a "$CACHE/src/newlib-esp32/newlib/libc/include" "$TC/$TARGET/sys-include"
  fi
  if [ ! -f "$GB/Makefile" ] || ! grep -q -- '--disable-libstdcxx-verbose --enable-threads=posix --enable-newlib-retargetable-locking' "$GB/config.status"; then
    [ -f "$GB/Makefile" ] || { rm -rf "$GB" && mkdir -p "$GB"; }
    echo "configure $(date -u +%FT%TZ)" >> "$GLOG"
    (cd "$GB" && nice -n 19 "$GSRC/configure" --target=$TARGET --prefix="$TC" \
        --with-as="$TC/bin/$TARGET-as" --with-ld="$TC/bin/$TARGET-ld" --with-gnu-as --with-gnu-ld \
        --enable-languages=c,c++ --with-newlib --disable-shared --disable-multilib --disable-nls \
        --disable-lto --without-isl --disable-libssp --disable-libgomp --disable-libquadmath \
        --disable-libstdcxx-pch --disable-libstdcxx-verbose --enable-threads=posix \
        --enable-newlib-retargetable-locking --enable-newlib-reent-small \
        --enable-newlib-reent-binary-compat --disable-newlib-supplied-syscalls \
        --enable-newlib-nano-malloc --enable-newlib-io-c99-formats --enable-newlib-io-long-long \
        --enable-newlib-io-float --enable-newlib-io-pos-args --disable-newlib-wide-orient \
        --enable-newlib-iconv --with-pkgversion="pocketgpt esp32s3 14.2.0" \
        CFLAGS="-O2 -g0" CXXFLAGS="-O2 -g0" \
        CFLAGS_FOR_TARGET="$TCFLAGS" CXXFLAGS_FOR_TARGET="$TFLAGS") >>"$GLOG" 2>&1 \
      || { tail -5 "$GLOG"; die "GCC configure failed; see $GLOG"; }
  fi
  # Debian's -dfsg tarball replaces the GFDL manuals, gcc/doc/tm.texi.in among them, with a
  # one-line placeholder; the check that the target hooks are documented there (s-tm-texi) then
  # fails. Nothing is documented in this build (MAKEINFO=true): skip that check.
  if grep -q 'non DFSG free' "$GSRC/gcc/doc/tm.texi.in"; then
    for mf in "$GSRC/gcc/Makefile.in" "$GB/gcc/Makefile"; do
      [ -f "$mf" ] && sed -i 's|^s-tm-texi: build/genhooks|s-tm-texi-dfsg-skipped: build/genhooks|' "$mf"
    done
  fi
  # newlib at esp-4.3.0_20240322 declares no reader/writer locks (_POSIX_READER_WRITER_LOCKS
  # unset), but GCC 14's gthr-posix.h (libgcc, C) wraps pthread_rwlock_*, and ESP-IDF v5.5's
  # pthread component implements them against newlib's pthread_rwlock_t. Espressif's later newlib
  # enables them in its Espressif block of sys/features.h; do the same (newlib implements none).
  FEAT=$CACHE/src/newlib-esp32/newlib/libc/include/sys/features.h
  if ! grep -q 'pocketgpt: reader/writer locks' "$FEAT"; then
    grep -q '^/\* ~Espressif-specific \*/' "$FEAT" || die "$FEAT has no Espressif block (not newlib-esp32 $NEWLIB_TAG?)"
    sed -i 's|^/\* ~Espressif-specific \*/|/* pocketgpt: reader/writer locks, implemented by ESP-IDF'"'"'s pthread component */\n#define _POSIX_READER_WRITER_LOCKS              200112L\n&|' "$FEAT"
  fi
  # The regenerated newlib/Makefile.in (automake 1.16) names per-library objects a-*.o, where the
  # hand-written MATHOBJS_IN_LIBC list (the libm objects libc.a also carries) says libm_a-*.o as
  # automake 1.15 named them: make the list match the names the rules produce.
  for mf in "$CACHE/src/newlib-esp32/newlib/Makefile.in" "$GB/$TARGET/newlib/Makefile"; do
    if [ -f "$mf" ] && grep -q 'libm/common/a-s_fpclassify\.o' "$mf" && grep -q '^	libm_a-s_fpclassify' "$mf"; then
      sed -i '/^MATHOBJS_IN_LIBC = /,/^$/ s/libm_a-/a-/g' "$mf"
      rm -f "$GB/$TARGET/newlib/stamp-libc-math-objects"   # extracted under the old names: again
    fi
  done
  # libgloss is not built: ESP-IDF supplies the system calls, and its libnosys does not compile
  # for this target (dir.c needs a <dirent.h> newlib leaves to the platform). A tree configured
  # with it is reconfigured without it (the finished parts stay).
  if [ -L "$GSRC/libgloss" ]; then
    rm -f "$GSRC/libgloss" && rm -rf "$GB/$TARGET/libgloss"
    [ -f "$GB/config.status" ] && (cd "$GB" && ./config.status --recheck && ./config.status) >>"$GLOG" 2>&1
  fi
  # Espressif's newlib selects its ESP system directory (sys/esp: dirent.h, the POSIX directory,
  # -D_NO_GLOB ...) for Espressif's own target name, xtensa-esp-elf ("*-esp-*"); this toolchain
  # is xtensa-esp32s3-elf, the name ESP-IDF calls: let that name select it too.
  CH=$CACHE/src/newlib-esp32/newlib/configure.host
  if grep -q '^  \*-esp-\*)$' "$CH"; then
    sed -i 's/^  \*-esp-\*)$/  *-esp-* | *-esp32*-*)/' "$CH"
    rm -rf "$GB/$TARGET/newlib"   # configured without it: configure and build newlib again
  fi
  echo "make start $(date -u +%FT%TZ) jobs $JOBS" >> "$GLOG"
  (cd "$GB" && nice -n 19 make -j"$JOBS" MAKEINFO=true CFLAGS_FOR_TARGET="$TCFLAGS" all) >>"$GLOG" 2>&1 \
    || { tail -15 "$GLOG"; die "GCC build failed; see $GLOG (a rerun continues it)"; }
  (cd "$GB" && nice -n 19 make MAKEINFO=true CFLAGS_FOR_TARGET="$TCFLAGS" install) >>"$GLOG" 2>&1 \
    || { tail -15 "$GLOG"; die "GCC install failed; see $GLOG"; }
  echo "make done $(date -u +%FT%TZ)" >> "$GLOG"
  echo "gcc-build-seconds $(( $(date +%s) - t0 )) (this run: configure + make -j$JOBS + install, nice 19; see gcc.log for each start)" >> "$CACHE/build/gcc.time"
  # GCC's xtensa-*-elf libraries are Tensilica's simulator ones (LIB_SPEC "-lc -lsim -lc
  # -lhandlers-sim -lhal", none of which exist here); an ESP32-S3 program links newlib's libc and
  # brings its own start-up code and system calls (ESP-IDF). A specs file next to libgcc overrides
  # that one spec, so `gcc t.c` (CMake's compiler check) links.
  SPECS=$TC/lib/gcc/$TARGET/14.2.0/specs
  [ -d "$(dirname "$SPECS")" ] || die "$(dirname "$SPECS") missing after the install; see $GLOG"
  printf '*lib:\n-lc\n\n' > "$SPECS"
  # the driver must find this as/ld, not a host one
  echo 'int main(void){return 0;}' > "$CACHE/build/probe14.c"
  "$TC/bin/$TARGET-gcc" -O2 -c "$CACHE/build/probe14.c" -o "$CACHE/build/probe14.o" \
    || die "the new $TARGET-gcc does not compile; see $GLOG"
  mark gcc
fi

# newlib's raw headers stood in <tooldir>/sys-include only while GCC was built (for its limits.h);
# a cross GCC searches sys-include before include, so afterwards it must show the installed,
# configured headers (newlib.h with retargetable locking, sys/esp): point it at include
if [ -x "$TC/bin/$TARGET-gcc" ] && [ -d "$TC/$TARGET/include" ] && [ ! -L "$TC/$TARGET/sys-include" ]; then
  rm -rf "$TC/$TARGET/sys-include" && ln -s include "$TC/$TARGET/sys-include"
fi

# -- 6. check and say what was used ----------------------------------------------------------
echo 'int f(float *a, float *b) { return (int)(a[0] * b[0] + a[1]); }' > "$CACHE/build/probe.c"
"$CACHE/bin/xtensa-esp32s3-elf-gcc" -O2 -mlongcalls -ffreestanding -c "$CACHE/build/probe.c" -o "$CACHE/build/probe.o" \
  || die "the compiler does not run; remove $CACHE/stamps/wrappers and rerun"
"$CACHE/bin/xtensa-esp32s3-elf-objdump" -d "$CACHE/build/probe.o" | grep -q 'entry' \
  || die "compiled code is not windowed S3 code (plugin not used?); remove $CACHE/stamps and rerun"
{
  echo "pocketgpt xtensa toolchain in $CACHE (made $(cat "$CACHE/stamps/wrappers"))"
  for d in "$CACHE"/debs/*.deb; do dpkg-deb -W --showformat='deb ${Package} ${Version}\n' "$d"; done
  cat "$CACHE/build/plugin.sources"
  [ -f "$CACHE/build/idf.sources" ] && cat "$CACHE/build/idf.sources"
  "$CACHE/bin/xtensa-esp32s3-elf-gcc" --version | head -1
  "$CACHE/bin/xtensa-esp32s3-elf-as" --version | head -1
  [ -x "$CACHE/bin/qemu-system-xtensa" ] && "$CACHE/bin/qemu-system-xtensa" --version | head -1 \
    && echo "qemu cpu esp32s3: $("$CACHE/bin/qemu-system-xtensa" -cpu help | grep -c esp32s3) core(s)"
  [ -f "$CACHE/build/qemu.time" ] && cat "$CACHE/build/qemu.time"
  if [ -x "$TC/bin/$TARGET-gcc" ]; then
    grep -v '^gcc changes' "$CACHE/build/gcc.sources"
    echo "changes made to the exported trees (docs/xtensa.md): xtensa-config.h (overlay + GCC 14 macros)," \
      "-mdisable-hardware-atomics, tm.texi check skipped, newlib: _POSIX_READER_WRITER_LOCKS," \
      "sys/esp for *-esp32*-*, MATHOBJS_IN_LIBC names; no libgloss; specs *lib: -lc"
    "$TC/bin/$TARGET-gcc" --version | head -1
    "$TC/bin/$TARGET-g++" --version | head -1
    echo "gcc build: first configure $(sed -n 's/^configure //p' "$CACHE/build/gcc.log" | head -1)," \
      "last make done $(sed -n 's/^make done //p' "$CACHE/build/gcc.log" | tail -1)," \
      "$(grep -c '^make start' "$CACHE/build/gcc.log") make run(s) (gcc.log)"
  else
    echo "full toolchain ($TC): not built (give --newlib DIR to build it)"
  fi
  true
} > "$CACHE/manifest.txt"
cat "$CACHE/manifest.txt"
