#!/usr/bin/env bash
# Install what the testbed needs on this (Debian or Ubuntu) machine, as root.
# Idempotent and quiet: prints nothing and touches nothing when all is there.
#   vagrant            the machines (docker provider here; libvirt/VirtualBox on users' machines)
#   vagrant-libvirt    the libvirt provider (also lets `make validate` check libvirt options)
#   podman, runc       the containers behind the docker provider (crun refuses some hosts'
#                      hybrid cgroups, so containers.conf selects runc)
#   debootstrap        builds the base image (images/build.sh)
#   python3-venv       the controller's tools in .venv (make venv)
#   chromium           the R3E report's rendering test opens the page in a headless browser
set -euo pipefail

packages=(vagrant vagrant-libvirt podman runc debootstrap python3-venv make chromium)

missing=()
for p in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]]; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $EUID -ne 0 ]]; then
  echo "missing packages: ${missing[*]}; run as root: $0" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
