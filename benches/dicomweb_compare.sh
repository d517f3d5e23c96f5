#!/usr/bin/env bash
# DICOMweb (and DIMSE C-FIND) side by side: vna and Orthanc (Debian packages orthanc + orthanc-dicomweb) on
# loopback, each in a fresh data directory with production settings (Orthanc: default SQLite
# index, SyncStorageArea on), driven by vna-loadgen with the same deterministic data.
#
# usage: benches/dicomweb_compare.sh [CT_INSTANCES] [TINY_INSTANCES] [RUNS]
#   CT_INSTANCES   512x512x16-bit CT instances stored with STOW-RS (default 500)
#   TINY_INSTANCES small instances added before the QIDO-RS run (default 10000)
#   RUNS           runs per archive, alternating vna / Orthanc (default 2)
# Per run and archive: STOW-RS of the CT set (4 clients, 25 instances per request), WADO-RS
# retrieval of every CT study (4 clients), STOW-RS of the small set (same settings), then
# QIDO-RS (2000 requests of a five-query mix, 4 clients) and the same mix over DIMSE C-FIND
# (2000 requests, 4 associations). Prints min/median/max per figure
# and the ratio of the medians (vna/Orthanc; for latencies lower is better).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR=${VNA_RELEASE_TARGET:-$HOME/.cache/vna-target-release}
CT=${1:-500}
TINY=${2:-10000}
RUNS=${3:-2}
source benches/lib.sh
require_orthanc_dicomweb
cargo build --release -q -p vna -p vna-benches --bin vna --bin vna-loadgen
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d "${VNA_BENCH_DIR:-/tmp}/vna-dicomweb.XXXXXX")
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export TCP_NODELAY=1

RESULTS=$WORK/results
mkdir -p "$RESULTS"
run_once() {  # archive run
  local archive=$1 run=$2 dir http dicom aec pid base out
  dir=$(mktemp -d "$WORK/$archive.XXXX"); http=$(free_port); dicom=$(free_port)
  if [ "$archive" = vna ]; then pid=$(start_vna "$dir" "$http" "$dicom"); aec=VNA; else pid=$(start_orthanc "$dir" "$http" "$dicom"); aec=ORTHANC; fi
  PIDS+=("$pid")
  base="http://127.0.0.1:$http/dicom-web"
  wait_http "$base/studies?limit=1"
  out=$RESULTS/$archive.$run
  echo "== $archive run $run" >&2
  "$BIN/vna-loadgen" stow --url "$base" --clients 4 --batch 25 --ct "$CT" --seed "$run" --json "$out.stow_ct.json" >&2
  "$BIN/vna-loadgen" wado --url "$base" --clients 4 --studies 1000 --json "$out.wado.json" >&2
  "$BIN/vna-loadgen" stow --url "$base" --clients 4 --batch 25 --ct 0 --tiny "$TINY" --seed $((run + 100)) --json "$out.stow_tiny.json" >&2
  "$BIN/vna-loadgen" qido --url "$base" --clients 4 --requests 2000 --json "$out.qido.json" >&2
  "$BIN/vna-loadgen" find --dicom "127.0.0.1:$dicom" --aec "$aec" --clients 4 --requests 2000 --json "$out.find.json" >&2
  kill "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -rf "$dir"
}

# The machine's limits, on the disk the archives use, in the same run.
"$BIN/vna-loadgen" limits --dir "$WORK/limits" --quick 1 --json "$RESULTS/limits.json"
echo

for run in $(seq "$RUNS"); do
  run_once vna "$run"
  run_once orthanc "$run"
done

python3 - "$RESULTS" "$RUNS" "$CT" "$TINY" <<'PY'
import json, statistics, sys, os
res, runs, ct, tiny = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(a, r, w): return json.load(open(os.path.join(res, f"{a}.{r}.{w}.json")))
figures = [
  ("STOW-RS CT inst/s (4x25)", "stow_ct", lambda d: d["instances_per_s"], True),
  ("STOW-RS CT MB/s", "stow_ct", lambda d: d["mb_per_s"], True),
  ("STOW-RS small inst/s (4x25)", "stow_tiny", lambda d: d["instances_per_s"], True),
  ("WADO-RS study MB/s (4 clients)", "wado", lambda d: d["mb_per_s"], True),
  ("QIDO-RS req/s (4 clients)", "qido", lambda d: d["requests_per_s"], True),
  ("QIDO-RS p50 ms", "qido", lambda d: d["latency"]["p50_ms"], False),
  ("QIDO-RS p99 ms", "qido", lambda d: d["latency"]["p99_ms"], False),
  ("C-FIND req/s (4 associations)", "find", lambda d: d["requests_per_s"], True),
  ("C-FIND p50 ms", "find", lambda d: d["latency"]["p50_ms"], False),
  ("C-FIND p99 ms", "find", lambda d: d["latency"]["p99_ms"], False),
]
print(f"DICOMweb: {ct} CT instances, then {tiny} small instances before QIDO-RS; {runs} runs each; {os.cpu_count()} cores")
print(f"{'figure':34} {'vna min/med/max':26} {'Orthanc min/med/max':26} vna/Orthanc")
for name, w, f, higher in figures:
    v = sorted(f(load("vna", r, w)) for r in range(1, runs + 1))
    o = sorted(f(load("orthanc", r, w)) for r in range(1, runs + 1))
    mv, mo = statistics.median(v), statistics.median(o)
    fmt = lambda xs: " / ".join(f"{x:.2f}" if x < 100 else f"{x:.0f}" for x in (xs[0], statistics.median(xs), xs[-1]))
    ratio = mv / mo if mo else float("nan")
    print(f"{name:34} {fmt(v):26} {fmt(o):26} {ratio:.2f}{'' if higher else ' (lower is better)'}")
print()
for r in range(1, runs + 1):
    for a in ("vna", "orthanc"):
        for w in ("qido", "find"):
            q = load(a, r, w)["by_query"]
            print(f"run {r} {a:8} {w} p50/p99 ms: " + ", ".join(f"{k} {v['p50_ms']:.2f}/{v['p99_ms']:.2f}" for k, v in q.items()))
PY
