#!/usr/bin/env bash
# Install devourer from this checkout on Debian/Ubuntu: the system packages it
# needs (libpcap, a C compiler for wheels that build from source, the tools the
# tests drive: tcpdump, and tshark for the references of the captures they build), a
# virtual environment in .venv, and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    python3 python3-venv python3-dev gcc libpcap-dev \
    tcpdump tshark iproute2 iputils-ping util-linux logrotate systemd >/dev/null
PYTHON=${PYTHON:-python3}
"$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
# The package's byte-code, now: an editable install is imported from its sources, and where
# PYTHONDONTWRITEBYTECODE is set Python would compile them again at every start (~0.1 s a run).
.venv/bin/python -m compileall -q devourer
# The BigQuery emulator the tests talk to (../shared/bigquery-emulator.md): local-bigquery needs
# Python >= 3.13, so it lives in a venv of its own, .venv-bqemu.
PY313=""
for candidate in python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
    if "$candidate" -c "import sys; assert sys.version_info >= (3, 13)" >/dev/null 2>&1; then PY313=$candidate; break; fi
done
install_emulator() {
    [ -x .venv-bqemu/bin/python ] || "$PY313" -m venv .venv-bqemu || return 1
    .venv-bqemu/bin/pip install -q local-bigquery==0.4.0 2>/dev/null
    # local-bigquery asks for duckdb>=2.0, whose extensions are not on PyPI; 1.5.5 works (pip warns)
    .venv-bqemu/bin/pip install -q duckdb==1.5.5 duckdb-extensions==1.5.5 duckdb-extension-icu==1.5.5 \
        duckdb-extension-ducklake==1.5.5 duckdb-extension-spatial==1.5.5 pytz 2>/dev/null
    .venv-bqemu/bin/python -c "import duckdb, duckdb_extensions as x; c = duckdb.connect(); \
[x.import_extension(e, con=c) for e in ('icu', 'ducklake', 'spatial')]; import local_bigquery"
}
if [ -z "$PY313" ]; then
    echo "no Python 3.13 found: the BigQuery emulator is not installed and its tests will be skipped"
elif ! install_emulator; then
    rm -rf .venv-bqemu
    echo "the BigQuery emulator could not be installed: its tests will be skipped"
fi
echo "devourer $(.venv/bin/python -c "import devourer; print(devourer.__version__)") installed in $(pwd)/.venv"
