#!/bin/sh
# The scenario run inside the QEMU guest (busybox sh), driven by test/qemu/agent-in-guest.test.ts.
# Output, one marker per line (the console turns \n into \r\n):
#   PRISM STEP name ok [detail]    PRISM STEP name fail reason
#   PRISM TIME name ms             PRISM DATA name value
#   PRISM BEGIN name ... PRISM END name     (a command's output)
#   PRISM SYNC name   then reads one line from the console: the host did its part and says go
#   PRISM DONE
# Times come from /proc/uptime (10 ms resolution), the round trips' (rt-*) from node's hrtime.
VOL="${PRISM_VOLUME:-vol}"
MNT=/mnt
cd /prism || exit 1

now() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
ok() { echo "PRISM STEP $1 ok${2:+ $2}"; }
fail() { echo "PRISM STEP $1 fail $2"; }
block() { name=$1; shift; echo "PRISM BEGIN $name"; "$@" 2>&1; echo "PRISM END $name"; }
sync_host() { echo "PRISM SYNC $1"; read -r _reply </dev/console; }
md5() { md5sum | cut -d' ' -f1; }
done_() { echo "PRISM DONE"; exit 0; }

# --- FUSE in the kernel
insmod /lib/modules/fuse.ko 2>&1
if [ -c /dev/fuse ]; then ok fuse; else fail fuse "/dev/fuse missing after insmod fuse.ko"; done_; fi

# --- VFIO (init.sh loaded its modules, or says why not): the agent takes the doorbell's MSI-X through it
v=$(cat /run/prism-vfio 2>/dev/null || echo "init.sh left no /run/prism-vfio")
if [ "$v" = ok ]; then ok vfio "$(ls /dev/vfio | tr '\n' ' ')"; else fail vfio "$v"; fi

# --- the two ivshmem devices (1af4:1110) and their BAR 2
n=0
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ]; then
    n=$((n + 1))
    # BAR 2 (the memory), and BAR 1 (MSI-X: non-empty on the doorbell device)
    echo "PRISM DATA pci $(basename "$d") $(sed -n 3p "$d/resource") bar1 $(sed -n 2p "$d/resource")"
  fi
done
if [ "$n" = 2 ]; then ok pci "2 ivshmem devices"; else fail pci "$n ivshmem devices (want 2)"; fi

# --- node
t0=$(now); v=$(node -e 'process.stdout.write(process.version)' 2>&1); t1=$(now)
echo "PRISM TIME node-start $((t1 - t0))"
case "$v" in v*) ok node "$v" ;; *) fail node "$v"; done_ ;; esac
t0=$(now); prism --help >/dev/null 2>&1; t1=$(now)
echo "PRISM TIME prism-help $((t1 - t0))"

# --- mount (30 s kernel caches: a stale cache would show in the host-put step)
mkdir -p $MNT
mount_agent() {   # [extra flags]
  t0=$(now)
  out=$(prism agent mount --pci auto --volume "$VOL" --attr-timeout 30 --entry-timeout 30 --log /tmp/agent.log "$@" $MNT 2>&1)
  rc=$?
  t1=$(now)
  grep -q " $MNT fuse" /proc/mounts || [ $rc != 0 ] || { rc=99; out="exit 0 but nothing mounted: $out"; }
}
mount_agent
echo "PRISM TIME mount $((t1 - t0))"
if [ $rc = 0 ]; then
  ok mount "$out"
else
  fail mount "exit $rc: $out"
  block agent-log cat /tmp/agent.log
  # Where it fails: the agent's I/O thread's handshake, with its stack
  block mount-diagnosis node --input-type=module -e "
    const { barHolding, ivshmemBars } = await import('/prism/dist/src/guest-agent/pci.js');
    const { SyncShmClient } = await import('/prism/dist/src/vrpc/shm.js');
    const bar = barHolding('region', ivshmemBars());
    console.log('region BAR', bar, 'meta BAR', barHolding('meta', ivshmemBars()));
    try { new SyncShmClient(bar, '', 'poll', 10000, 10000); console.log('handshake ok'); }
    catch (e) { console.log(e.stack); }"
  done_
fi
block mounts grep fuse /proc/mounts

# --- a file the host put before it started: the first READ, answered from the ring
read_pre() { v=$(cat $MNT/pre.txt 2>&1); [ "$v" = "put before the host started" ]; }
if read_pre; then ok read-pre; else fail read-pre "got: $v"; fi

