# Shared machinery of the side-by-side scripts (sourced, not run): ports, readiness, and
# vna / Orthanc started in a fresh data directory with production settings on loopback.
# Needs BIN (release binaries) and, for Orthanc's DICOMweb, PLUGIN. Callers export
# TCP_NODELAY=1 so that Orthanc (and dcmtk) do not measure Nagle + delayed ACKs.

# require_orthanc_dicomweb: exits unless Orthanc and its DICOMweb plugin are installed; sets PLUGIN.
require_orthanc_dicomweb() {
  command -v Orthanc >/dev/null || { echo "install Orthanc first: apt-get install orthanc orthanc-dicomweb (.ci/run does)" >&2; exit 1; }
  PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
  [ -f "$PLUGIN" ] || { echo "install the DICOMweb plugin: apt-get install orthanc-dicomweb" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 400); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "$1 never answered" >&2; return 1; }
wait_port() { for _ in $(seq 400); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# start_vna DIR HTTP_PORT DICOM_PORT [EXTRA_TOML] -> pid
start_vna() {
  local dir=$1 http=$2 dicom=$3 extra=${4:-}
  cat > "$dir/vna.toml" <<TOML
data_dir = "$dir/data"
[dicom]
listen = "127.0.0.1:$dicom"
[http]
listen = "127.0.0.1:$http"
[log]
level = "warn"
$extra
TOML
  # A simple command in the background (not a function), so that $! is vna itself.
  vna_unset_args
  env "${VNA_UNSET[@]}" "$BIN/vna" --config "$dir/vna.toml" serve >"$dir/log" 2>&1 &
  echo $!
}

# vna reads VNA_* variables as configuration overrides and refuses unknown ones, and the
# benchmarks' own settings (VNA_BENCH_DIR, VNA_SCALE_*, VNA_RELEASE_TARGET) are not vna's
# configuration: vna_unset_args sets VNA_UNSET to `-u NAME` for each exported VNA_* variable,
# for `env "${VNA_UNSET[@]}" vna ...`; without_vna_vars CMD... runs CMD (in the foreground) so.
vna_unset_args() {
  VNA_UNSET=()
  local v
  for v in $(compgen -e | grep '^VNA_' || true); do VNA_UNSET+=(-u "$v"); done
}
without_vna_vars() {
  vna_unset_args
  env "${VNA_UNSET[@]}" "$@"
}

# start_orthanc DIR HTTP_PORT DICOM_PORT [EXTRA_JSON_MEMBERS] -> pid
# Default SQLite index, SyncStorageArea on, DICOMweb plugin when PLUGIN exists.
start_orthanc() {
  local dir=$1 http=$2 dicom=$3 extra=${4:-} plugins="[]"
  [ -n "${PLUGIN:-}" ] && [ -f "$PLUGIN" ] && plugins="[ \"$PLUGIN\" ]"
  cat > "$dir/orthanc.json" <<JSON
{ "Name": "bench", "StorageDirectory": "$dir/storage", "IndexDirectory": "$dir/index",
  "DicomAet": "ORTHANC", "DicomPort": $dicom, "HttpPort": $http, "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false, "SyncStorageArea": true, "UnknownSopClassAccepted": true,
  "DicomCheckCalledAet": false, "DicomAlwaysAllowFind": true, "DicomAlwaysAllowEcho": true,
  "DicomAlwaysAllowMove": true, "DicomAlwaysAllowGet": true, "DicomAlwaysAllowStore": true,
  "Plugins": $plugins,
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado" } ${extra:+, $extra} }
JSON
  Orthanc "$dir/orthanc.json" >"$dir/log" 2>&1 &
  echo $!
}

# stop_pid PID: stops a server this script started and waits for it.
stop_pid() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }
