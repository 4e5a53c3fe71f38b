#!/usr/bin/env bash
# Debian packages the test suite needs (sshd for the loopback device, QEMU for ARM emulation,
# ...). Idempotent: installs only what is missing.
set -euo pipefail
PACKAGES=(make chromium fonts-dejavu-core)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
