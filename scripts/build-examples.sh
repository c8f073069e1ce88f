#!/usr/bin/env bash
# Builds the example job programs (examples/jobs/guest) for wasm32-wasip1 and
# copies the modules next to the job specs that use them (examples/jobs/*.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip1 >/dev/null
cargo build --release --locked --target wasm32-wasip1 \
    --manifest-path examples/jobs/guest/Cargo.toml \
    --target-dir "${CARGO_TARGET_DIR:-target}/examples-wasm"
for bin in wordcount montecarlo noop spin; do
    cp "${CARGO_TARGET_DIR:-target}/examples-wasm/wasm32-wasip1/release/$bin.wasm" "examples/jobs/$bin.wasm"
    echo "examples/jobs/$bin.wasm: $(wc -c < "examples/jobs/$bin.wasm") bytes"
done
