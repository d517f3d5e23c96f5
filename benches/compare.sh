#!/usr/bin/env bash
# vna and Orthanc side by side over DIMSE and DICOMweb, driven by vna-loadgen with the same
# deterministic data. Both run on loopback, each in a fresh data directory per run with
# production settings (Orthanc: Debian packages orthanc + orthanc-dicomweb, default SQLite
# index, SyncStorageArea on, TCP_NODELAY=1), alternately: vna, Orthanc, vna, Orthanc, ...
#
# usage: benches/compare.sh [quick|full]        (default quick: < 5 min; full: < 30 min)
# Per run and archive:
#   store  C-STORE of CT (512x512x16, studies of 50) + CR + DX (3000x2500x16) + US (30 frames
#          640x480 RGB) over 4 associations
#   move   C-MOVE of every study to the loadgen's own C-STORE SCP (1 association)
#   get    C-GET of every study (1 association, SCP role for the storage classes)
#   wado   WADO-RS of every study (4 clients)
#   stow   STOW-RS of TINY small instances (4 clients x 25 per request)
#   qido   QIDO-RS five-query mix (4 clients), then the same mix as C-FIND (4 associations)
# Prints min/median/max per figure for both and the ratio of the medians vna/Orthanc.
# VNA_BENCH_DIR chooses the disk (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR=${VNA_RELEASE_TARGET:-$HOME/.cache/vna-target-release}
MODE=${1:-quick}
case $MODE in
  quick) RUNS=2 CT=100 CR=2 DX=2 US=2 TINY=2000 REQ=1000 ;;
  full)  RUNS=3 CT=500 CR=10 DX=10 US=10 TINY=10000 REQ=2000 ;;
  *) echo "usage: $0 [quick|full]" >&2; exit 2 ;;
esac
source benches/lib.sh
require_orthanc_dicomweb
cargo build --release -q -p vna -p vna-benches --bin vna --bin vna-loadgen
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d "${VNA_BENCH_DIR:-/tmp}/vna-compare.XXXXXX")
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export TCP_NODELAY=1
RESULTS=$WORK/results
mkdir -p "$RESULTS"
LG=$BIN/vna-loadgen

run_once() {  # archive run
  local archive=$1 run=$2 dir http dicom dest aec pid base out
  dir=$(mktemp -d "$WORK/$archive.XXXX"); http=$(free_port); dicom=$(free_port); dest=$(free_port)
  if [ "$archive" = vna ]; then
    pid=$(start_vna "$dir" "$http" "$dicom" "$(printf '[[dicom.remote_aes]]\nae_title = "LOADGEN"\nhost = "127.0.0.1"\nport = %s' "$dest")")
    aec=VNA
  else
    pid=$(start_orthanc "$dir" "$http" "$dicom" "\"DicomModalities\": { \"loadgen\": [ \"LOADGEN\", \"127.0.0.1\", $dest ] }")
    aec=ORTHANC
  fi
  PIDS+=("$pid")
  base="http://127.0.0.1:$http/dicom-web"
  wait_http "$base/studies?limit=1"
  out=$RESULTS/$archive.$run
  local d=(--dicom "127.0.0.1:$dicom" --aec "$aec")
  echo "== $archive run $run" >&2
  "$LG" store "${d[@]}" --clients 4 --ct "$CT" --cr "$CR" --dx "$DX" --us "$US" --seed "$run" --json "$out.store.json" >&2
  "$LG" move "${d[@]}" --clients 1 --studies 100000 --move-listen "127.0.0.1:$dest" --json "$out.move.json" >&2
  "$LG" get "${d[@]}" --clients 1 --studies 100000 --json "$out.get.json" >&2
  "$LG" wado --url "$base" --clients 4 --studies 100000 --json "$out.wado.json" >&2
  "$LG" stow --url "$base" --clients 4 --batch 25 --ct 0 --tiny "$TINY" --seed $((run + 100)) --json "$out.stow.json" >&2
  "$LG" qido --url "$base" --clients 4 --requests "$REQ" --json "$out.qido.json" >&2
  "$LG" find "${d[@]}" --clients 4 --requests "$REQ" --json "$out.find.json" >&2
  stop_pid "$pid"
  rm -rf "$dir"
}

