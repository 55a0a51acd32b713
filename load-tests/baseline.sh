#!/usr/bin/env bash
# Reference run for the load test: how fast this machine's loopback carries
# the same messages between Postfix's smtp-source and smtp-sink, with no MTA
# in between. Run it beside `cargo run --release --example load` and quote
# both, so that a figure can be read against the machine's noise.
#
#   load-tests/baseline.sh [MESSAGES] [SESSIONS]
set -euo pipefail
messages=${1:-50000}
sessions=${2:-20}
addr=127.0.1.200:25
command -v smtp-sink >/dev/null || { echo "smtp-sink missing: apt-get install postfix" >&2; exit 1; }
smtp-sink -u nobody -c "$addr" 1000 >/dev/null 2>&1 &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
sleep 0.5
start=$(date +%s.%N)
# -l: 4 KB messages, -m: total messages, -s: parallel sessions, -d: keep each
# session connected for all its messages.
smtp-source -s "$sessions" -m "$messages" -d -l 4096 -f from@load.test -t to@load.test "$addr"
end=$(date +%s.%N)
python3 -c "import sys; m, s, e = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'smtp-source -> smtp-sink: {m} messages in {e - s:.2f} s = {m / (e - s):.0f} msg/s')" "$messages" "$start" "$end"
