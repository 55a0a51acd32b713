#!/usr/bin/env bash
# Benchmark of the tracking endpoints with wrk: the open pixel (/t/o) and
# the click redirect (/t/c), on this machine, over loopback.
#
#   load-tests/tracking-wrk.sh [MESSAGES]        (default 16000)
#
# It starts facteur-sink and facteur (release build) on 127.0.0.1, sends
# MESSAGES tracked marketing messages through the sink, reads their pixel
# and click URLs back from the delivered mail, and runs
# `wrk -t2 -c64 -d15s --latency` three times on each endpoint as fast as it
# can, then three times paced (wrk's delay() hook: PACE_MS, default 1 ms,
# between a connection's requests; about 25,000 requests a second here), to
# read the latency at a given rate rather than at saturation, spreading the
# requests over every message's URL (a browser user agent: opens and clicks
# by people, the path that also sets the unique markers). It does so twice:
# with tracking.flush_events off (events written to sled before the answer,
# on disk within sled's 50 ms flush) and on (the answer waits for the spool's
# group commit). It prints requests per second and p99 latency of each run
# and their medians, then checks that every request answered is on a
# message's timeline: after a SIGTERM and a restart, the number of opened
# and clicked events stored must be at least the number of requests wrk
# saw answered.
#
# The load average is printed first: wrk and facteur share this machine's
# cores, so anything else running skews the figures.
#
# Needs wrk, python3 and curl; reaches loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${1:-16000}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
DURATION=${DURATION:-15s}
RUNS=${RUNS:-3}
PACE_MS=${PACE_MS:-1}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

# BIN=DIR uses binaries already built there (say, a copy kept apart from a
# target directory others are building in).
if [[ -z ${BIN:-} ]]; then
  cargo build --release --quiet --bin facteur --bin facteur-sink
  BIN=target/release
fi

