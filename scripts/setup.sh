#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv from requirements.lock.
# Idempotent: does nothing when .venv already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
# SLURM with accounting for tests/workflow/test_slurm.py (Debian slurm-wlm, slurmdbd, munge,
# mariadb-server; the daemons are started by the test through scripts/slurm-local.sh).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  scripts/slurm-local.sh install
fi
# WSClean, the optional faster imager (config image.imager: wsclean).
if ! command -v wsclean >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends wsclean >/dev/null
fi
# Chromium, the headless browser that tests the ESE candidates page (tests/variability/test_candidates_page.py).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y --no-install-recommends chromium >/dev/null
fi
stamp=.venv/.installed
want=$(cat requirements.lock pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: creating .venv with $($PY --version)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q uv
# voevent-parse is published only as an sdist with ':' in file names, which uv refuses to
# unpack: pip builds its wheel and uv installs it from there.
.venv/bin/python -m pip wheel -q --no-deps -w .venv/wheels "$(grep '^voevent-parse==' requirements.lock)"
.venv/bin/uv pip sync -q --python .venv/bin/python --find-links .venv/wheels requirements.lock
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
# Byte-compile once: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every job would
# otherwise recompile what it imports (pyuvdata's import: 15 s -> 6 s on a loaded machine).
PYTHONDONTWRITEBYTECODE= .venv/bin/python -m compileall -q -j 0 .venv/lib src >/dev/null || true
.venv/bin/python -c "import dsa110_contimg.casaenv as c; c.check_casa()"
echo "$want" > "$stamp"
echo "setup: .venv ready"
