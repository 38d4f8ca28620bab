#!/usr/bin/env bash
# Extra packages for the benchmarks: Debian's oneDNN and PyTorch 1.13 as
# baselines of the CPU comparison (bench/compare_cpu.py), and matplotlib for
# the load study's plots (bench/run_load_study.py). Not needed to build, run
# or test normserve. Idempotent, like install-deps.sh.
set -euo pipefail
packages=(libdnnl-dev python3-torch python3-matplotlib)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
