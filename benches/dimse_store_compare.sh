#!/usr/bin/env bash
# C-STORE ingest throughput of vna and Orthanc, side by side, driven by dcmtk's storescu.
#
# usage: benches/dimse_store_compare.sh [INSTANCES] [RUNS]
# Builds vna in release, generates INSTANCES (default 1000) CT-sized instances
# (512x512x16-bit), then for 1 and 4 concurrent associations stores them into a fresh vna
# and a fresh Orthanc (Debian package, default SQLite index, storage sync on), RUNS times
# each (default 3), alternating, and prints min/median/max instances/s and the ratio.
# Everything runs on loopback; TCP_NODELAY=1 is set for dcmtk and Orthanc.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR=${VNA_RELEASE_TARGET:-$HOME/.cache/vna-target-release}
N=${1:-1000}
RUNS=${2:-3}
command -v Orthanc >/dev/null || { echo "install Orthanc first: apt-get install orthanc" >&2; exit 1; }
cargo build --release -q -p vna -p vna-benches --bin vna --bin vna-dataset
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d "${VNA_BENCH_DIR:-/tmp}/vna-bench.XXXXXX")
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export TCP_NODELAY=1
"$BIN/vna-dataset" "$WORK/data" --ct-instances "$N" --split 4 >/dev/null
BYTES=$(du -sb "$WORK/data" | cut -f1)

source benches/lib.sh

run_once() {  # server concurrency -> instances/s
  local server=$1 conc=$2 dir port http pid start end
  dir=$(mktemp -d "$WORK/$server.XXXX"); port=$(free_port); http=$(free_port)
  if [ "$server" = vna ]; then pid=$(start_vna "$dir" "$http" "$port"); aec=VNA; else pid=$(start_orthanc "$dir" "$http" "$port"); aec=ORTHANC; fi
  PIDS+=("$pid")
  wait_port "$port"
  start=$(date +%s.%N)
  if [ "$conc" = 1 ]; then
    /usr/bin/storescu -aec $aec +sd 127.0.0.1 "$port" "$WORK"/data/part*
  else
    for p in "$WORK"/data/part*; do /usr/bin/storescu -aec $aec +sd 127.0.0.1 "$port" "$p" & done
    wait
  fi
  end=$(date +%s.%N)
  stop_pid "$pid"
  rm -rf "$dir"
  python3 -c "print(f'{$N/($end-$start):.1f}')"
}

stats() { python3 -c 'import sys,statistics as s; v=sorted(map(float,sys.argv[1:])); print(f"{v[0]:.1f} / {s.median(v):.1f} / {v[-1]:.1f}")' "$@"; }
median() { python3 -c 'import sys,statistics as s; print(s.median(map(float,sys.argv[1:])))' "$@"; }

echo "C-STORE ingest: $N CT instances, $(python3 -c "print(f'{$BYTES/2**20:.0f}')") MiB, $RUNS runs each, $(nproc) cores"
printf "%-14s %-28s %-28s %s\n" "associations" "vna inst/s (min/med/max)" "Orthanc inst/s (min/med/max)" "ratio vna/Orthanc (median)"
for conc in 1 4; do
  v=(); o=()
  for _ in $(seq "$RUNS"); do
    v+=("$(run_once vna "$conc")")
    o+=("$(run_once orthanc "$conc")")
  done
  ratio=$(python3 -c "print(f'{$(median "${v[@]}")/$(median "${o[@]}"):.2f}')")
  printf "%-14s %-28s %-28s %s\n" "$conc" "$(stats "${v[@]}")" "$(stats "${o[@]}")" "$ratio"
done
