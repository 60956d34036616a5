#!/usr/bin/env bash
# Install devourer from this checkout on Debian/Ubuntu: the system packages it
# needs (libpcap, a C compiler for wheels that build from source, the tools the
# tests drive), a virtual environment in .venv, and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-dev gcc libpcap-dev \
    tcpdump iproute2 iputils-ping util-linux >/dev/null
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "devourer $(.venv/bin/python -c "import devourer; print(devourer.__version__)") installed in $(pwd)/.venv"
