#!/usr/bin/env bash
# Create .venv with the pinned CPU stack (torch 2.13.0 CPU build) and svrt installed in it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-ci.txt
.venv/bin/python -m pip install -q --no-deps -e .
# fitsverify (HEASARC, a Debian package) for the FITS-standard tests: installed where apt-get is there and we are
# root (CI, fresh machines); elsewhere those tests skip with a reason.
if ! command -v fitsverify >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fitsverify; } >/dev/null 2>&1; then
    echo "setup: fitsverify could not be installed; the fitsverify tests will skip." >&2
  fi
fi
