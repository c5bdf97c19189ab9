#!/usr/bin/env bash
# Every run behind docs/benchmarks.md, one after another (about 35 minutes on 2 cores).
#   bash bench/run_all.sh [OUT_DIR]       (default /tmp/benchout)
# Needs the benchmark venv (bench/requirements.txt) as $BENCH_PYTHON (default
# /tmp/benchvenv/bin/python) and the project's as $LIVE_PYTHON (default /tmp/venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/tmp/benchout}
py=${BENCH_PYTHON:-/tmp/benchvenv/bin/python}
mkdir -p "$out"
run() {
    local name=$1
    shift
    echo "== $name: $*" >&2
    "$py" "$@" --json "$out/$name.json" | tee "$out/$name.txt"
}
run fanout-2k bench/fanout.py --viewers 2000 --messages 200 --repeat 3
run fanout-10k bench/fanout.py --viewers 10000 --messages 200
run fanout-10k-core bench/fanout.py --viewers 10000 --messages 200 --servers raw,ws,live --repeat 3
for i in 1 2 3; do
    run "storm-$i" bench/storm.py --viewers 10000
done
run storm-2000 bench/storm.py --viewers 2000
run storm-5000 bench/storm.py --viewers 5000
run memory bench/storm.py --viewers 10000 --memory-only
run handshakes bench/handshakes.py
run reconnect-storm bench/handshakes.py --storm
run growth bench/growth.py
# the flash sale runs from the project's environment (it imports inventory/ and live/)
echo "== flash-sale" >&2
"${LIVE_PYTHON:-/tmp/venv/bin/python}" bench/flash_sale.py --json "$out/flash-sale.json" | tee "$out/flash-sale.txt"
