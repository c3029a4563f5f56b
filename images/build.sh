#!/usr/bin/env bash
# Build the Debian 12 base image of the testbed's container hosts, locally.
#
# No image registry is reachable from the machines this testbed targets, so the image
# is bootstrapped from the Debian mirror the host already uses. One image serves both
# Molecule (podman connection) and Vagrant's docker provider (ssh as user "vagrant"):
# systemd as PID 1, python3 for Ansible, openssh-server, sudo.
#
# Usage: images/build.sh [--force]      (IMAGE=name:tag to override the name)
set -euo pipefail

IMAGE="${IMAGE:-localhost/r3e-testbed/debian12:latest}"
HERE="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"

if [[ "${1:-}" != "--force" ]] && podman image exists "$IMAGE"; then
  echo "image $IMAGE exists (use --force to rebuild)"
  exit 0
fi

# The first Debian mirror configured on this host (deb822 or one-line format).
mirror="$(grep -h -o -E '^(URIs:[[:space:]]*|deb[[:space:]]+)https?://[^[:space:]]+/debian/?' \
  /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -n1 | awk '{print $NF}' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d /var/tmp/r3e-image.XXXXXX)"
trap 'rm -rf "$root"' EXIT

echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,openssh-server,curl,gnupg \
  bookworm "$root" "$mirror" >/dev/null

install -m 0755 -d "$root/etc/systemd/system"
# Units that make no sense, or hang, inside a container.
for unit in getty.target console-getty.service systemd-remount-fs.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
  systemd-logind.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
: >"$root/etc/machine-id"

# The host's CA certificates (HTTPS goes through a re-signing proxy here) are mounted
# read-only at /usr/local/share/ca-certificates at run time, never baked in: they differ
# from machine to machine. This unit trusts them at boot, before anything fetches.
cat >"$root/etc/systemd/system/host-ca-certificates.service" <<'UNIT'
[Unit]
Description=Trust the CA certificates mounted from the host
ConditionDirectoryNotEmpty=/usr/local/share/ca-certificates
Before=network-online.target ssh.service

[Service]
Type=oneshot
ExecStart=/usr/sbin/update-ca-certificates

[Install]
WantedBy=multi-user.target
UNIT
ln -sf ../host-ca-certificates.service "$root/etc/systemd/system/multi-user.target.wants/host-ca-certificates.service"

# ssh host keys are generated at first boot, so no two containers share them.
rm -f "$root"/etc/ssh/ssh_host_*
cat >"$root/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate ssh host keys at first boot
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
ln -sf ../ssh-host-keys.service "$root/etc/systemd/system/multi-user.target.wants/ssh-host-keys.service"

# Vagrant's docker provider logs in as "vagrant" with Vagrant's well-known insecure key
# (it replaces it with a fresh one on first "vagrant up").
chroot "$root" useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
vagrant_key="$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -n1 || true)"
if [[ -n "$vagrant_key" ]]; then
  install -m 0600 -o 1000 -g 1000 "$vagrant_key" "$root/home/vagrant/.ssh/authorized_keys"
fi
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"

# Ansible's apt cache_valid_time must see the lists as stale, or it never updates them.
rm -rf "$root"/var/lib/apt/lists/*
touch -d '2000-01-01' "$root/var/lib/apt/lists"
rm -rf "$root"/var/cache/apt/archives/*.deb

echo "importing $IMAGE"
tar -C "$root" -c . | podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'ENV container=podman' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  - "$IMAGE" >/dev/null
podman image ls "$IMAGE"
