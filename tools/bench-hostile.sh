#!/usr/bin/env bash
# Hostile clients against `vqad serve` on loopback, through NVIDIA's tritonclient (HTTP and
# gRPC), with the tiny package of a `vqad demo` run (made if missing): issue 25's acceptance,
# printed as figures, exit 1 when a bar is missed.
#
#   1. Bombs: 20000 x 20000 images (PNG 388 KB, JPEG, BMP, TIFF), each sent ROUNDS (5) times
#      over HTTP and over gRPC: every answer must be invalid-argument naming size and limit,
#      the median latency per bomb and protocol under MAX_MS (100), and the server's peak RSS
#      must grow by less than MAX_GROWTH_MB (100) over its warm peak.
#   2. `vqad detect` on the bombs and three normal images: exit 4, each bomb named, the three
#      processed.
#   3. 16 threads sending bombs while 8 send NORMAL (200) normal requests: every normal one
#      answered, the server never restarted, its peak RSS under the warm peak (the loaded
#      models) plus the configured budget (BUDGET_MB, 256).
#   4. SLOW (300) connections that send headers and 1 byte of a 100 kB body, then nothing,
#      while normal requests go on: every normal one answered, every slow one closed within
#      the body timeout (the default, 30 s) plus CLOSE_SLACK_S (2).
#   5. Legal but large frames (3000 x 3000 noise PNG, 27 MB) 12 at once: over the budget they
#      get 429 / RESOURCE_EXHAUSTED, and the peak RSS stays under models + budget + 64 MiB.
#
#   bash tools/bench-hostile.sh [OUT (default bench-hostile)]
#   VQAD=/path/to/vqad  BOMBS=/path/to/image_bombs (examples; built by `cargo build --release --examples`)
#   SERVE_FLAGS: extra flags for every server start
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-bench-hostile}"
vqad="${VQAD:-$here/../target/release/vqad}"
bombs_bin="${BOMBS:-$here/../target/release/examples/image_bombs}"
[ -x "$vqad" ] || { echo "bench-hostile: build first (make build) or set VQAD=/path/to/vqad" >&2; exit 1; }
[ -x "$bombs_bin" ] || { echo "bench-hostile: build the examples first (cargo build --release --examples) or set BOMBS=" >&2; exit 1; }
py="$(bash "$here/setup-serve-client.sh")"
client="$here/../tests/serve/client.py"
mkdir -p "$out"
[ -f "$out/demo/registry/index.json" ] || "$vqad" demo --out "$out/demo" --train 100 --test-bad 1 >/dev/null
[ -f "$out/bombs/noise.png" ] || "$bombs_bin" "$out/bombs" --noise 3000 >/dev/null
img="$(ls "$out/demo/data/synth_texture/test/good/"*.png | head -1)"
budget="${BUDGET_MB:-256}"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

start() {  # start FLAGS...: a server on free ports; sets pid, http, grpc, warm (peak RSS after warm-up, KiB)
  cleanup
  rm -f "$out/serve.addr"
  "$vqad" serve --registry "$out/demo/registry" --pubkey "$out/demo/keys/demo.pub" --http 127.0.0.1:0 --grpc 127.0.0.1:0 \
    --providers cpu "$@" ${SERVE_FLAGS:-} > "$out/serve.addr" 2>> "$out/serve.log" &
  pid=$!
  for _ in $(seq 200); do [ -s "$out/serve.addr" ] && break; sleep 0.1; done
  http="$("$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$out/serve.addr")"
  grpc="$("$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["grpc"])' "$out/serve.addr")"
  for _ in $(seq 600); do curl -sf "http://$http/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  "$py" "$client" load "$http" synth_texture "$img" 40 8 >/dev/null   # warm-up: sessions and arenas at working size
  warm="$(hwm)"
}
hwm() { awk '/VmHWM/ {print $2}' "/proc/$pid/status"; }

echo "== 1. bombs, ${ROUNDS:-5} rounds over HTTP and gRPC"
start --max-inflight-mb "$budget" --max-body-mb 64
bomb_warm="$warm"
: > "$out/bombs.jsonl"
for _ in $(seq "${ROUNDS:-5}"); do
  "$py" "$client" hostile "$http" "$grpc" synth_texture "$out"/bombs/bomb.{png,jpg,bmp,tif} >> "$out/bombs.jsonl"
