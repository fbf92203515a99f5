#!/usr/bin/env bash
# Builds what a QEMU guest needs to run the Prism agent: a Debian cloud kernel (plus fuse.ko and VFIO's modules)
# and an initramfs holding busybox, this machine's node with its libraries, the project's dist/src,
# bin/, build/Release addons and runtime node_modules, and the guest scripts (init.sh, steps.sh).
#
#   scripts/qemu-guest/build.sh            # prints KERNEL=... and INITRD=... (paths in the cache)
#   PRISM_QEMU_CACHE=/var/tmp/prism-qemu   # where everything goes (default; outside the repo)
#
# Needs (Debian): qemu-system-x86 busybox-static cpio, and `npx tsc -p tsconfig.json` done.
# The kernel is fetched once with `apt-get download`; the initramfs is rebuilt when its inputs change.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${PRISM_QEMU_CACHE:-/var/tmp/prism-qemu}"
mkdir -p "$cache"

need() { command -v "$1" >/dev/null || { echo "build.sh: $1 is missing (apt-get install $2)" >&2; exit 1; }; }
need busybox busybox-static
need cpio cpio
need qemu-system-x86_64 qemu-system-x86
[ -f "$root/dist/src/cli/main.js" ] || { echo "build.sh: dist/ is not built (npx tsc -p tsconfig.json)" >&2; exit 1; }
for a in prism_fuse prism_ivshmem prism_doorbell; do
  [ -f "$root/build/Release/$a.node" ] || { echo "build.sh: build/Release/$a.node is missing (npm run build:native)" >&2; exit 1; }
done

# --- kernel: the package linux-image-cloud-amd64 depends on (e.g. linux-image-6.1.0-56-cloud-amd64),
# and modules of that same package: fuse.ko, and VFIO's (in load order) for the doorbell, which the
# agent binds to vfio-pci to get its MSI-X interrupts (src/guest-agent/pci-doorbell.ts). A cache made
# before a module was on this list gets it from the package its kernel came from.
kdir="$cache/kernel"
modules=(fs/fuse/fuse virt/lib/irqbypass drivers/vfio/vfio drivers/vfio/vfio_iommu_type1 drivers/vfio/vfio_virqfd
  drivers/vfio/pci/vfio-pci-core drivers/vfio/pci/vfio-pci)
missing=()
for m in "${modules[@]}"; do [ -f "$kdir/$(basename "$m").ko" ] || missing+=("$m"); done
if [ ! -f "$kdir/vmlinuz" ] || [ ! -f "$kdir/package" ] || [ "${#missing[@]}" -gt 0 ]; then
  # get_package PKG: download and unpack it into $kdir/x
  get_package() {
    rm -rf "$kdir/dl" "$kdir/x" && mkdir -p "$kdir/dl" "$kdir/x"
    (cd "$kdir/dl" && apt-get download "$1" >/dev/null 2>&1) && dpkg-deb -x "$kdir"/dl/*.deb "$kdir/x"
  }
  pkg=""
  if [ -f "$kdir/vmlinuz" ] && [ -f "$kdir/package" ]; then
    # keep the cached kernel: its modules must come from its own package
    pkg="$(cat "$kdir/package")"
    echo "build.sh: the cached kernel ($pkg) lacks ${missing[*]}: extracting them" >&2
    get_package "$pkg" || { echo "build.sh: $pkg cannot be downloaded any more: fetching the current kernel" >&2; pkg=""; }
  fi
  if [ -z "$pkg" ]; then
    pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')"
    [ -n "$pkg" ] || { echo "build.sh: cannot tell which kernel linux-image-cloud-amd64 depends on (apt-get update?)" >&2; exit 1; }
    rm -rf "$kdir" && mkdir -p "$kdir"
    get_package "$pkg" || { echo "build.sh: apt-get download $pkg failed" >&2; exit 1; }
    cp "$kdir"/x/boot/vmlinuz-* "$kdir/vmlinuz.tmp"
  fi
  for m in "${modules[@]}"; do
    name="$(basename "$m").ko"
    ko="$(find "$kdir/x/lib/modules" -path "*/kernel/$m.ko*" | head -1)"
    case "$ko" in
      *.ko) cp "$ko" "$kdir/$name.tmp" ;;
      *.ko.xz) xz -dc "$ko" >"$kdir/$name.tmp" ;;
      *.ko.zst) zstd -dc "$ko" >"$kdir/$name.tmp" ;;
      *) echo "build.sh: no $m.ko in $pkg" >&2; exit 1 ;;
    esac
    mv "$kdir/$name.tmp" "$kdir/$name"
  done
  echo "$pkg" >"$kdir/package"
  rm -rf "$kdir/x" "$kdir/dl"
  [ ! -f "$kdir/vmlinuz.tmp" ] || mv "$kdir/vmlinuz.tmp" "$kdir/vmlinuz"