# --- write, read back, ls -l, stat
e=""
echo "hello from the guest" >$MNT/hello.txt || e="$e write-hello"
mkdir $MNT/dir || e="$e mkdir"
printf 'line one\nline two\n' >$MNT/dir/a.txt || e="$e write-a"
echo "appended" >>$MNT/dir/a.txt || e="$e append-a"
ln -s ../hello.txt $MNT/dir/link || e="$e symlink"
mv $MNT/dir/a.txt $MNT/dir/b.txt || e="$e rename"
[ "$(cat $MNT/hello.txt)" = "hello from the guest" ] || e="$e read-hello"
[ "$(cat $MNT/dir/b.txt)" = "$(printf 'line one\nline two\nappended')" ] || e="$e read-b"
[ "$(cat $MNT/dir/link)" = "hello from the guest" ] || e="$e read-link"
[ "$(stat -c %s $MNT/dir/b.txt)" = 27 ] || e="$e size-b"
if [ -z "$e" ]; then ok write-read; else fail write-read "failed:$e"; fi
block ls ls -lR $MNT
block stat stat $MNT/hello.txt $MNT/dir

# --- 100 small files (1 KiB each), then one 16 MiB file; reads after dropping the page cache
mkdir -p /tmp/small $MNT/small
pad=$(head -c 1000 /dev/zero | tr '\0' 'x')
names=""; for i in $(seq 1 100); do names="$names f$i"; done
for i in $(seq 1 100); do printf 'file %03d %s\n' "$i" "$pad" >/tmp/small/f$i; done
t0=$(now)
for i in $(seq 1 100); do printf 'file %03d %s\n' "$i" "$pad" >$MNT/small/f$i; done
t1=$(now)
echo "PRISM TIME small-write $((t1 - t0))"
sync; echo 3 >/proc/sys/vm/drop_caches
t0=$(now)
got=$(cd $MNT/small && cat $names | md5)
t1=$(now)
echo "PRISM TIME small-read $((t1 - t0))"
want=$(cd /tmp/small && cat $names | md5)
echo "PRISM DATA small-md5 $want"
if [ "$got" = "$want" ] && [ "$(ls $MNT/small | wc -l)" = 100 ]; then ok small-files; else fail small-files "md5 $got, want $want, $(ls $MNT/small | wc -l) files"; fi

dd if=/dev/urandom of=/tmp/big bs=1M count=16 2>/dev/null
want=$(md5 </tmp/big)
echo "PRISM DATA big-md5 $want"
t0=$(now)
cp /tmp/big $MNT/big && sync
t1=$(now)
echo "PRISM TIME big-write $((t1 - t0))"
echo 3 >/proc/sys/vm/drop_caches
t0=$(now)
got=$(md5 <$MNT/big)
t1=$(now)
echo "PRISM TIME big-read $((t1 - t0))"
if [ "$got" = "$want" ]; then ok big-file; else fail big-file "md5 $got, want $want"; fi
rm -f /tmp/big

# --- the doorbell: after the I/O above the agent waits for the host's replies on its MSI-X interrupt
stat_of() { prism agent stats $MNT --json 2>&1; }
transport_of() { echo "$1" | sed -n 's/^ *"transport": "\(.*\)",*$/\1/p'; }
counter_of() { echo "$1" | sed -n "s/^ *\"$2\": \([0-9]*\).*/\1/p"; }
s=$(stat_of)
tr_=$(transport_of "$s"); rings=$(counter_of "$s" doorbellRings); ints=$(counter_of "$s" doorbellInterrupts)
echo "PRISM DATA transport $tr_"
echo "PRISM DATA doorbell rings=${rings:-?} interrupts=${ints:-?}"
if [ "$tr_" = "shared memory, doorbell (pci)" ] && [ "${ints:-0}" -gt 0 ]; then
  ok doorbell "transport '$tr_', rings ${rings:-?}, interrupts $ints"
else
  fail doorbell "transport '${tr_:-?}', rings ${rings:-?}, interrupts ${ints:-?} (vfio: $(cat /run/prism-vfio 2>/dev/null))"
  block doorbell-stats echo "$s"
  block doorbell-agent-log grep -i -e doorbell -e vfio -e iommu /tmp/agent.log
  block doorbell-dmesg sh -c "dmesg | grep -i -e vfio -e iommu -e dmar -e msi -e 'pci 0000' | tail -n 40"
  block doorbell-devices sh -c 'for d in /sys/bus/pci/devices/*; do [ "$(cat $d/device)" = 0x1110 ] || continue; echo "$d driver=$(basename "$(readlink $d/driver)") override=$(cat $d/driver_override) iommu_group=$(readlink $d/iommu_group)"; done; ls -l /dev/vfio'