done
bomb_peak="$(hwm)"
alive1=$(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0)

echo "== 2. vqad detect on bombs and normal images"
rm -rf "$out/detect-in" "$out/detect-out" && mkdir -p "$out/detect-in"
cp "$out"/bombs/bomb.{png,jpg,bmp,tif} "$out/detect-in/"
ls "$out/demo/data/synth_texture/test/good/"*.png | head -3 | xargs -I{} cp {} "$out/detect-in/"
set +e
"$vqad" detect "$out/demo/registry/synth_texture/1.0.0/synth_texture-1.0.0.vqad" --pubkey "$out/demo/keys/demo.pub" \
  --ep cpu "$out/detect-in" --out "$out/detect-out" > "$out/detect.stdout" 2> "$out/detect.stderr"
detect_rc=$?
set -e

echo "== 3. 16 bomb senders mixed with ${NORMAL:-200} normal requests (budget $budget MiB)"
start --max-inflight-mb "$budget" --max-body-mb 64
"$py" "$client" mixed "$http" "$grpc" synth_texture "$img" "${NORMAL:-200}" "$out"/bombs/bomb.{png,jpg,bmp,tif} > "$out/mixed.json"
mixed_peak="$(hwm)"; mixed_warm="$warm"
alive3=$(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0)

echo "== 4. ${SLOW:-300} slow connections (default timeouts)"
start --max-inflight-mb "$budget"
"$py" "$client" slow "$http" synth_texture "$img" "${SLOW:-300}" 100000 60 > "$out/slow.json"
timeout_s="$(sed -n 's/.*timeouts idle [0-9]* s, header [0-9]* s, body \([0-9]*\) s.*/\1/p' "$out/serve.log" | tail -1)"

echo "== 5. twelve 3000 x 3000 frames at once (budget $budget MiB)"
start --max-inflight-mb "$budget" --max-body-mb 64
"$py" "$client" burst "$http" "$grpc" synth_texture "$out/bombs/noise.png" 24 12 > "$out/large.json"
large_peak="$(hwm)"; large_warm="$warm"
large_inflight="$(curl -s "http://$http/metrics" | awk '$1=="vqad_inflight_bytes" {print $2}')"

"$py" - "$out" "${MAX_MS:-100}" "${MAX_GROWTH_MB:-100}" "$budget" "${CLOSE_SLACK_S:-2}" "$detect_rc" "$timeout_s" \
  "$bomb_warm" "$bomb_peak" "$mixed_peak" "$mixed_warm" "$large_peak" "$large_warm" "$large_inflight" "$alive1" "$alive3" <<'P'
import json, statistics, sys
(out, max_ms, max_growth, budget, slack, detect_rc, timeout_s, bomb_warm, bomb_peak, mixed_peak, mixed_warm,
 large_peak, large_warm, large_inflight, alive1, alive3) = sys.argv[1:]
max_ms, max_growth, budget, slack = float(max_ms), float(max_growth), float(budget), float(slack)
mib = lambda kib: int(kib) / 1024
fail = []
rounds = [json.loads(l) for l in open(f"{out}/bombs.jsonl")]
print("\n| bomb | bytes | HTTP median / max ms | gRPC median / max ms | answer |")
print("|---|---|---|---|---|")
for path in [p for p in rounds[0] if p != "after"]:
    rows = [r[path] for r in rounds]
    want = "image is 20000\u00d720000 (400000000 pixels), over the limit of 16777216 pixels"
    ok = all(x["http"].startswith("400: ") and want in x["http"] and x["grpc"].startswith("StatusCode.INVALID_ARGUMENT") and want in x["grpc"] for x in rows)
    hm, gm = statistics.median(x["http_ms"] for x in rows), statistics.median(x["grpc_ms"] for x in rows)
    print(f"| {path.rsplit('/', 1)[-1]} | {rows[0]['bytes']} | {hm:.1f} / {max(x['http_ms'] for x in rows):.1f} | {gm:.1f} / {max(x['grpc_ms'] for x in rows):.1f} | {'invalid argument, size and limit named' if ok else rows[0]['http'][:80]} |")
    if not ok:
        fail.append(f"{path}: not invalid-argument naming the size: {rows[0]}")
    if max(hm, gm) >= max_ms:
        fail.append(f"{path}: median latency {max(hm, gm):.1f} ms, bar {max_ms} ms")
