#!/usr/bin/env bash
# Boot the Prism test guest (scripts/qemu-guest/build.sh) with a shell on the serial console, attached
# to VM NAME's region and metadata table (`prism qemu-args NAME`); `prism host serve --vm NAME=VOL` must
# be running. In the guest: prism agent mount --pci auto --volume VOL /mnt. `poweroff -f` to leave.
#   scripts/qemu-guest/shell.sh NAME [extra qemu-args options, e.g. --shm-dir DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
vm="${1:?usage: shell.sh VM-NAME [prism qemu-args options]}"
shift
eval "$(bash "$here/build.sh")"
# shellcheck disable=SC2046 # qemu-args prints options to be split
exec qemu-system-x86_64 -accel tcg,thread=multi -smp 2 -cpu max -m 1024 -nographic -no-reboot \
  -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyS0 quiet panic=-1 prism.shell=1" \
  $(node "$root/bin/prism.js" qemu-args "$vm" "$@")
