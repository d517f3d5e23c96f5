#!/usr/bin/env bash
# Migration throughput from a legacy PACS (issue 8): Orthanc (Debian packages orthanc +
# orthanc-dicomweb) holds STUDIES generated CT studies of PER_STUDY instances (512x512x16-bit);
# a fresh `vna serve` pulls them all with `vna migrate pull`, over DIMSE (C-FIND, then one
# C-MOVE per study to vna's C-STORE SCP) and over DICOMweb (QIDO-RS, then one WADO-RS study
# retrieval per study, each object ingested as it arrives), RUNS times each, alternating.
# Everything on loopback, TCP_NODELAY=1 for Orthanc and dcmtk. Times are the job's own
# (created_at to finished_at: planning, fetching, verifying and the final reconciliation).
# For scale, the last line is Orthanc alone serving every study over WADO-RS to curl.
#
# usage: benches/migration_bench.sh [STUDIES] [PER_STUDY] [RUNS]   (defaults 20 20 3)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export CARGO_TARGET_DIR=${VNA_RELEASE_TARGET:-$HOME/.cache/vna-target-release}
STUDIES=${1:-20}
PER_STUDY=${2:-20}
RUNS=${3:-3}
source benches/lib.sh
require_orthanc_dicomweb
cargo build --release -q -p vna -p vna-benches --bin vna --bin vna-dataset
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d "${VNA_BENCH_DIR:-/tmp}/vna-migration.XXXXXX")
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export TCP_NODELAY=1
TOKEN=bench-admin-token-0123456789

N=$((STUDIES * PER_STUDY))
"$BIN/vna-dataset" "$WORK/data" --ct-instances "$N" --per-study "$PER_STUDY" >/dev/null
BYTES=$(du -sb "$WORK/data" | cut -f1)

# The legacy PACS, loaded once over DIMSE.
O_HTTP=$(free_port); O_DICOM=$(free_port); V_DICOM=$(free_port)
mkdir -p "$WORK/orthanc"
cat > "$WORK/orthanc/orthanc.json" <<JSON
{ "Name": "legacy", "StorageDirectory": "$WORK/orthanc/storage", "IndexDirectory": "$WORK/orthanc/index",
  "DicomAet": "LEGACY", "DicomPort": $O_DICOM, "HttpPort": $O_HTTP, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "DicomCheckCalledAet": false, "DicomAlwaysAllowFind": true,
  "DicomAlwaysAllowMove": true, "UnknownSopClassAccepted": true,
  "DicomModalities": { "vna": [ "VNA", "127.0.0.1", $V_DICOM ] },
  "Plugins": [ "$PLUGIN" ],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado" } }
JSON
Orthanc "$WORK/orthanc/orthanc.json" >"$WORK/orthanc/log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$O_HTTP/system"
/usr/bin/storescu -aec LEGACY +sd +r 127.0.0.1 "$O_DICOM" "$WORK/data" >/dev/null 2>"$WORK/storescu.log" \
  || { cat "$WORK/storescu.log" >&2; echo "loading Orthanc failed" >&2; exit 1; }

RESULTS=$WORK/results
mkdir -p "$RESULTS"

# The source's own ceiling: every study retrieved with WADO-RS into /dev/null, one at a time.
UIDS=$(curl -sf "http://127.0.0.1:$O_HTTP/dicom-web/studies?limit=100000" | python3 -c 'import json,sys; print(" ".join(r["0020000D"]["Value"][0] for r in json.load(sys.stdin)))')
T0=$(date +%s.%N)
for u in $UIDS; do
  curl -sf -o /dev/null -H 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*' "http://127.0.0.1:$O_HTTP/dicom-web/studies/$u"
done
T1=$(date +%s.%N)
echo "$T0 $T1" > "$RESULTS/ceiling"

run_once() {  # source run
  local source=$1 run=$2 dir http pid id
  dir=$(mktemp -d "$WORK/vna.XXXX"); http=$(free_port)
  cat > "$dir/vna.toml" <<TOML
data_dir = "$dir/data"
[[auth.users]]
name = "bench"
token = "$TOKEN"
role = "admin"
[dicom]
listen = "127.0.0.1:$V_DICOM"
[http]
listen = "127.0.0.1:$http"
[log]
level = "warn"
[[pull.sources]]
name = "dimse"
kind = "dimse"
ae_title = "LEGACY"
host = "127.0.0.1"
port = $O_DICOM
[[pull.sources]]
name = "dicomweb"
kind = "dicomweb"
url = "http://127.0.0.1:$O_HTTP/dicom-web"
TOML
  vna_unset_args
  env "${VNA_UNSET[@]}" "$BIN/vna" --config "$dir/vna.toml" serve >"$dir/log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  wait_http "http://127.0.0.1:$http/healthz"
  echo "== $source run $run" >&2
  without_vna_vars "$BIN/vna" --config "$dir/vna.toml" --token "$TOKEN" migrate pull --from "$source" >"$dir/out" 2>/dev/null \
    || { cat "$dir/out" >&2; echo "pull not reconciled" >&2; exit 1; }
  id=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$http/api/migrations" | python3 -c 'import json,sys; print(json.load(sys.stdin)["migrations"][0]["id"])')
  curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$http/api/migrations/$id" >"$RESULTS/$source.$run.json"
  stop_pid "$pid"
  rm -rf "$dir"
}

for run in $(seq "$RUNS"); do
  run_once dimse "$run"
  run_once dicomweb "$run"
done

python3 - "$RESULTS" "$RUNS" "$STUDIES" "$PER_STUDY" "$BYTES" <<'PY'
import json, os, re, statistics, sys
from datetime import datetime
res, runs, studies, per, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
def secs(j):
    # RFC 3339 with up to nanoseconds; Python reads microseconds.
    t = lambda s: datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", s).replace("Z", "+00:00"))
    return (t(j["finished_at"]) - t(j["created_at"])).total_seconds()
print(f"Migration from Orthanc: {studies} studies x {per} CT instances ({size / 2**20:.0f} MiB), {runs} runs each, {os.cpu_count()} cores")
print(f"{'source':10} {'studies/s (min/med/max)':28} {'instances/s (med)':18} {'MB/s (min/med/max)':24}")
for source in ("dimse", "dicomweb"):
    rows = [json.load(open(os.path.join(res, f"{source}.{r}.json"))) for r in range(1, runs + 1)]
    for j in rows:
        c = j["counters"]
        assert j["state"] == "done" and c["studies_fetched"] == int(studies), j
    s = sorted(j["counters"]["studies_fetched"] / secs(j) for j in rows)
    i = statistics.median(j["counters"]["instances_received"] / secs(j) for j in rows)
    m = sorted(j["counters"]["bytes_received"] / 1e6 / secs(j) for j in rows)
    f = lambda v: " / ".join(f"{x:.2f}" for x in (v[0], statistics.median(v), v[-1]))
    print(f"{source:10} {f(s):28} {i:<18.1f} {f(m):24}")
t0, t1 = map(float, open(os.path.join(res, "ceiling")).read().split())
print(f"Orthanc alone, WADO-RS of each study to /dev/null: {int(studies) / (t1 - t0):.2f} studies/s, {size / 1e6 / (t1 - t0):.1f} MB/s")
PY
