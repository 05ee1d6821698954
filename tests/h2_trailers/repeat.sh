#!/bin/sh
# repeat.sh [N] [LOG] - runs tests/h2_trailers/run.sh (h2c and TLS) N times in
# a row (default 50), stops at the first failure, keeps that run's output, and
# appends one line per run to LOG (default /tmp/h2_trailers_repeat.log).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
N=${1:-50}
LOG=${2:-/tmp/h2_trailers_repeat.log}
OUT=$(mktemp /tmp/h2_trailers_run.XXXXXX)
i=0
while [ $i -lt "$N" ]; do
    i=$((i + 1))
    if sh "$HERE/run.sh" > "$OUT" 2>&1; then
        echo "$(date -u +%H:%M:%S) run $i/$N ok" >> "$LOG"
    else
        echo "$(date -u +%H:%M:%S) run $i/$N FAILED: $(grep -m1 FAIL "$OUT")" >> "$LOG"
        cat "$OUT"
        echo "repeat.sh: run $i of $N failed (output above; log $LOG)"
        exit 1
    fi
done
rm -f "$OUT"
echo "repeat.sh: $N of $N runs passed in a row (log $LOG)"
