#!/usr/bin/env bash
# System packages the tests and benchmarks use. Idempotent; skips apt when all are present.
#   scripts/install-system-deps.sh          what `npm test` and the host-side benches use
#   scripts/install-system-deps.sh guest    also what `npm run test:qemu` and `npm run bench -- guest` use:
#                                           QEMU, the guest's initramfs tools, NFS-Ganesha and rpcbind
set -euo pipefail
PACKAGES=(e2fsprogs rsync tar fuse3 bindfs git sqlite3 make gcc libc6-dev attr util-linux)
if [ "${1:-}" = guest ]; then
  PACKAGES+=(qemu-system-x86 qemu-utils qemu-system-common busybox-static cpio nfs-ganesha nfs-ganesha-vfs rpcbind)
fi
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "need root to install: ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
