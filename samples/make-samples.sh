#!/usr/bin/env bash
# Makes the demo slide samples/demo.tiff and its ground truth samples/demo.truth.json with grade-synth (deterministic:
# the same files on every machine). With "all", also makes G1/G2/G3/borderline slides in samples/extra/.
#   bash samples/make-samples.sh [TOOLS_DIR] [all]      TOOLS_DIR: where grade-synth was built (default build/tools)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=${1:-build/tools}
synth="$tools/grade-synth"
[ -x "$synth" ] || synth="$tools/grade-synth/grade-synth"
if [ ! -x "$synth" ]; then
  echo "make-samples.sh: grade-synth not found in $tools (build the project first)" >&2
  exit 1
fi

# The demo: 2 x 2 mm at 0.25 um/px (40x), a hotspot of ~14 mitoses per 10 HPF and 20 % necrosis. With the
# pathologist's differentiation score 2 the truth grades it G2 (mitosis score 2 + necrosis score 1 + 2 = 5).
"$synth" --quiet --seed 2026 --width 8000 --height 8000 --mpp 0.25 \
  --hotspot-mitoses-per-10hpf 14 --background-mitoses-per-10hpf 3 --necrosis-percent 20 \
  --out "$here/demo.tiff" --truth "$here/demo.truth.json"

if [ "${2:-}" = all ]; then
  mkdir -p "$here/extra"
  common=(--quiet --width 8000 --height 8000 --mpp 0.25)
  # G1 with differentiation 1 or 2: few mitoses (score 1), no necrosis (score 0).
  "$synth" "${common[@]}" --seed 11 --hotspot-mitoses-per-10hpf 3 --background-mitoses-per-10hpf 1 \
    --necrosis-percent 0 --out "$here/extra/g1.tiff" --truth "$here/extra/g1.truth.json"
  # G2 with differentiation 2: 10-19 mitoses (score 2), necrosis < 50 % (score 1).
  "$synth" "${common[@]}" --seed 12 --hotspot-mitoses-per-10hpf 13 --background-mitoses-per-10hpf 2 \
    --necrosis-percent 20 --out "$here/extra/g2.tiff" --truth "$here/extra/g2.truth.json"
  # G3 with differentiation 2 or 3: >= 20 mitoses (score 3), necrosis >= 50 % (score 2). A bigger slide keeps a
  # full 10-HPF window of viable tumour beside the necrosis.
  "$synth" --quiet --width 12000 --height 12000 --mpp 0.25 --seed 13 --hotspot-mitoses-per-10hpf 45 \
    --background-mitoses-per-10hpf 8 --necrosis-percent 55 --out "$here/extra/g3.tiff" --truth "$here/extra/g3.truth.json"
  # Borderline: a count near 10 and necrosis near 50 %.
  "$synth" "${common[@]}" --seed 21 --hotspot-mitoses-per-10hpf 11 --background-mitoses-per-10hpf 2 \
    --necrosis-percent 49 --out "$here/extra/borderline.tiff" --truth "$here/extra/borderline.truth.json"
  # The same tissue at 20x (0.5 um/px).
  "$synth" --quiet --width 4000 --height 4000 --mpp 0.5 --seed 2026 --hotspot-mitoses-per-10hpf 22 \
    --necrosis-percent 20 --out "$here/extra/demo-20x.tiff" --truth "$here/extra/demo-20x.truth.json"
fi
