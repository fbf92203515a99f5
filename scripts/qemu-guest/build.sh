#!/usr/bin/env bash
# Builds what a QEMU guest needs to run the Prism agent: a Debian cloud kernel (plus the modules of fuse, VFIO and the bench's targets)
# and an initramfs holding busybox, this machine's node with its libraries, the project's dist/src and dist/bench,
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
# and modules of that same package, in groups that init.sh and the guest scripts load with insmod in
# the order of GROUP.order (each module after those it depends on, read from the modules' .modinfo):
#   fuse   the agent's FUSE mount
#   vfio   for the doorbell: the agent binds the device to vfio-pci to get its MSI-X interrupts
#          (src/guest-agent/pci-doorbell.ts); vfio_iommu_type1 is loaded on demand, not a dependency
#   bench  the other targets of `npm run bench -- guest`: virtio disks, virtio-net (NFS and TCP over
#          QEMU's user network), virtio-fs and the NFSv3 client
kdir="$cache/kernel"
declare -A groups=([fuse]="fuse" [vfio]="vfio_iommu_type1 vfio_pci" [bench]="virtio_pci virtio_blk virtio_net virtiofs nfsv3")
spec="$(for g in fuse vfio bench; do echo "$g: ${groups[$g]}"; done)"
if [ ! -f "$kdir/vmlinuz" ] || [ ! -f "$kdir/package" ] || [ "$(cat "$kdir/modules.spec" 2>/dev/null)" != "$spec" ]; then
  pkg=""
  [ -f "$kdir/vmlinuz" ] && [ -f "$kdir/package" ] && pkg="$(cat "$kdir/package")"
  # get_package PKG: download and unpack it into $kdir/x
  get_package() {
    rm -rf "$kdir/dl" "$kdir/x" && mkdir -p "$kdir/dl" "$kdir/x"
    (cd "$kdir/dl" && apt-get download "$1" >/dev/null 2>&1) && dpkg-deb -x "$kdir"/dl/*.deb "$kdir/x"
  }
  if [ -n "$pkg" ]; then
    # keep the cached kernel: its modules must come from its own package
    echo "build.sh: the cached kernel ($pkg) lacks modules of: $spec; extracting them" >&2
    get_package "$pkg" || { echo "build.sh: $pkg cannot be downloaded any more: fetching the current kernel" >&2; pkg=""; }
  fi
  if [ -z "$pkg" ]; then
    pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')"
    [ -n "$pkg" ] || { echo "build.sh: cannot tell which kernel linux-image-cloud-amd64 depends on (apt-get update?)" >&2; exit 1; }
    rm -rf "$kdir" && mkdir -p "$kdir"
    get_package "$pkg" || { echo "build.sh: apt-get download $pkg failed" >&2; exit 1; }
    cp "$kdir"/x/boot/vmlinuz-* "$kdir/vmlinuz.tmp"
  fi
  # module name (dashes and underscores are the same) -> its file in the package
  declare -A ko_of=()
  while IFS= read -r f; do
    n="$(basename "$f")"; n="${n%%.ko*}"; ko_of[${n//-/_}]="$f"
  done < <(find "$kdir/x/lib/modules" -name '*.ko*')
  ko_text() { case "$1" in *.ko) cat "$1" ;; *.ko.xz) xz -dc "$1" ;; *.ko.zst) zstd -dc "$1" ;; esac; }
  rm -f "$kdir"/*.ko "$kdir"/*.order
  # place NAME: its dependencies first, then itself (once)
  place() {
    local n="${1//-/_}" f d
    [ -z "${placed[$n]:-}" ] || return 0
    f="${ko_of[$n]:-}"
    [ -n "$f" ] || { echo "build.sh: no module $n in $pkg" >&2; exit 1; }
    placed[$n]=1
    for d in $(ko_text "$f" | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' '); do place "$d"; done
    ko_text "$f" >"$kdir/$n.ko.tmp" && mv "$kdir/$n.ko.tmp" "$kdir/$n.ko"
    order+=("$n.ko")
  }
  for g in fuse vfio bench; do
    declare -A placed=()
    order=()
    for m in ${groups[$g]}; do place "$m"; done
    printf '%s\n' "${order[@]}" >"$kdir/$g.order"
  done
  echo "$pkg" >"$kdir/package"
  echo "$spec" >"$kdir/modules.spec"
  rm -rf "$kdir/x" "$kdir/dl"
  [ ! -f "$kdir/vmlinuz.tmp" ] || mv "$kdir/vmlinuz.tmp" "$kdir/vmlinuz"
fi

# --- what goes into the initramfs, and a stamp of it (rebuild only when something changed)
node_bin="$(command -v node)"
mapfile -t deps < <(cd "$root" && npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | sed "s|^$root/||" | sort -u)
[ "${#deps[@]}" -gt 0 ] || { echo "build.sh: npm ls found no runtime dependencies" >&2; exit 1; }
stamp="$( {
  echo "$node_bin $(stat -c '%s %Y' "$node_bin") $(cat "$kdir/package")"; cat "$kdir"/*.order
  cat "$here/init.sh" "$here/steps.sh" "$here/build.sh" "$root/package.json"
  (cd "$root" && find dist/src dist/bench bin build/Release -type f \( -name '*.js' -o -name '*.node' \) -printf '%p %s %T@\n' | sort)
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
  # the modules, and the order each group loads in (/lib/modules/GROUP.order)
  cp "$kdir"/*.ko "$kdir"/*.order "$work/lib/modules/"
  cp "$root/package.json" "$root/binding.gyp" "$work/prism/" 2>/dev/null || cp "$root/package.json" "$work/prism/"
  cp -r "$root/bin" "$work/prism/bin"
  mkdir -p "$work/prism/dist" && cp -r "$root/dist/src" "$root/dist/bench" "$work/prism/dist/"
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
