#!/usr/bin/env bash
# Scale curve: C-STORE and QIDO-RS latency as the catalog grows, for vna and Orthanc.
#
# usage: benches/scale_curve.sh [quick|full] [ARCHIVES]
#   quick: 10k and 100k instances; full: also 1M and 10M, as far as the disk and the time
#   budget allow. ARCHIVES: "vna orthanc" (default) or one.
# Filling stops early, and the last level is measured where the fill stopped, when the disk
# holding VNA_BENCH_DIR has less than VNA_SCALE_RESERVE_GB free (default 3) or the archive has
# been filling for VNA_SCALE_BUDGET_MIN minutes (default 20 in full mode, so that one archive
# takes under 30 minutes; unlimited in quick).
# VNA_SCALE_LEVELS replaces the list of levels.
# Each archive starts fresh (production settings, see benches/lib.sh) and is filled with
# tiny metadata-heavy studies (8x8 images, 2 series x 5 instances, many patients, 15 years of
# dates) by STOW-RS with 8 clients x 50 instances per request (the fastest path that works for
# both archives; chunks of 100k, each with its own seed). At each level it measures
#   C-STORE latency: 200 tiny instances over ONE association (p50/p99/max), and
#   QIDO-RS latency: the loadgen's five-query mix, 1000 requests from ONE client (p50/p99).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR=${VNA_RELEASE_TARGET:-$HOME/.cache/vna-target-release}
MODE=${1:-quick}
ARCHIVES=${2:-vna orthanc}
case $MODE in
  quick) LEVELS="10000 100000" BUDGET_MIN=${VNA_SCALE_BUDGET_MIN:-0} ;;
  full)  LEVELS="10000 100000 1000000 10000000" BUDGET_MIN=${VNA_SCALE_BUDGET_MIN:-20} ;;
  *) echo "usage: $0 [quick|full] [ARCHIVES]" >&2; exit 2 ;;
esac
LEVELS=${VNA_SCALE_LEVELS:-$LEVELS}  # e.g. "10000 100000 1000000"
PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
cargo build --release -q -p vna -p vna-benches --bin vna --bin vna-loadgen
BIN=$CARGO_TARGET_DIR/release
LG=$BIN/vna-loadgen
WORK=$(mktemp -d "${VNA_BENCH_DIR:-/tmp}/vna-scale.XXXXXX")
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; [ -n "${VNA_BENCH_KEEP:-}" ] || rm -rf "$WORK"' EXIT
export TCP_NODELAY=1
source benches/lib.sh
RESULTS=$WORK/results
mkdir -p "$RESULTS"

for archive in $ARCHIVES; do
  dir=$(mktemp -d "$WORK/$archive.XXXX"); http=$(free_port); dicom=$(free_port)
  if [ "$archive" = vna ]; then pid=$(start_vna "$dir" "$http" "$dicom"); aec=VNA; else pid=$(start_orthanc "$dir" "$http" "$dicom"); aec=ORTHANC; fi
  PIDS+=("$pid")
  base="http://127.0.0.1:$http/dicom-web"
  wait_http "$base/studies?limit=1"
  held=0 seed=1000 started=$(date +%s) stop=""
  for level in $LEVELS; do
    [ -n "$stop" ] && break
    t0=$(date +%s.%N) from=$held
    while [ "$held" -lt "$level" ]; do
      free_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
      if [ "$free_kb" -lt $(( ${VNA_SCALE_RESERVE_GB:-3} * 1024 * 1024 )) ]; then stop=disk; break; fi
      if [ "$BUDGET_MIN" -gt 0 ] && [ $(( $(date +%s) - started )) -ge $(( BUDGET_MIN * 60 )) ]; then stop=time; break; fi
      n=$(( level - held < 100000 ? level - held : 100000 ))
      seed=$((seed + 1))
      echo "== $archive: STOW-RS $n tiny instances (holds $held)" >&2
      "$LG" stow --url "$base" --clients 8 --batch 50 --ct 0 --tiny "$n" --seed "$seed" --json "$RESULTS/$archive.fill.$seed.json" >&2
      held=$((held + n))
    done
    t1=$(date +%s.%N)
    # A level the fill could not reach is measured where it stopped (unless nothing was added).
    [ -n "$stop" ] && [ "$held" -eq "$from" ] && break
    echo "$t0 $t1 $from $held ${stop:-}" > "$RESULTS/$archive.$level.fill"
    echo "$archive $level" >> "$RESULTS/levels"
    seed=$((seed + 1))
    "$LG" store --dicom "127.0.0.1:$dicom" --aec "$aec" --clients 1 --ct 0 --tiny 200 --seed "$seed" --json "$RESULTS/$archive.$level.store.json" >&2
    held=$((held + 200))
    "$LG" qido --url "$base" --clients 1 --requests 1000 --json "$RESULTS/$archive.$level.qido.json" >&2
  done
  du -sb "$dir" | cut -f1 > "$RESULTS/$archive.du"
  stop_pid "$pid"
  rm -rf "$dir"
done

python3 - "$RESULTS" <<'PY'
import json, os, sys
res = sys.argv[1]
print(f"scale curve, {os.cpu_count()} cores; fill: STOW-RS 8 clients x 50 tiny instances per request")
print(f"{'archive':8} {'instances':>10} {'fill inst/s':>11} {'C-STORE p50/p99/max ms (1 assoc, 200)':>40} {'QIDO-RS p50/p99/max ms (1 client, 1000)':>42}")
for line in open(os.path.join(res, "levels")):
    a, lv = line.split()
    t0, t1, start, reached, *stop = open(os.path.join(res, f"{a}.{lv}.fill")).read().split()
    filled = int(reached) - int(start)
    note = f"  (fill stopped at {int(reached):,}: {stop[0]} limit)" if stop else ""
    s = json.load(open(os.path.join(res, f"{a}.{lv}.store.json")))["latency"]
    q = json.load(open(os.path.join(res, f"{a}.{lv}.qido.json")))["latency"]
    f = lambda d: f"{d['p50_ms']:.2f} / {d['p99_ms']:.2f} / {d['max_ms']:.1f}"
    rate = filled / (float(t1) - float(t0)) if filled else 0
    print(f"{a:8} {int(reached):>10} {rate:>11.0f} {f(s):>40} {f(q):>42}{note}")
for a in sorted({l.split()[0] for l in open(os.path.join(res, "levels"))}):
    p = os.path.join(res, f"{a}.du")
    if os.path.exists(p):
        print(f"{a}: {int(open(p).read()) / 2**30:.2f} GiB on disk at the end")
PY
