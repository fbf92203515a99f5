#!/usr/bin/env bash
# The userland of the bench guest (`npm run bench -- guest`): this machine's own Debian packages for a
# shell, make, gcc, git, tar and mount, with everything they depend on, on an ext4 image the guest
# mounts read-only and chroots into to run the workloads (the initramfs has only busybox and node).
# Built once and kept in the cache until the installed packages change. Prints TOOLS=path.
#
#   scripts/qemu-guest/tools-image.sh       # needs e2fsprogs (mkfs.ext4 -d)
set -euo pipefail

cache="${PRISM_QEMU_CACHE:-/var/tmp/prism-qemu}"
mkdir -p "$cache"
ROOTS=(dash bash coreutils findutils grep sed mawk gzip tar make gcc gcc-12 cpp-12 binutils libc6-dev git mount util-linux diffutils libc-bin)

# installed packages the roots need (Depends and Pre-Depends, recursively; the first of alternatives
# that is installed)
declare -A seen=()
pkgs=()
visit() {
  local p="${1%%:*}" d
  [ -z "${seen[$p]:-}" ] || return 0
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 0
  seen[$p]=1
  pkgs+=("$p")
  for d in $(dpkg-query -W -f='${Depends}, ${Pre-Depends}' "$p" | tr ',' '\n' | sed 's/([^)]*)//g; s/|/\n/g' | awk '{ print $1 }'); do
    visit "$d"
  done
}
for p in "${ROOTS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || { echo "tools-image.sh: $p is not installed" >&2; exit 1; }
  visit "$p"
done

stamp="$(for p in "${pkgs[@]}"; do dpkg-query -W -f='${Package} ${Version}\n' "$p"; done | sort | cat - "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
image="$cache/tools-$stamp.ext4"
if [ ! -f "$image" ]; then
  work="$(mktemp -d "$cache/tools.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  # Debian 12 merges /bin, /sbin and /lib into /usr while dpkg lists the old paths: files are taken
  # from under usr/, and the old names become links in the image as on this machine
  for p in "${pkgs[@]}"; do dpkg -L "$p"; done | grep -vE '^/usr/share/(doc|man|info|locale|lintian)/' |
    sed -E 's#^/(bin|sbin|lib|lib32|lib64|libx32)/#/usr/\1/#; s#^/##' | sort -u |
    while IFS= read -r f; do if [ -f "/$f" ] || [ -L "/$f" ]; then echo "$f"; fi; done >"$work/files"
  mkdir -p "$work/root"
  tar -C / --no-recursion -cf - -T "$work/files" | tar -C "$work/root" -xf -
  for d in bin sbin lib lib32 lib64 libx32; do [ ! -d "$work/root/usr/$d" ] || ln -s "usr/$d" "$work/root/$d"; done
  # commands chosen with update-alternatives (awk, cc, ...) are links their packages' scripts made,
  # not files dpkg lists: the image gets those whose choice here it holds, pointing straight at it
  for l in /usr/bin/* /usr/sbin/*; do
    [ -L "$l" ] && [ ! -e "$work/root$l" ] || continue
    case "$(readlink "$l")" in /etc/alternatives/*) ;; *) continue ;; esac
    t="$(readlink -f "$l")"
    [ ! -e "$work/root$t" ] || ln -s "$t" "$work/root$l"
  done
  mkdir -p "$work/root"/{dev,proc,sys,tmp,run,mnt/t,in,root,etc}
  printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$work/root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/root/etc/group"
  [ -x "$work/root/usr/bin/gcc" ] && [ -x "$work/root/usr/bin/make" ] && [ -x "$work/root/usr/bin/git" ] ||
    { echo "tools-image.sh: gcc, make or git did not make it into the image" >&2; exit 1; }
  size=$(( $(du -sm "$work/root" | cut -f1) * 13 / 10 + 64 ))
  mkfs.ext4 -q -F -L prism-tools -d "$work/root" "$image.tmp" "${size}M" >/dev/null
  mv "$image.tmp" "$image"
  find "$cache" -maxdepth 1 -name 'tools-*.ext4' ! -name "$(basename "$image")" -delete
  echo "tools-image.sh: $(du -h "$image" | cut -f1) from ${#pkgs[@]} packages" >&2
fi
echo "TOOLS=$image"
