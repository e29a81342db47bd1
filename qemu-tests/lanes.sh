#!/usr/bin/env bash
# Level 3, scenario by scenario: every image scenario (one #[test] of one
# tests/*.rs file) is a job, QEMU_LANES of them at a time (default 1).
#
# Two at a time was measured and loses on a 2-core machine: each outer
# machine has two vCPUs under multi-threaded TCG, a booting host keeps both
# busy, and paired the upgrade scenarios took 344-364 s each against about
# 125 s one after another (qemu-tests/README.md). QEMU_LANES=2 stays for
# machines with more cores: then the scenarios whose nested guests boot
# Linux or firmware (`heavy` below) still run alone, first.
#
# A job's output is printed whole when it ends, with its time; the summary
# at the end lists every job, its result and its time (also in
# build/qemu-tests/timings.tsv, name<TAB>seconds<TAB>outcome) and every
# soft-lockup retry (build/qemu-tests/retries.txt); the script exits
# non-zero when any job failed.
set -uo pipefail
cd "$(dirname "$0")/.."

lanes=${QEMU_LANES:-1}
# The harness lets this many scenarios hold a QEMU slot at once.
export WALDEN_QEMU_SLOTS=$lanes
cargo=${CARGO:-cargo}
out=build/qemu-tests/lanes
timings=build/qemu-tests/timings.tsv
rm -rf "$out"
mkdir -p "$out"
: >"$timings"

# Build every test binary once, so the jobs do not wait on cargo's lock.
"$cargo" test -p qemu-tests --no-run --quiet || exit 1

# Scenarios whose nested guests boot Linux (or spin in firmware) keep both
# of the machine's vCPUs, and so both cores, busy for minutes: each runs
# alone (an exclusive lock; light jobs share it), and they all go first,
# so the light ones pair up after them. Beside a heavy one, a light
# scenario got a third of a core and missed its deadlines. Longest first
# within each list (seconds measured on the 2-core machine:
# qemu-tests/README.md); scenarios not named here are light and follow the
# named ones.
heavy=(
  guests::guest_disks_are_made_and_attached_as_configured_and_a_uefi_guest_boots
  examples::internal_bridge_then_appliance_examples_run_with_stand_ins
  examples::bonded_vlans_example_runs_with_stand_ins
  make_run::make_run_boots_the_appliance_example_and_powers_off_on_the_button
  guests::passthrough_e1000e_and_vlan_guest_reach_their_devices
)
light_first=(
  upgrade::wedged_version_is_reset_by_the_watchdog_and_rolled_back
  upgrade::unhealthy_version_rolls_back_after_its_tries
  guests::killed_guest_is_restarted_until_the_crash_loop_limit
  guests::two_guests_start_in_order_and_stop_cleanly_on_the_power_button
  upgrade::install_trial_mark_good_then_manual_rollback
  guests::config_apply_adds_c_removes_b_and_leaves_a_alone
  mounts::data_disk_is_mounted_by_label_with_swap_and_a_guest_disk_and_its_absence_only_holds_that_guest
)
all=()
for f in qemu-tests/tests/*.rs; do
  t=$(basename "$f" .rs)
  while read -r name; do
    [ -n "$name" ] && all+=("$t::$name")
  done < <("$cargo" test -p qemu-tests --quiet --test "$t" -- --list --format terse 2>/dev/null |
    sed -n 's/: test$//p')
done
known() { case " $* " in *" $job "*) return 0 ;; esac; return 1; }
heavy_jobs=() light_jobs=()
for job in "${heavy[@]}" "${light_first[@]}"; do
  known "${all[@]}" || { echo "lanes.sh: $job is no scenario (renamed? fix the lists in $0)" >&2; exit 1; }
done
for job in "${heavy[@]}"; do heavy_jobs+=("$job"); done
for job in "${light_first[@]}"; do light_jobs+=("$job"); done
for job in "${all[@]}"; do
  known "${heavy[@]}" "${light_first[@]}" || light_jobs+=("$job")
done
# The harness's own unit tests and doc tests: no machine, one job.
light_jobs+=("lib-and-doc")
total=$((${#heavy_jobs[@]} + ${#light_jobs[@]}))
echo "qemu-tests: $total jobs (${#all[@]} scenarios, ${#heavy_jobs[@]} heavy ones alone first), $lanes at a time"

run_job() {
  local job=$1 log="$out/${1//::/--}.log" start rc
  start=$(date +%s)
  if [ "$job" = lib-and-doc ]; then
    { "$cargo" test -p qemu-tests --lib && "$cargo" test -p qemu-tests --doc; } >"$log" 2>&1
  else
    "$cargo" test -p qemu-tests --test "${job%%::*}" -- --exact "${job#*::}" --test-threads=1 >"$log" 2>&1
  fi
  rc=$?
  # A filter that matched nothing runs no test and passes: not here.
  if [ $rc -eq 0 ] && [ "$job" != lib-and-doc ] && ! grep -q '^running 1 test$' "$log"; then
    echo "lanes.sh: $job ran no test (renamed?)" >>"$log"
    rc=1
  fi
  local took=$(($(date +%s) - start)) result=ok
  [ $rc -eq 0 ] || result=FAILED
  # One job's output at a time on the terminal.
  {
    flock 9
    echo "=== $job: $result in ${took}s"
    cat "$log"
    printf '%s\t%s\t%s\n' "$job" "$took" "$result" >>"$timings"
  } 9>"$out/.print.lock"
}

# A lane: the jobs nobody has claimed yet (mkdir is the claim), heavy ones
# first; a heavy job holds the machine lock exclusively, a light one
# shared.
lane() {
  local job
  mkdir -p "$out/claimed"
  for job in "${heavy_jobs[@]}" "${light_jobs[@]}"; do
    mkdir "$out/claimed/${job//::/--}" 2>/dev/null || continue
    if known "${heavy_jobs[@]}"; then
      { flock -x 8; run_job "$job"; } 8>"$out/.machine.lock"
    else
      { flock -s 8; run_job "$job"; } 8>"$out/.machine.lock"
    fi
  done
}

started=$(date +%s)
pids=()
for ((i = 0; i < lanes; i++)); do
  lane &
  pids+=($!)
done
wait "${pids[@]}"
echo "=== qemu-tests summary ($lanes lanes, $(($(date +%s) - started))s in all)"
sort -t$'\t' -k2,2rn "$timings" | awk -F'\t' '{ printf "%-8s %5ss  %s\n", $3, $2, $1; sum += $2 }
  END { printf "%d jobs, %ds of machine time\n", NR, sum }'
# Every soft-lockup retry (qemu-tests/src/lockup.rs), visible in every run.
# (The harness's own unit tests print one on purpose: not theirs.)
grep -h '^RETRY:' $(ls "$out"/*.log | grep -v '/lib-and-doc.log$') >build/qemu-tests/retries.txt 2>/dev/null
if [ -s build/qemu-tests/retries.txt ]; then
  echo "=== $(wc -l <build/qemu-tests/retries.txt) scenario(s) retried after a soft lockup (build/qemu-tests/retries.txt):"
  cat build/qemu-tests/retries.txt
fi
failed=$(grep -c $'\tFAILED$' "$timings")
ran=$(wc -l <"$timings")
if [ "${ran:-0}" -ne "$total" ]; then
  echo "qemu-tests: only ${ran:-0} of $total jobs reported" >&2
  exit 1
fi
if [ "${failed:-0}" -ne 0 ]; then
  echo "qemu-tests: ${failed:-0} of $total jobs failed" >&2
  exit 1
fi
echo "qemu-tests: all $total jobs passed"
