#!/usr/bin/env bash
# Installs rmem's build and test dependencies from Debian 12 packages.
# Idempotent: quiet and quick when everything is already installed.
set -euo pipefail

pkgs=(build-essential cmake pkg-config libuv1-dev libmsgpack-dev libmbedtls-dev libcmocka-dev liblz4-dev
      python3 openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deploy: installing ${missing[*]}" >&2
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
