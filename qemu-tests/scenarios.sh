#!/usr/bin/env bash
# Level 3, scenario by scenario: every image scenario (one #[test] of one
# tests/*.rs file) runs as a job of its own, one after another. A job's
# output is printed whole when it ends, with its time; the summary at the
# end lists every job with its result and seconds, sorted by time (also in
# build/qemu-tests/timings.tsv: name<TAB>seconds<TAB>outcome), and every
# soft-lockup retry (build/qemu-tests/retries.txt); the script exits
# non-zero when any job failed.
#
# One at a time on purpose: two side by side were measured as a loss on
# the 2-core machine (qemu-tests/README.md, "Running").
set -uo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
out=build/qemu-tests/jobs
timings=build/qemu-tests/timings.tsv
rm -rf "$out"
mkdir -p "$out"
: >"$timings"

"$cargo" test -p qemu-tests --no-run --quiet || exit 1

jobs=()
for f in qemu-tests/tests/*.rs; do
  t=$(basename "$f" .rs)
  while read -r name; do
    [ -n "$name" ] && jobs+=("$t::$name")
  done < <("$cargo" test -p qemu-tests --quiet --test "$t" -- --list --format terse 2>/dev/null |
    sed -n 's/: test$//p')
done
echo "qemu-tests: ${#jobs[@]} scenarios, one at a time"

started=$(date +%s)
failed=0
# The harness's own unit and doc tests first (no machine), then each scenario.
for job in lib-and-doc "${jobs[@]}"; do
  log="$out/${job//::/--}.log"
  start=$(date +%s)
  if [ "$job" = lib-and-doc ]; then
    { "$cargo" test -p qemu-tests --lib && "$cargo" test -p qemu-tests --doc; } >"$log" 2>&1
  else
    "$cargo" test -p qemu-tests --test "${job%%::*}" -- --exact "${job#*::}" --test-threads=1 >"$log" 2>&1
  fi
  rc=$?
  # A filter that matched nothing runs no test and passes: not here.
  if [ $rc -eq 0 ] && [ "$job" != lib-and-doc ] && ! grep -q '^running 1 test$' "$log"; then
    echo "scenarios.sh: $job ran no test" >>"$log"
    rc=1
  fi
  result=ok
  [ $rc -eq 0 ] || { result=FAILED; failed=$((failed + 1)); }
  took=$(($(date +%s) - start))
  echo "=== $job: $result in ${took}s"
  cat "$log"
  printf '%s\t%s\t%s\n' "$job" "$took" "$result" >>"$timings"
done

echo "=== qemu-tests summary ($(($(date +%s) - started))s in all)"
sort -t$'\t' -k2,2rn "$timings" | awk -F'\t' '{ printf "%-8s %5ss  %s\n", $3, $2, $1 }'
# Every soft-lockup retry (qemu-tests/src/lockup.rs); the harness's own
# unit tests print one on purpose, so only the scenarios' logs count.
grep -h '^RETRY:' $(ls "$out"/*.log | grep -v '/lib-and-doc.log$') >build/qemu-tests/retries.txt 2>/dev/null
if [ -s build/qemu-tests/retries.txt ]; then
  echo "=== $(wc -l <build/qemu-tests/retries.txt) scenario(s) retried after a soft lockup (build/qemu-tests/retries.txt):"
  cat build/qemu-tests/retries.txt
fi
if [ $failed -ne 0 ]; then
  echo "qemu-tests: $failed of $((${#jobs[@]} + 1)) jobs failed" >&2
  exit 1
fi
echo "qemu-tests: all $((${#jobs[@]} + 1)) jobs passed"