WORK=$(mktemp -d /tmp/facteur-wrk-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- the SMTP sink -----------------------------------------------------------
"$BIN/facteur-sink" --listen 127.0.0.1:0 --log "$WORK/sink.jsonl" --maildir "$WORK/mail" \
  >"$WORK/sink.out" 2>"$WORK/sink.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q listening "$WORK/sink.out" 2>/dev/null && break; sleep 0.1; done
SINK=$(awk '/listening/ {print $2; exit}' "$WORK/sink.out")
[[ -n $SINK ]] || { echo "facteur-sink did not start" >&2; exit 1; }

API_PORT=$(free_port)
API="http://127.0.0.1:$API_PORT"
FACTEUR_PID=

# start_facteur FLUSH_EVENTS: (re)starts facteur on the same spool.
start_facteur() {
  cat >"$WORK/facteur.toml" <<EOF
[api]
listen = "127.0.0.1:$API_PORT"
public_url = "$API"
max_recipients = 1000
[spool]
data_dir = "$WORK/data"
[delivery]
relay = "$SINK"
helo_name = "bench.test"
bounce_domain = "bounces.bench.test"
[tracking]
keys = ["1:benchmark-tracking-key-0123456789"]
scanner_click_window = "0s"
flush_events = $1
EOF
  "$BIN/facteur" serve --config "$WORK/facteur.toml" >>"$WORK/facteur.out" 2>>"$WORK/facteur.err" &
  FACTEUR_PID=$!
  PIDS+=("$FACTEUR_PID")
  for _ in $(seq 200); do
    curl -sf "$API/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "facteur did not start:" >&2; tail -20 "$WORK/facteur.err" >&2; exit 1
}

stop_facteur() {
  kill -TERM "$FACTEUR_PID"
  wait "$FACTEUR_PID" || true
}

start_facteur false

# --- messages, delivered to the sink -----------------------------------------
echo "sending $MESSAGES tracked messages through the sink..."
python3 - "$API" "$MESSAGES" <<'EOF'
import json, sys, urllib.request
api, n = sys.argv[1], int(sys.argv[2])
html = '<html><body><p>Hello {{ name }}</p><p><a href="https://shop.bench.test/offer?id={{ name }}">Offer</a></p></body></html>'
sent = 0
while sent < n:
    k = min(1000, n - sent)
    body = {"from": "news@brand.bench.test", "subject": "Offer", "html": html,
            "category": "marketing", "campaign": "bench",
            "recipients": [{"email": f"r{sent+i}@bench.test", "vars": {"name": f"r{sent+i}"}} for i in range(k)]}
    req = urllib.request.Request(api + "/v1/messages", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
    sent += k
EOF
for _ in $(seq 600); do
  n=$(find "$WORK/mail" -name '*.eml' 2>/dev/null | wc -l)
  ((n >= MESSAGES)) && break
  sleep 0.2
done
echo "delivered: $n"

# --- the tracking URLs, read from the delivered mail ---------------------------
python3 - "$WORK/mail" "$WORK" <<'EOF'
import email, email.policy, pathlib, re, sys
mail, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
opens, clicks, ids = [], [], []
for f in sorted(mail.glob("*.eml")):
    m = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
    html = m.get_body(("html",)).get_content()
    opens += re.findall(r'src="https?://[^/"]+(/t/o/[^"]+)"', html)
    clicks += re.findall(r'href="https?://[^/"]+(/t/c/[^"]+)"', html)
    ids.append(m["X-Facteur-Id"])
(out / "opens.txt").write_text("\n".join(opens) + "\n")
(out / "clicks.txt").write_text("\n".join(clicks) + "\n")
(out / "ids.txt").write_text("\n".join(ids) + "\n")
print(f"urls: {len(opens)} pixels, {len(clicks)} links")
EOF

# A wrk script that walks through the URLs of a file, each thread from its
# own offset, with a desktop browser's user agent.
cat >"$WORK/paths.lua" <<'EOF'
local paths, i = {}, 0
local file = os.getenv("WRK_PATHS")
for line in io.lines(file) do if #line > 0 then paths[#paths + 1] = line end end
local counter = 0
function setup(thread) counter = counter + 1; thread:set("offset", counter * 7919) end
function init(args) i = offset or 0 end
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
function request()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
-- Paced runs: each connection waits WRK_DELAY_MS between requests.
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
function delay() return pause end
EOF

# run ENDPOINT FILE [DELAY_MS]: RUNS wrk runs, as fast as wrk can (no
# DELAY_MS), or paced, each connection pausing DELAY_MS between requests
# (64 connections and 1 ms: about 25,000 requests a second here);
# prints each and the medians; adds the requests answered (2xx/3xx) to
# ANSWERED.
ANSWERED=0
run() {
  local name=$1 file=$2 pace=${3:-0} rps=() p99=()
  if ((pace > 0)); then name="$name paced ${pace}ms"; fi
  for r in $(seq "$RUNS"); do
    out=$(WRK_PATHS="$file" WRK_DELAY_MS="$pace" wrk -t2 -c64 -d"$DURATION" --latency -s "$WORK/paths.lua" "$API")
    local req_s lat total bad
    req_s=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    lat=$(awk '$1 == "99%" {print $2}' <<<"$out")
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    bad=$(awk '/Non-2xx or 3xx/ {print $NF}' <<<"$out")
    ANSWERED=$((ANSWERED + total - ${bad:-0}))
    printf '  %s run %d: %s req/s, p99 %s (%s requests, %s non-2xx/3xx)\n' \
      "$name" "$r" "$req_s" "$lat" "$total" "${bad:-0}"
    rps+=("$req_s")
    p99+=("$lat")
  done
  python3 - "$name" "${rps[*]}" "${p99[*]}" <<'EOF'
import statistics, sys
def ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit) and (unit != "s" or not v.endswith(("us", "ms"))):
            return float(v[: -len(unit)]) * f
    return float(v)
name, rps, p99 = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
print(f"  {name} median: {statistics.median(float(r) for r in rps):.0f} req/s, "
      f"p99 {statistics.median(ms(p) for p in p99):.2f} ms")
EOF
}

# The floor of this machine: the same wrk on /healthz (no tracking, no
# spool), to read the figures below against.
out=$(wrk -t2 -c64 -d"$DURATION" --latency "$API/healthz")
printf '== reference: /healthz: %s req/s, p99 %s ==\n' \
  "$(awk '/^Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")"

for flush in false true; do
  if [[ $flush == true ]]; then stop_facteur; start_facteur true; fi
  echo "== tracking.flush_events = $flush =="
  run "/t/o" "$WORK/opens.txt"
  run "/t/o" "$WORK/opens.txt" "$PACE_MS"
  run "/t/c" "$WORK/clicks.txt"
  run "/t/c" "$WORK/clicks.txt" "$PACE_MS"
done

# --- every answered request is stored, across a restart ------------------------
stop_facteur
start_facteur false
python3 - "$API" "$WORK/ids.txt" "$ANSWERED" <<'EOF'
import json, sys, urllib.request
api, ids, answered = sys.argv[1], open(sys.argv[2]).read().split(), int(sys.argv[3])
stored = 0
for i in ids:
    m = json.load(urllib.request.urlopen(f"{api}/v1/messages/{i}"))
    stored += sum(1 for e in m["events"] if e["type"] in ("opened", "clicked"))
print(f"stored after a restart: {stored} opened/clicked events for {answered} requests answered")
sys.exit(0 if stored >= answered else 1)
EOF
