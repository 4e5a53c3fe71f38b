#!/usr/bin/env bash
# Debian packages the test suite needs (sshd for the loopback device, QEMU for ARM emulation,
# ...). Idempotent: installs only what is missing.
set -euo pipefail
PACKAGES=(make chromium fonts-dejavu-core
  # loopback SSH "device" (tests/sshd.py)
  openssh-server openssh-client
  # emulated ARM runs: qemu-aarch64 (dynamic, accepts -plugin), the arm64 root, the TCG plugin
  qemu-user debootstrap gcc libc6-dev
  # the Docker image, built and run with podman (tests/test_docker_image.py; base via debootstrap)
  podman runc)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
