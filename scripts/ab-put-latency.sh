#!/usr/bin/env bash
# Sequential 4 KiB PUT latency of two tessera binaries, A and B, each on a
# fresh devnet (its S3 endpoint, boto3 as the client), in PAIRS pairs that
# alternate which runs first, so that both meet the same drift of a shared
# machine. A single run's p99 rests on its 20 slowest PUTs of 2,000 and
# moves by a third from one minute to the next here; the pairs' ratios and
# the pooled latencies tell a change of a tenth from noise.
#
#   bash scripts/ab-put-latency.sh BIN_A BIN_B [PAIRS] [PUTS]
#
# Prints each run's percentiles, then B/A per pair (median, and in how many
# pairs B was faster) and both binaries' pooled percentiles. Everything
# listens on loopback and stops by itself.
set -euo pipefail
A=$(realpath "$1"); B=$(realpath "$2"); PAIRS=${3:-10}; PUTS=${4:-2000}
PORT=${PORT:-18900}
cd "$(dirname "$0")/.."
python3 -c "import boto3" 2>/dev/null || python3 -m pip install --quiet "boto3>=1.35,<2"
WORK=$(mktemp -d)
DEVNET=
cleanup() { [ -n "$DEVNET" ] && kill "$DEVNET" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

# One run of binary $1: appends its latencies (ms) to $2, prints its percentiles.
run() {
    local bin=$1 out=$2 dir key
    dir=$(mktemp -d "$WORK/run.XXXX")
    (cd "$dir" && exec "$bin" --rpc 127.0.0.1:$PORT devnet --s3 127.0.0.1:$((PORT + 1)) > devnet.log 2>&1) &
    DEVNET=$!
    for _ in $(seq 1 100); do
        n=$("$bin" --rpc 127.0.0.1:$PORT --output json query providers 2>/dev/null | grep -c '"owner"' || true)
        [ "${n:-0}" -ge 6 ] && break
        sleep 0.3
    done
    key=$(cd "$dir" && "$bin" --rpc 127.0.0.1:$PORT --output json storage s3-key create)
    python3 - "$((PORT + 1))" "$key" "$PUTS" "$out" <<'PY'
import boto3, json, os, sys, time
from botocore.config import Config
port, key, n, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=key["access_key"],
                  aws_secret_access_key=key["secret_key"], region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
s3.create_bucket(Bucket="ab-latency")
body = os.urandom(4096)
for i in range(50):  # warm the connection and the endpoint
    s3.put_object(Bucket="ab-latency", Key=f"warm/{i}", Body=i.to_bytes(8, "big") + body[8:])
time.sleep(1.5)
lat = []
for i in range(n):
    t0 = time.perf_counter()
    s3.put_object(Bucket="ab-latency", Key=f"s/{i}", Body=(i + 100).to_bytes(8, "big") + body[8:])
    lat.append((time.perf_counter() - t0) * 1000)
with open(out, "a") as f:
    f.write("".join(f"{x:.3f}\n" for x in lat))
o = sorted(lat)
print(f"p50 {o[n // 2]:.2f} p99 {o[n * 99 // 100]:.2f} ms")
PY
    kill "$DEVNET"
    wait "$DEVNET" 2>/dev/null || true
    DEVNET=
    rm -rf "$dir"
}

for i in $(seq 1 "$PAIRS"); do
    order="a b"
    [ $((i % 2)) = 0 ] && order="b a"
    for w in $order; do
        bin=$A
        [ "$w" = b ] && bin=$B
        r=$(run "$bin" "$WORK/lat-$w")
        echo "$i $w $r" | tee -a "$WORK/runs"
    done
done
python3 - "$WORK" <<'PY'
import statistics, sys
work = sys.argv[1]
runs = {}
for line in open(f"{work}/runs"):
    pair, which, _, p50, _, p99, _ = line.split()
    runs.setdefault(pair, {})[which] = (float(p50), float(p99))
pairs = [r for r in runs.values() if len(r) == 2]
for n, name in ((0, "p50"), (1, "p99")):
    ratios = [r["b"][n] / r["a"][n] for r in pairs]
    print(f"B/A {name}: median {statistics.median(ratios):.3f}, B faster in {sum(x < 1 for x in ratios)} of {len(ratios)} pairs")
for which in ("a", "b"):
    v = sorted(float(x) for x in open(f"{work}/lat-{which}"))
    n = len(v)
    print(f"{which.upper()} pooled: {n} PUTs, p50 {v[n // 2]:.2f} p90 {v[n * 9 // 10]:.2f} p99 {v[n * 99 // 100]:.2f} p99.9 {v[n * 999 // 1000]:.2f} ms")
PY