fi

# --- the host checks these files through another VM's agent, then puts files (mount has 30 s caches)
cat $MNT/hello.txt >/dev/null
stat $MNT/hello.txt >/dev/null
sync_host written
v=$(cat $MNT/from-host.txt 2>&1)
if [ "$v" = "put by the host" ]; then ok host-put-new; else fail host-put-new "got: $v"; fi
v=$(cat $MNT/hello.txt 2>&1)
if [ "$v" = "hello, replaced by the host" ]; then ok host-put-replace; else fail host-put-replace "got: $v"; fi
v=$(cat $MNT/other.txt 2>&1)
if [ "$v" = "written by the other VM" ]; then ok other-vm-write; else fail other-vm-write "got: $v"; fi

# --- metadata table: a stat pass over everything, then the agent's counters
echo 3 >/proc/sys/vm/drop_caches
ls -lR $MNT >/dev/null
for i in $(seq 1 100); do stat $MNT/small/f$i >/dev/null; done
block stats prism agent stats $MNT --json
s=$(prism agent stats $MNT --json 2>&1)
if echo "$s" | grep -q '"metaTable": "/sys/'; then ok meta-used; else fail meta-used "metaTable not a PCI BAR"; fi

# --- the guest must not be able to write the metadata table
bar=$(node --input-type=module -e "
  const { barHolding, ivshmemBars } = await import('/prism/dist/src/guest-agent/pci.js');
  process.stdout.write(barHolding('meta', ivshmemBars()) ?? '');" 2>&1)
echo "PRISM DATA meta-bar $bar"
case "$bar" in
/sys/*)
  dev=$(dirname "$bar")
  addr=$(sed -n 3p "$dev/resource" | cut -d' ' -f1)
  echo "PRISM DATA meta-addr $addr"
  # 1) mmap the BAR read-write from node (the addon maps MAP_SHARED, PROT_READ|PROT_WRITE) and write
  block meta-mmap-write node --input-type=module -e "
    const { map } = await import('/prism/dist/src/native/memory.js');
    let b;
    try { b = new Uint8Array(map('$bar')); } catch (e) { console.log('map rw refused:', e.message); process.exit(0); }
    const before = Buffer.from(b.subarray(0, 8)).toString('hex');
    b.set(Buffer.from('GUESTWR!'), 0);
    const after = Buffer.from(b.subarray(0, 8)).toString('hex');
    console.log('before', before, 'after', after, after === before ? 'unchanged' : 'CHANGED');"
  # 2) a store through /dev/mem at the BAR's physical address
  block meta-devmem-write sh -c "devmem $addr 32; devmem $addr 32 0x21525745; devmem $addr 32"
  sync_host meta-written
  v=$(stat -c %s $MNT/dir/b.txt 2>&1)
  if [ "$v" = 27 ]; then ok meta-after-write "stat still answers"; else fail meta-after-write "stat gave: $v"; fi
  ;;
*) fail meta-readonly "no metadata table BAR found: $bar" ;;
esac

# --- idle with the mount up: the host measures its own CPU between these two SYNCs
sync_host idle-begin
sleep 5
sync_host idle-end
ok idle "5 s with the mount up"

# --- round trips, doorbell vs polling: 100 creates (a CREATE each), then 100 reads of 1 KiB files after
# dropping the caches (OPEN and READ each; the table answers the LOOKUPs); rpcs counts what was sent
rt() {   # label
  r0=$(counter_of "$(stat_of)" rpcs)
  node --input-type=module -e "
    import fs from 'node:fs';
    const us = (a) => Number(process.hrtime.bigint() - a) / 1000;
    const pct = (t, p) => [...t].sort((x, y) => x - y)[Math.min(t.length - 1, Math.floor(p * t.length))].toFixed(0);
    const line = (name, t) => console.log('PRISM TIME ' + name + ' ' + (t.reduce((a, b) => a + b, 0) / 1000).toFixed(1) +
      '\nPRISM DATA ' + name + ' n=' + t.length + ' p50=' + pct(t, 0.5) + 'us p90=' + pct(t, 0.9) + 'us max=' + pct(t, 1) + 'us');
    const dir = '$MNT/rt-$1';
    fs.mkdirSync(dir);
    const c = [];
    for (let i = 0; i < 100; i++) { const a = process.hrtime.bigint(); fs.closeSync(fs.openSync(dir + '/n' + i, 'wx')); c.push(us(a)); }
    line('rt-create-$1', c);
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
    const r = [];
    for (let i = 1; i <= 100; i++) { const a = process.hrtime.bigint(); fs.readFileSync('$MNT/small/f' + i); r.push(us(a)); }
    line('rt-read-$1', r);" 2>&1
  s=$(stat_of); r1=$(counter_of "$s" rpcs)
  echo "PRISM DATA rt-$1 transport=$(transport_of "$s" | tr ' ' '_') rpcs=$(( ${r1:-0} - ${r0:-0} )) rings=$(counter_of "$s" doorbellRings) interrupts=$(counter_of "$s" doorbellInterrupts)"
}
rt doorbell
out=$(prism agent umount $MNT 2>&1) || fail remount "umount: $out"
mount_agent --no-doorbell
if [ $rc = 0 ]; then
  tr_=$(transport_of "$(stat_of)")
  if [ "$tr_" = "shared memory, polling" ]; then ok remount "--no-doorbell: $tr_"; else fail remount "--no-doorbell gave transport '$tr_'"; fi
  rt polling
  # the same idle with the guest polling (a figure, not a check)
  sync_host idle-polling-begin
  sleep 5
  sync_host idle-polling-end
  # and the doorbell once more: the device, released by the first agent, bound to vfio-pci already
  out=$(prism agent umount $MNT 2>&1) || fail remount-doorbell "umount: $out"
  mount_agent
  if [ $rc = 0 ]; then
    tr_=$(transport_of "$(stat_of)")
    if [ "$tr_" = "shared memory, doorbell (pci)" ]; then ok remount-doorbell "$tr_"; else fail remount-doorbell "transport '$tr_'"; fi
    rt doorbell2
  else
    fail remount-doorbell "exit $rc: $out"
    block agent-log-remount tail -n 30 /tmp/agent.log
  fi
else
  fail remount "exit $rc: $out"
  block agent-log-remount tail -n 30 /tmp/agent.log
fi

# --- unmount
out=$(prism agent umount $MNT 2>&1)
if [ $? = 0 ] && ! grep -q " $MNT fuse" /proc/mounts; then ok umount; else fail umount "$out"; fi
block agent-log tail -n 20 /tmp/agent.log

# --- NULL round trips of a client of our own (no agent attached now): the doorbell against polling,
# alternated, 300 calls each after 20 to warm up (figures for docs/doorbell.md, not checks)
null_rt() {   # label doorbell|poll
  node --input-type=module -e "
    import path from 'node:path';
    const { barHolding, ivshmemBars } = await import('/prism/dist/src/guest-agent/pci.js');
    const { SyncShmClient } = await import('/prism/dist/src/vrpc/shm-sync-client.js');
    const { openPciDoorbell } = await import('/prism/dist/src/guest-agent/pci-doorbell.js');
    const region = barHolding('region', ivshmemBars());
    const c = new SyncShmClient(region, '', 'poll', 30000, 10000, '$2' !== 'poll' ? () => openPciDoorbell(path.dirname(region)) : undefined);
    // 'spin': the host is rung, the reply spun for: what the guest's own work costs, without any sleep
    if ('$2' === 'spin') { const { WaitStrategy } = await import('/prism/dist/src/ring/index.js'); c.wait = new WaitStrategy({ mode: 'spin' }); }
    for (let i = 0; i < 20; i++) c.call(0);
    const t = [];
    for (let i = 0; i < 300; i++) { const a = process.hrtime.bigint(); c.call(0); t.push(Number(process.hrtime.bigint() - a) / 1000); }
    t.sort((x, y) => x - y);
    console.log('PRISM DATA null-$1 waits=' + c.waitsWith.replace(/ /g, '_') + ' p50=' + t[150].toFixed(0) + 'us p99=' + t[296].toFixed(0) + 'us');
    c.close();" 2>&1 | grep 'PRISM DATA' || echo "PRISM DATA null-$1 failed"
}
null_rt doorbell doorbell
null_rt polling poll
null_rt doorbell2 doorbell
null_rt polling2 poll
null_rt spin spin
done_