if not all(r["after"]["ready"] == [True, True] for r in rounds) or alive1 != "1":
    fail.append("server not ready after the bombs")
growth = mib(bomb_peak) - mib(bomb_warm)
print(f"\nbombs: server peak RSS {mib(bomb_warm):.1f} MiB warm, {mib(bomb_peak):.1f} MiB after {len(rounds) * 8} bomb requests: grew {growth:.1f} MiB (bar {max_growth:.0f})")
if growth >= max_growth:
    fail.append(f"bombs: peak RSS grew {growth:.1f} MiB")
summary = json.load(open(f"{out}/detect-out/summary.json"))
bombs_named = all(any(f["path"].endswith(f"bomb.{e}") and "over the limit" in f["error"] for f in summary["failed"]) for e in ["png", "jpg", "bmp", "tif"])
print(f"vqad detect: exit {detect_rc}, {summary['images']} images processed, {len(summary['failed'])} failed, each bomb named with size and limit: {bombs_named}")
if detect_rc != "4" or summary["images"] != 3 or not bombs_named:
    fail.append("vqad detect did not name each bomb, skip it and process the rest with exit 4")
m = json.load(open(f"{out}/mixed.json"))
refused = sum(m["bomb_refusals"].values())
print(f"mixed: {m['ok']}/{m['requests']} normal answered, {m['error_count']} errors, {refused} bomb requests refused ({m['bomb_refusals']}), other bomb answers {len(m['bomb_other'])}, {m['seconds']:.1f} s")
print(f"       peak RSS {mib(mixed_peak):.0f} MiB; models (warm peak) {mib(mixed_warm):.0f} MiB + budget {budget:.0f} MiB = {mib(mixed_warm) + budget:.0f} MiB; server restarts: {0 if alive3 == '1' else 1}")
if m["ok"] != m["requests"] or m["error_count"] or m["bomb_other"] or alive3 != "1":
    fail.append("mixed: a normal request failed, a bomb got another answer, or the server died")
if mib(mixed_peak) >= mib(mixed_warm) + budget:
    fail.append("mixed: peak RSS over models + budget")
s = json.load(open(f"{out}/slow.json"))
t = float(timeout_s or 30)
print(f"slow: {s['connections']} connections opened in {s['opened_in_s']:.2f} s; closed after {s['closed_first_s']:.2f}-{s['closed_last_s']:.2f} s (body timeout {t:.0f} s), {s['still_open']} still open, answers {s['answers']}; normal requests meanwhile: {s['normal_ok']} answered, {s['normal_error_count']} errors")
if s["still_open"] or s["closed_last_s"] is None or s["closed_last_s"] > t + slack or s["normal_ok"] == 0 or s["normal_error_count"]:
    fail.append("slow: a slow connection outlived the timeout or normal requests were not answered")
if t > 30:
    fail.append(f"slow: the default body timeout is {t} s, over 30 s")
l = json.load(open(f"{out}/large.json"))
print(f"large frames: {l['counts']} ; peak RSS {mib(large_peak):.0f} MiB (models {mib(large_warm):.0f} + budget {budget:.0f}); in-flight bytes after: {large_inflight}")
over = l["counts"].get("429", 0) + l["counts"].get("StatusCode.RESOURCE_EXHAUSTED", 0)
if l["counts"].get("ok", 0) + over != 24 or mib(large_peak) >= mib(large_warm) + budget + 64 or large_inflight != "0":
    fail.append("large frames: a request failed otherwise than over budget, or memory went past models + budget + 64 MiB")
for f in fail:
    print(f"bench-hostile: FAILED: {f}")
sys.exit(1 if fail else 0)
P
