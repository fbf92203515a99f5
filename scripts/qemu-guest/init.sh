#!/bin/sh
# /init of the Prism test guest (busybox). Mounts the pseudo file systems, loads VFIO's modules (for the
# ivshmem doorbell: the agent binds the device to vfio-pci; without them it polls), then runs
# /steps.sh (the scenario test/qemu/agent-in-guest.test.ts drives over the serial console) and powers
# off. Kernel command line: prism.volume=VOL (default vol), prism.shell=1 for a shell instead,
# prism.vfio=0 to leave VFIO's modules out (the agent then polls), prism.bench=1 to run the guest
# benchmark's workloads instead of the steps (bench/guest-run.ts, driven by bench/guest.ts).
/bin/busybox --install -s /bin 2>/dev/null
export PATH=/bin:/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
echo "PRISM UP $(cut -d' ' -f1 /proc/uptime)"
arg() { sed -n "s/.*\bprism\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }

# VFIO, in dependency order (/lib/modules/vfio.order, from build.sh). A failure is not fatal: the agent
# then waits for replies by polling. /run/prism-vfio says what happened (steps.sh reports it).
vfio=ok
if [ "$(arg vfio)" = 0 ]; then
  vfio="not loaded (prism.vfio=0)"
else
  for m in $(cat /lib/modules/vfio.order 2>/dev/null); do
    out=$(insmod "/lib/modules/$m" 2>&1) || { vfio="insmod $m failed: $out"; break; }
  done
  [ -n "$(cat /lib/modules/vfio.order 2>/dev/null)" ] || vfio="no /lib/modules/vfio.order in the initramfs"
fi
[ "$vfio" != ok ] || [ -c /dev/vfio/vfio ] || vfio="/dev/vfio/vfio missing after loading the modules"
[ "$vfio" != ok ] || [ -d /sys/bus/pci/drivers/vfio-pci ] || vfio="no vfio-pci driver after loading the modules"
echo "$vfio" >/run/prism-vfio

if [ "$(arg bench)" = 1 ]; then
  node /prism/dist/bench/guest-run.js </dev/null
elif [ "$(arg shell)" = 1 ]; then
  insmod /lib/modules/fuse.ko
  echo "Prism guest shell: prism agent mount --pci auto --volume VOL /mnt"
  setsid cttyhack sh
else
  PRISM_VOLUME="$(arg volume)" sh /steps.sh </dev/null   # only SYNC reads the console
fi
echo "PRISM OFF $(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
