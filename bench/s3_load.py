"""A bounded S3 load run with boto3: 4 MiB objects (MiB/s) and 4 KiB objects
(ops/s, p50/p99 latency), PUT then GET. Prints one JSON line.

Usage: s3_load.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET [LARGE_COUNT] [SMALL_COUNT]
"""
import json
import os
import sys
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
large = os.urandom(4 << 20)
small = os.urandom(4 << 10)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


result = {}
put = [timed(lambda i=i: s3.put_object(Bucket=bucket, Key=f"large/{i}", Body=large)) for i in range(large_count)]
get = [timed(lambda i=i: s3.get_object(Bucket=bucket, Key=f"large/{i}")["Body"].read()) for i in range(large_count)]
result["put_4mib_mib_s"] = 4 * large_count / sum(put)
result["get_4mib_mib_s"] = 4 * large_count / sum(get)
put = [timed(lambda i=i: s3.put_object(Bucket=bucket, Key=f"small/{i}", Body=small)) for i in range(small_count)]
get = [timed(lambda i=i: s3.get_object(Bucket=bucket, Key=f"small/{i}")["Body"].read()) for i in range(small_count)]
for name, lat in (("put_4kib", put), ("get_4kib", get)):
    result[f"{name}_ops_s"] = len(lat) / sum(lat)
    result[f"{name}_p50_ms"] = pct(lat, 50) * 1000
    result[f"{name}_p99_ms"] = pct(lat, 99) * 1000
print(json.dumps(result))
