#!/usr/bin/env bash
# Makes Triton's perf_analyzer runnable here and prints the path of a
# wrapper that runs it: BUILD_DIR/perf-analyzer/perf_analyzer.
#
# The binary comes from PyPI's perf-analyzer wheel (pinned below). Its
# wheels are manylinux_2_38: they need glibc >= 2.38, and Debian 12 has
# 2.36. On such a host a Debian 13 runtime (libc, libstdc++, OpenSSL, zlib)
# is made with debootstrap under the build tree, and the wrapper starts the
# binary through that runtime's dynamic loader. Nothing is installed on the
# host itself. Everything is cached under BUILD_DIR/perf-analyzer.
#
# Exits 77 with the reason on stderr when this cannot work here (not
# x86-64, no PyPI, no root or debootstrap for the runtime, no Debian mirror).
# Usage: get_perf_analyzer.sh BUILD_DIR
set -uo pipefail
readonly version=2.60.0
work="$(cd "$1" && pwd)/perf-analyzer"
wrapper="$work/perf_analyzer"
skip() { echo "perf_analyzer unavailable: $*" >&2; exit 77; }
mkdir -p "$work"
if [ -x "$wrapper" ] && [ "$(cat "$work/version" 2>/dev/null)" = "$version" ]; then
  echo "$wrapper"; exit 0
fi
[ "$(uname -m)" = x86_64 ] || skip "the wheel used here is for x86-64 only"

# The wheel, unpacked.
if [ ! -x "$work/wheel/perf_analyzer/bin/perf_analyzer" ]; then
  rm -rf "$work/venv" "$work/download" "$work/wheel"
  python3 -m venv "$work/venv" || skip "python3 -m venv failed"
  "$work/venv/bin/pip" download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_38_x86_64 -d "$work/download" \
    "perf-analyzer==$version" >"$work/pip.log" 2>&1 ||
    skip "cannot download perf-analyzer $version from PyPI: $(tail -1 "$work/pip.log")"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$work"/download/perf_analyzer-*.whl "$work/wheel" || skip "cannot unpack the wheel"
  chmod +x "$work/wheel/perf_analyzer/bin/perf_analyzer"
fi
binary="$work/wheel/perf_analyzer/bin/perf_analyzer"

# A runtime new enough for it.
glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
if [ "$(printf '2.38\n%s\n' "$glibc" | sort -V | head -1)" = 2.38 ]; then
  needs_runtime=no
else
  needs_runtime=yes
fi
if [ "$needs_runtime" = yes ]; then
  root="$work/runtime"
  if [ ! -f "$root/.complete" ]; then
    [ "$(id -u)" -eq 0 ] || skip "glibc $glibc < 2.38 and making a newer runtime with debootstrap needs root"
    command -v debootstrap >/dev/null || skip "glibc $glibc < 2.38 and debootstrap is not installed"
    rm -rf "$root"
    debootstrap --variant=minbase --include=libssl3t64,zlib1g trixie "$root" \
      http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
      skip "debootstrap of Debian 13 failed (no Debian mirror?): $(tail -1 "$work/debootstrap.log")"
    touch "$root/.complete"
  fi
  libs="$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu"
  cat >"$wrapper" <<WRAP
#!/bin/sh
exec "$root/lib64/ld-linux-x86-64.so.2" --library-path "$libs" "$binary" "\$@"
WRAP
else
  cat >"$wrapper" <<WRAP
#!/bin/sh
exec "$binary" "\$@"
WRAP
fi
chmod +x "$wrapper"
"$wrapper" --version >"$work/start.log" 2>&1 ||
  skip "the binary does not start here: $(tail -1 "$work/start.log")"
echo "$version" >"$work/version"
echo "$wrapper"
