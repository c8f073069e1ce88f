"""A bounded S3 load run with boto3: 4 MiB objects (MiB/s) and 4 KiB objects
(ops/s, p50/p99 latency), PUT then GET. Prints one JSON line.

Against an endpoint that acknowledges a PUT before the object is on its
storage network (HEAD reports x-amz-meta-tessera-state: pending), the run
also waits until every object of a phase is stored, and reports that rate as
placed_* (from the phase's first PUT to its last object stored), before its
GETs start, and as tail_*_s the seconds from the phase's last PUT
acknowledged to its last object stored (the block wait and the last batch's
placement, which a phase of a second or two magnifies in placed_*).

With s5cmd on the PATH (a Go S3 client that runs many requests at once),
the same counts of objects are also copied up and down with WORKERS
requests in flight (env S5CMD_WORKERS, default 16): the *_c16 rows. One
sequential Python client measures its own speed as much as the server's;
these rows measure what the server sustains.

Usage: s3_load.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET [LARGE_COUNT] [SMALL_COUNT]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.config import Config

endpoint, access, secret, bucket = sys.argv[1:5]
large_count = int(sys.argv[5]) if len(sys.argv) > 5 else 16
small_count = int(sys.argv[6]) if len(sys.argv) > 6 else 200
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                  region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                tcp_keepalive=True))
s3.create_bucket(Bucket=bucket)
# Every object holds different bytes (a content-addressed store would
# otherwise keep one copy of them all).
large_base = os.urandom(4 << 20)
small_base = os.urandom(4 << 10)
large = lambda i: i.to_bytes(8, "big") + large_base[8:]
small = lambda i: i.to_bytes(8, "big") + small_base[8:]


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def pending_contents():
    """What the endpoint has acknowledged for this account and not yet put
    on its storage network (the x-tessera-pending-contents header of a
    bucket HEAD), or None from a server that does not say."""
    headers = s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    value = headers.get("x-tessera-pending-contents")
    return None if value is None else int(value)


def wait_placed(keys, started):
    """Seconds from `started` until no key is pending any more; None when the
    endpoint does not report placement. `keys` gives the phase's keys, in
    the order the endpoint places them (oldest acknowledgement first); it is
    called only when the endpoint has no pending count. Every phase waits
    for this, so the account's pending count reaching 0 means this phase's
    keys are placed: one bucket HEAD per poll, from the moment the phase's
    last PUT returns (listing the keys first would time the client's
    listing). Without that count, the newest key is watched alone; once it
    is stored, one pass checks the rest and the time taken is that of the
    last key seen stored. (Timing a HEAD of every key would time the load
    client: about 5 s per pass over 2,000 keys; and batches placed side by
    side can finish out of order, which sends that pass round again.)"""
    deadline = time.perf_counter() + 600
    if pending_contents() is not None:
        while pending_contents():
            assert time.perf_counter() < deadline, "objects still pending after 600 s"
            time.sleep(0.005)
        return time.perf_counter() - started
    keys = keys()
    if not keys:
        return None
    state = lambda k: s3.head_object(Bucket=bucket, Key=k).get("Metadata", {}).get("tessera-state")
    if state(keys[-1]) is None:
        return None
    left = list(keys)
    done_at = None
    while left:
        while state(left[-1]) == "pending":
            assert time.perf_counter() < deadline, f"{len(left)} objects still pending after 600 s"
            time.sleep(0.01)
        done_at = time.perf_counter()
        left = [k for k in left[:-1] if state(k) == "pending"]
    return done_at - started


result = {}
started = time.perf_counter()
put = [timed(lambda i=i: s3.put_object(Bucket=bucket, Key=f"large/{i}", Body=large(i))) for i in range(large_count)]
acked = time.perf_counter() - started
placed = wait_placed(lambda: [f"large/{i}" for i in range(large_count)], started) if large_count else None
get = [timed(lambda i=i: s3.get_object(Bucket=bucket, Key=f"large/{i}")["Body"].read()) for i in range(large_count)]
if large_count:
    result["put_4mib_mib_s"] = 4 * large_count / sum(put)
    if placed:
        result["placed_4mib_mib_s"] = 4 * large_count / placed
        result["tail_4mib_s"] = placed - acked
    result["get_4mib_mib_s"] = 4 * large_count / sum(get)
started = time.perf_counter()
put = [timed(lambda i=i: s3.put_object(Bucket=bucket, Key=f"small/{i}", Body=small(i))) for i in range(small_count)]
acked = time.perf_counter() - started
placed = wait_placed(lambda: [f"small/{i}" for i in range(small_count)], started) if small_count else None
if placed:
    result["placed_4kib_ops_s"] = small_count / placed
    result["tail_4kib_s"] = placed - acked
get = [timed(lambda i=i: s3.get_object(Bucket=bucket, Key=f"small/{i}")["Body"].read()) for i in range(small_count)]
for name, lat in (("put_4kib", put), ("get_4kib", get)):
    if not lat:
        continue
    result[f"{name}_ops_s"] = len(lat) / sum(lat)
    result[f"{name}_p50_ms"] = pct(lat, 50) * 1000
    result[f"{name}_p99_ms"] = pct(lat, 99) * 1000


def concurrent(name, count, body, unit):
    """Copies `count` objects up and then down with s5cmd; adds the rates
    (objects/s, or MiB/s when `unit` is given) to `result`."""
    workers = int(os.environ.get("S5CMD_WORKERS", "16"))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret, AWS_REGION="us-east-1")
    cmd = ["s5cmd", "--endpoint-url", endpoint, "--numworkers", str(workers), "--retry-count", "0", "--log", "error"]
    with tempfile.TemporaryDirectory() as tmp:
        up, down = os.path.join(tmp, "up"), os.path.join(tmp, "down")
        os.mkdir(up)
        for i in range(count):
            with open(os.path.join(up, str(i)), "wb") as f:
                f.write(body(i + 1_000_000))
        started = time.perf_counter()
        subprocess.run(cmd + ["cp", f"{up}/*", f"s3://{bucket}/{name}/"], check=True, env=env)
        put = time.perf_counter() - started
        listing = lambda: [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{name}/")
                           for o in page.get("Contents", [])]
        placed = wait_placed(lambda: [o["Key"] for o in sorted(listing(), key=lambda o: o["LastModified"])], started)
        listed = listing()
        assert len(listed) == count, f"{len(listed)} of {count} objects listed after the upload"
        started = time.perf_counter()
        subprocess.run(cmd + ["cp", f"s3://{bucket}/{name}/*", f"{down}/"], check=True, env=env)
        get = time.perf_counter() - started
        got = sorted(os.listdir(down))
        assert got == sorted(os.listdir(up)), f"s5cmd fetched {len(got)} of {count} objects"
        for i in (0, count - 1):
            with open(os.path.join(down, str(i)), "rb") as f:
                assert f.read() == body(i + 1_000_000), f"object {name}/{i} came back different"
    scale = unit or 1
    suffix = f"_c{workers}_" + ("mib_s" if unit else "ops_s")
    result[f"put_{name}{suffix}"] = count * scale / put
    if placed:
        result[f"placed_{name}{suffix}"] = count * scale / placed
        result[f"tail_{name}_c{workers}_s"] = placed - put
    result[f"get_{name}{suffix}"] = count * scale / get


if shutil.which("s5cmd"):
    if large_count:
        concurrent("4mib", large_count, large, 4)
    if small_count:
        concurrent("4kib", small_count, small, None)
print(json.dumps(result))
