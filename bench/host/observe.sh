#!/bin/sh
# The benchmark observer, run inside both hosts the same way: on walden as
# a [[service]] of the bench config, on the baseline as the systemd unit
# bench-observe.service.
#
# Usage: observe.sh LOGDIR GUEST...
#
# 1. Copies every guest's serial log (LOGDIR/GUEST.log, written by libvirt
#    on both hosts) to the serial console with a "guest-log: " prefix, so
#    the harness sees "guest-log: GUEST-UP <name>" the moment the host sees it.
# 2. Once every guest printed GUEST-UP, waits 10 s for the host to settle and
#    prints one line:
#      BENCH-MEM total_kib=.. inuse_kib=.. guests_anon_kib=.. host_kib=..
#                used_kib=.. guests_pss_kib=.. host_avail_kib=..
#                pid1_rss_kib=.. walden_rss_kib=.. walden_pss_kib=.. walden_uss_kib=..
#                walden_anon_kib=..
#                libvirtd_rss_kib=.. virtlogd_rss_kib=..
#                anon_kib=.. shmem_kib=.. sunreclaim_kib=.. kernelstack_kib=..
#                pagetables_kib=.. percpu_kib=.. vmalloc_kib=..  (/proc/meminfo, whole host)
#    inuse = what free(1) calls used, with tmpfs counted: MemTotal - MemFree
#    - Buffers - (Cached - Shmem) - SReclaimable; host = inuse - the guests'
#    QEMU anonymous memory (their RAM, heap and TCG buffers; the QEMU binary
#    and libraries are page cache, already out of inuse).
#    used = MemTotal - MemAvailable, which also holds the kernel's free-page
#    reserves (the watermarks: ~140 MiB of a 2 GiB machine with transparent
#    hugepages) and part of the page cache; host_avail = used - the guests'
#    QEMU PSS. Both are reported; inuse is the headline.
#    Just before it, one BENCH-MEMINFO line: all of /proc/meminfo as name=KiB.
# Runs until stopped; the console copy keeps running through shutdown.
logdir="$1"
shift
mkdir -p "$logdir"
logs=
for g in "$@"; do logs="$logs $logdir/$g.log"; done
# shellcheck disable=SC2086 # a list of files
tail -q -n +1 -F $logs 2>/dev/null | sed -u 's/^/guest-log: /' > /dev/console &

meminfo() { awk -v k="$1:" '$1 == k { print $2 }' /proc/meminfo; }

# Sum of FIELD (VmRSS in status, Pss in smaps_rollup) over processes whose
# comm matches the case pattern PATTERN.
sum_of() {
    pattern="$1" file="$2" field="$3" total=0
    for d in /proc/[0-9]*; do
        comm="$(cat "$d/comm" 2>/dev/null)" || continue
        # shellcheck disable=SC2254 # the pattern is a glob on purpose
        case "$comm" in
            $pattern)
                v="$(awk -v k="$field:" '$1 == k { print $2 }' "$d/$file" 2>/dev/null)"
                total=$((total + ${v:-0}))
                ;;
        esac
    done
    echo "$total"
}

while :; do
    up=1
    for g in "$@"; do
        grep -q "GUEST-UP $g " "$logdir/$g.log" 2>/dev/null || up=0
    done
    [ "$up" = 1 ] && break
    sleep 1
done
sleep 10
total="$(meminfo MemTotal)"
used=$((total - $(meminfo MemAvailable)))
inuse=$((total - $(meminfo MemFree) - $(meminfo Buffers) - $(meminfo Cached) + $(meminfo Shmem) - $(meminfo SReclaimable)))
guests="$(sum_of 'qemu-system-*' smaps_rollup Pss)"
guests_anon="$(sum_of 'qemu-system-*' smaps_rollup Anonymous)"
pid1="$(awk '$1 == "VmRSS:" { print $2 }' /proc/1/status)"
# walden's own: PID 1 (its comm is "init", /proc/1/exe is walden-init) and
# `walden supervise`; 0 on the baseline.
walden() {
    file="$1" field="$2"
    n="$(sum_of 'walden*' "$file" "$field")"
    case "$(readlink /proc/1/exe)" in
        */walden*) n=$((n + $(awk -v k="$field:" '$1 == k { print $2 }' "/proc/1/$file"))) ;;
    esac
    echo "$n"
}
awk '{ sub(":", "", $1); printf "%s%s=%s", (NR > 1 ? " " : "BENCH-MEMINFO "), $1, $2 } END { print "" }' \
    /proc/meminfo > /dev/console
uss=$(($(walden smaps_rollup Private_Clean) + $(walden smaps_rollup Private_Dirty)))
echo "BENCH-MEM total_kib=$total inuse_kib=$inuse guests_anon_kib=$guests_anon host_kib=$((inuse - guests_anon))" \
    "used_kib=$used guests_pss_kib=$guests host_avail_kib=$((used - guests))" \
    "pid1_rss_kib=$pid1 walden_rss_kib=$(walden status VmRSS)" \
    "walden_pss_kib=$(walden smaps_rollup Pss) walden_uss_kib=$uss walden_anon_kib=$(walden smaps_rollup Anonymous)" \
    "libvirtd_rss_kib=$(sum_of libvirtd status VmRSS) virtlogd_rss_kib=$(sum_of virtlogd status VmRSS)" \
    "anon_kib=$(meminfo AnonPages) shmem_kib=$(meminfo Shmem) sunreclaim_kib=$(meminfo SUnreclaim)" \
    "kernelstack_kib=$(meminfo KernelStack) pagetables_kib=$(meminfo PageTables)" \
    "percpu_kib=$(meminfo Percpu) vmalloc_kib=$(meminfo VmallocUsed)" \
    > /dev/console
wait
