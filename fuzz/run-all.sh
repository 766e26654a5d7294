#!/usr/bin/env bash
# Runs the fuzz targets (all, or those named after the seconds) for the
# given seconds each (default 600), one after another, from the committed seeds (fuzz/seeds/<target>) and the corpus
# each run grows (fuzz/corpus/<target>, not committed). Needs the nightly
# toolchain and cargo-fuzz. Stops at the first crash (its input is in
# fuzz/artifacts/<target>/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(log_segment commands snapshot_body history archive gateway_parameters)
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "== $target: ${seconds} s"
    cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 | tail -25
done
