#!/usr/bin/env bash
# Runs every test. Installs the S3 clients the end-to-end tests drive (boto3
# and the aws CLI, from PyPI) when they are missing, then runs cargo's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import boto3" >/dev/null 2>&1 || ! command -v aws >/dev/null 2>&1; then
    echo "installing the S3 test clients (boto3, awscli) from PyPI..."
    python3 -m pip install --quiet --disable-pip-version-check "boto3>=1.35,<2" "awscli>=1.35,<2"
fi

cargo test --workspace --locked "$@"
