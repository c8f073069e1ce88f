"""S3 operations through boto3 against a running devnet's S3 endpoint.

Usage: boto3_flows.py ENDPOINT ACCESS_KEY SECRET_KEY
Exits non-zero on the first failed check.
"""
import os
import sys
import time
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, access, secret = sys.argv[1:4]
bucket = f"datasets-{os.getpid()}"
cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                  aws_secret_access_key=secret, region_name="us-east-1", config=cfg)


def error_code(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} should have failed")


s3.create_bucket(Bucket=bucket)
assert error_code(s3.create_bucket, Bucket=bucket) == "BucketAlreadyOwnedByYou"
assert error_code(s3.create_bucket, Bucket="Bad_Name") == "InvalidBucketName"
assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
s3.head_bucket(Bucket=bucket)

body = bytes(range(256)) * 4096  # 1 MiB
s3.put_object(Bucket=bucket, Key="train/part-0.bin", Body=body)
got = s3.get_object(Bucket=bucket, Key="train/part-0.bin")
assert got["Body"].read() == body
assert got["ContentLength"] == len(body)
ranged = s3.get_object(Bucket=bucket, Key="train/part-0.bin", Range="bytes=1000-1999")
assert ranged["Body"].read() == body[1000:2000]
assert ranged["ContentRange"] == f"bytes 1000-1999/{len(body)}"
assert s3.head_object(Bucket=bucket, Key="train/part-0.bin")["ContentLength"] == len(body)
s3.put_object(Bucket=bucket, Key="empty", Body=b"")
assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""

# Listing with prefixes, delimiters and pagination.
for i in range(5):
    s3.put_object(Bucket=bucket, Key=f"logs/{i}.txt", Body=f"line {i}".encode())
page = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", MaxKeys=2)
keys = [o["Key"] for o in page["Contents"]]
assert page["IsTruncated"] and keys == ["logs/0.txt", "logs/1.txt"], page
while page.get("IsTruncated"):
    page = s3.list_objects_v2(Bucket=bucket, Prefix="logs/", MaxKeys=2,
                              ContinuationToken=page["NextContinuationToken"])
    keys += [o["Key"] for o in page.get("Contents", [])]
assert keys == [f"logs/{i}.txt" for i in range(5)], keys
top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
assert sorted(p["Prefix"] for p in top["CommonPrefixes"]) == ["logs/", "train/"], top
assert [o["Key"] for o in top["Contents"]] == ["empty"]

# Placement: a bucket HEAD counts the contents still waiting for the storage
# network; once it says 0, every object is stored there.
deadline = time.time() + 120
while True:
    waiting = s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]["x-tessera-pending-contents"]
    if int(waiting) == 0:
        break
    assert time.time() < deadline, f"{waiting} contents still waiting after 120 s"
    time.sleep(0.05)
for key in ["train/part-0.bin"] + [f"logs/{i}.txt" for i in range(5)]:
    state = s3.head_object(Bucket=bucket, Key=key)["Metadata"]["tessera-state"]
    assert state == "stored", (key, state)

# Multipart upload (two 5 MiB parts and a tail), then copy.
mpu = s3.create_multipart_upload(Bucket=bucket, Key="model.safetensors")
parts, chunks = [], [b"a" * (5 << 20), b"b" * (5 << 20), b"tail"]
for n, chunk in enumerate(chunks, start=1):
    r = s3.upload_part(Bucket=bucket, Key="model.safetensors", UploadId=mpu["UploadId"], PartNumber=n, Body=chunk)
    parts.append({"PartNumber": n, "ETag": r["ETag"]})
done = s3.complete_multipart_upload(Bucket=bucket, Key="model.safetensors", UploadId=mpu["UploadId"],
                                    MultipartUpload={"Parts": parts})
assert done["ETag"].strip('"').endswith("-3"), done
assert s3.get_object(Bucket=bucket, Key="model.safetensors")["Body"].read() == b"".join(chunks)
aborted = s3.create_multipart_upload(Bucket=bucket, Key="never")
s3.abort_multipart_upload(Bucket=bucket, Key="never", UploadId=aborted["UploadId"])
assert error_code(s3.upload_part, Bucket=bucket, Key="never", UploadId=aborted["UploadId"],
                  PartNumber=1, Body=b"x") == "NoSuchUpload"
assert error_code(s3.get_object, Bucket=bucket, Key="never") == "NoSuchKey"

s3.copy_object(Bucket=bucket, Key="copy.bin", CopySource={"Bucket": bucket, "Key": "train/part-0.bin"})
assert s3.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == body

# Presigned URL with a plain HTTP client.
url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "logs/3.txt"}, ExpiresIn=300)
assert urllib.request.urlopen(url).read() == b"line 3"

# Errors a client expects.
assert error_code(s3.get_object, Bucket=bucket, Key="missing") == "NoSuchKey"
assert error_code(s3.get_object, Bucket="nobucket", Key="x") == "NoSuchBucket"
assert error_code(s3.delete_bucket, Bucket=bucket) == "BucketNotEmpty"
bad = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key="x" * 40,
                   region_name="us-east-1", config=cfg)
assert error_code(bad.list_buckets) == "SignatureDoesNotMatch"
stranger = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="TSRNOSUCHKEY0000000", aws_secret_access_key="x" * 40,
                        region_name="us-east-1", config=cfg)
assert error_code(stranger.list_buckets) == "InvalidAccessKeyId"

# Delete: the copy keeps the shared content readable.
s3.delete_object(Bucket=bucket, Key="train/part-0.bin")
assert error_code(s3.get_object, Bucket=bucket, Key="train/part-0.bin") == "NoSuchKey"
assert s3.get_object(Bucket=bucket, Key="copy.bin")["Body"].read() == body
print("boto3 flows: all checks passed")