fi

# --- what goes into the initramfs, and a stamp of it (rebuild only when something changed)
node_bin="$(command -v node)"
mapfile -t deps < <(cd "$root" && npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | sed "s|^$root/||" | sort -u)
[ "${#deps[@]}" -gt 0 ] || { echo "build.sh: npm ls found no runtime dependencies" >&2; exit 1; }
stamp="$( {
  echo "$node_bin $(stat -c '%s %Y' "$node_bin") $(cat "$kdir/package") ${modules[*]}"
  cat "$here/init.sh" "$here/steps.sh" "$here/build.sh" "$here"/*.cjs "$root/package.json"
  (cd "$root" && find dist/src bin build/Release -type f \( -name '*.js' -o -name '*.node' \) -printf '%p %s %T@\n' | sort)
  printf '%s\n' "${deps[@]}"
} | sha256sum | cut -c1-16)"
initrd="$cache/initrd-$stamp.cpio"
if [ ! -f "$initrd" ]; then
  t0=$(date +%s.%N)
  work="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work"/{bin,sbin,dev,proc,sys,tmp,run,mnt,etc,root,usr/bin,lib/modules,prism/build/Release,prism/node_modules}
  cp "$(command -v busybox)" "$work/bin/busybox"
  for app in $(busybox --list); do [ -e "$work/bin/$app" ] || ln -s busybox "$work/bin/$app"; done
  cp "$node_bin" "$work/usr/bin/node"
  # node's and the addons' shared libraries, at the paths ldd gives
  for lib in $( { ldd "$node_bin"; ldd "$root"/build/Release/*.node; } | grep -o '/[^ ]*' | grep -v ':$' | sort -u); do
    mkdir -p "$work$(dirname "$lib")" && cp -L "$lib" "$work$lib"
  done
  # fuse.ko, and VFIO's in the order init.sh loads them (/lib/modules/vfio.order)
  for m in "${modules[@]}"; do cp "$kdir/$(basename "$m").ko" "$work/lib/modules/"; done
  printf '%s\n' "${modules[@]:1}" | xargs -n1 basename | sed 's/$/.ko/' >"$work/lib/modules/vfio.order"
  cp "$root/package.json" "$root/binding.gyp" "$work/prism/" 2>/dev/null || cp "$root/package.json" "$work/prism/"
  cp -r "$root/bin" "$work/prism/bin"
  mkdir -p "$work/prism/dist" && cp -r "$root/dist/src" "$work/prism/dist/src"
  find "$work/prism/dist" -name '*.map' -delete
  cp "$root"/build/Release/*.node "$work/prism/build/Release/"
  for d in "${deps[@]}"; do
    mkdir -p "$work/prism/$(dirname "$d")"
    # nested node_modules of a package are copied on their own when they are runtime dependencies
    (cd "$root" && tar cf - --exclude="$d/node_modules" "$d") | (cd "$work/prism" && tar xf -)
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$work/etc/passwd"
  printf 'root:x:0:\n' >"$work/etc/group"
  printf '#!/bin/sh\nexec /usr/bin/node /prism/bin/prism.js "$@"\n' >"$work/usr/bin/prism" && chmod 0755 "$work/usr/bin/prism"
  ln -s /bin/busybox "$work/usr/bin/env"
  install -m 0755 "$here/init.sh" "$work/init"
  install -m 0755 "$here/steps.sh" "$work/steps.sh"
  # Uncompressed: the kernel unpacks it faster than it would gunzip ~140 MB under TCG.
  (cd "$work" && find . | cpio -o -H newc --quiet) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  # keep only the newest initramfs
  find "$cache" -maxdepth 1 -name 'initrd-*.cpio' ! -name "$(basename "$initrd")" -delete
  echo "build.sh: initramfs $(du -h "$initrd" | cut -f1) built in $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s" >&2
fi
echo "KERNEL=$kdir/vmlinuz"
echo "INITRD=$initrd"
