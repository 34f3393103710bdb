#!/usr/bin/env bash
# The two README commands. Idempotent; as root on a fresh Debian 12 machine it installs what is missing first.
#   bash quickstart.sh demo   install, build, grade the synthetic demo slide (samples/)
#   bash quickstart.sh test   install, build, run the whole test suite
# Environment: BUILD_DIR (default build), JOBS (default: number of cores), GRADE_SANITIZE=ON for ASan+UBSan builds.
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
case "$mode" in demo|test) ;; *) echo "usage: bash quickstart.sh demo|test" >&2; exit 2 ;; esac

packages=(build-essential cmake pkg-config libopencv-dev libopenslide-dev libeigen3-dev libboost-program-options-dev
          doctest-dev libtiff-dev nlohmann-json3-dev libbenchmark-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
echo "== building in $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGRADE_SANITIZE="${GRADE_SANITIZE:-OFF}" >/dev/null
cmake --build "$build" -j "$jobs"

if [ "$mode" = test ]; then
  echo "== running the test suite"
  ctest --test-dir "$build" --output-on-failure -j "$jobs"
  exit $?
fi

echo "== demo: grading samples/demo.tiff"
slide=samples/demo.tiff
if [ ! -f "$slide" ]; then
  bash samples/make-samples.sh "$build/tools"
fi
"$build/tools/grade-slide" "$slide" --differentiation 2 --out out/demo
echo "== outputs in out/demo: report.json, detections.geojson, overlay.png, hotspot.png"
echo "== the slide's ground truth: samples/demo.truth.json"