START=$(date +%s)
# The machine's limits, on the disk the archives use, in the same run.
"$LG" limits --dir "$WORK/limits" --quick 1 --json "$RESULTS/limits.json"
echo
for run in $(seq "$RUNS"); do
  run_once vna "$run"
  run_once orthanc "$run"
done

python3 - "$RESULTS" "$RUNS" "$MODE" "$CT" "$CR" "$DX" "$US" "$TINY" "$REQ" "$(( $(date +%s) - START ))" <<'PY'
import json, statistics, sys, os
res, runs, mode, ct, cr, dx, us, tiny, req, secs = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
def load(a, r, w): return json.load(open(os.path.join(res, f"{a}.{r}.{w}.json")))
lat = lambda k, p: (lambda d: d[k][p])
figures = [
  ("C-STORE inst/s (4 assoc)", "store", lambda d: d["instances_per_s"], True),
  ("C-STORE MB/s", "store", lambda d: d["mb_per_s"], True),
  ("C-STORE p50 ms", "store", lat("latency", "p50_ms"), False),
  ("C-STORE p99 ms", "store", lat("latency", "p99_ms"), False),
  ("C-MOVE studies/s (1 assoc)", "move", lambda d: d["studies_per_s"], True),
  ("C-MOVE MB/s", "move", lambda d: d["mb_per_s"], True),
  ("C-MOVE study p50 ms", "move", lat("study_latency", "p50_ms"), False),
  ("C-GET studies/s (1 assoc)", "get", lambda d: d["studies_per_s"], True),
  ("C-GET MB/s", "get", lambda d: d["mb_per_s"], True),
  ("C-GET study p50 ms", "get", lat("study_latency", "p50_ms"), False),
  ("WADO-RS MB/s (4 clients)", "wado", lambda d: d["mb_per_s"], True),
  ("STOW-RS small inst/s (4x25)", "stow", lambda d: d["instances_per_s"], True),
  ("QIDO-RS req/s (4 clients)", "qido", lambda d: d["requests_per_s"], True),
  ("QIDO-RS p50 ms", "qido", lat("latency", "p50_ms"), False),
  ("QIDO-RS p99 ms", "qido", lat("latency", "p99_ms"), False),
  ("C-FIND req/s (4 assoc)", "find", lambda d: d["requests_per_s"], True),
  ("C-FIND p50 ms", "find", lat("latency", "p50_ms"), False),
  ("C-FIND p99 ms", "find", lat("latency", "p99_ms"), False),
]
s = load("vna", 1, "store")
print(f"compare.sh {mode}: {runs} runs each, {os.cpu_count()} cores, {secs} s in all")
print(f"DIMSE set: {ct} CT + {cr} CR + {dx} DX + {us} US instances ({s['bytes']/1e6:.0f} MB, {load('vna', 1, 'move')['studies']} studies); "
      f"then {tiny} small instances by STOW-RS; {req} queries per mix")
print(f"{'figure':30} {'vna min/med/max':26} {'Orthanc min/med/max':26} vna/Orthanc")
for name, w, f, higher in figures:
    v = sorted(f(load("vna", r, w)) for r in range(1, runs + 1))
    o = sorted(f(load("orthanc", r, w)) for r in range(1, runs + 1))
    mv, mo = statistics.median(v), statistics.median(o)
    fmt = lambda xs: " / ".join(f"{x:.2f}" if x < 100 else f"{x:.0f}" for x in (xs[0], statistics.median(xs), xs[-1]))
    ratio = mv / mo if mo else float("nan")
    print(f"{name:30} {fmt(v):26} {fmt(o):26} {ratio:.2f}{'' if higher else ' (lower is better)'}")
for a in ("vna", "orthanc"):
    for r in range(1, runs + 1):
        for w in ("move", "get"):
            d = load(a, r, w)
            assert d["failed"] == 0 and d["instances"] == d["completed"], (a, r, w, d)
PY
