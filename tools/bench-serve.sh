#!/usr/bin/env bash
# Bounded loopback load test of `vqad serve` with tritonclient.http: a fixed number of
# single-image BYTES requests at concurrency 1, 8 and 32 (images/s, p50/p99 latency, errors,
# dynamic batch sizes), then the same load at 32 while a new version is published (hot swap:
# no request may fail). Uses the tiny package of a `vqad demo` run (made if missing).
#
#   bash tools/bench-serve.sh [DEMO_OUT (default bench-serve)]
#   SERVE_FLAGS="--max-batch 32 ..."  (default below; instances automatic, one per core on CPU)
#   N1 N8 N32: requests per level; NSWAP: requests of the hot-swap run (long enough that the
#   new version takes over midway)
#   LOAD_TIMEOUT=120: seconds each level may take
#   MIN_RATIO=2: exit 1 when images/s at 32 is below this multiple of that at 1 (issue 12's
#   bar on the tiny preset), or when any request fails
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-bench-serve}"
vqad="${VQAD:-$here/../target/release/vqad}"
[ -x "$vqad" ] || { echo "bench-serve: build first (make build) or set VQAD=/path/to/vqad" >&2; exit 1; }
py="$(bash "$here/setup-serve-client.sh")"
client="$here/../tests/serve/client.py"
[ -f "$out/demo/registry/index.json" ] || "$vqad" demo --out "$out/demo" --train 100 --test-bad 1 >/dev/null
reg="$out/registry"
rm -rf "$reg" && cp -r "$out/demo/registry" "$reg"
img="$(ls "$out/demo/data/synth_texture/test/good/"*.png | head -1)"
# A stale address file from an earlier run would be read before the server truncates it.
rm -f "$out/serve.addr"
"$vqad" serve --registry "$reg" --pubkey "$out/demo/keys/demo.pub" --http 127.0.0.1:0 --grpc 127.0.0.1:0 \
  --providers cpu --poll-secs 1 ${SERVE_FLAGS:---max-batch 32 --max-queue-delay-us 5000} > "$out/serve.addr" 2> "$out/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -s "$out/serve.addr" ] && break; sleep 0.1; done
http="$("$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$out/serve.addr")"
for _ in $(seq 600); do curl -sf "http://$http/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
"$py" "$client" load "$http" synth_texture "$img" 20 4 >/dev/null   # warm-up
# Bounded in time as well as in requests: a level that has not finished after LOAD_TIMEOUT
# seconds fails the benchmark.
limit="${LOAD_TIMEOUT:-120}"
for spec in "1 ${N1:-40}" "8 ${N8:-160}" "32 ${N32:-320}"; do
  set -- $spec
  timeout "$limit" "$py" "$client" load "$http" synth_texture "$img" "$2" "$1" | tee -a "$out/results.jsonl"
done
# Hot swap at concurrency 32: publish 1.0.1 while the load runs.
"$vqad" package "$out/demo/run" --name synth_texture --version 1.0.1 --key "$out/demo/keys/demo.key" --out "$out/dist" --overwrite >/dev/null 2>&1
(timeout "$limit" "$py" "$client" load "$http" synth_texture "$img" "${NSWAP:-3000}" 32 > "$out/swap.json") &
lp=$!
sleep 1
"$vqad" publish "$out/dist/synth_texture-1.0.1.vqad" --registry "$reg" --pubkey "$out/demo/keys/demo.pub" >/dev/null
wait $lp
echo "hot swap under load: $(cat "$out/swap.json")"
"$py" - "$out/results.jsonl" "$out/swap.json" "${MIN_RATIO:-2}" <<'P'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][-3:]
print("| concurrency | requests | errors | images/s | p50 ms | p99 ms | batch sizes |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['concurrency']} | {r['requests']} | {r['error_count']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['batch_sizes']} |")
s = json.load(open(sys.argv[2]))
print(f"hot swap at 32: {s['ok']}/{s['requests']} answered, {s['error_count']} errors, versions {s['versions']}")
ratio = rows[2]['images_per_s'] / rows[0]['images_per_s']
print(f"throughput at 32 / at 1: {ratio:.2f}x (bar: {float(sys.argv[3]):.2f}x)")
failed = sum(r['error_count'] for r in rows) + s['error_count'] + (s['requests'] - s['ok'])
if failed:
    sys.exit(f"bench-serve: FAILED: {failed} requests failed or went unanswered")
if '1.0.1' not in s['versions']:
    sys.exit("bench-serve: FAILED: 1.0.1 never answered during the hot-swap run (raise NSWAP)")
if ratio < float(sys.argv[3]):
    sys.exit(f"bench-serve: FAILED: throughput at 32 is {ratio:.2f}x that at 1, under the bar")
P
