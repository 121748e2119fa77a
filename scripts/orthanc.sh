#!/usr/bin/env bash
# Local Orthanc (with the DICOMweb plugin) for development and for the
# `tests/orthanc_dicomweb.rs` test, which starts its own private instance.
#
#   scripts/orthanc.sh install         apt-get install orthanc orthanc-dicomweb
#   scripts/orthanc.sh run [PORT]      run in the foreground on 127.0.0.1:PORT
#                                      (default 8042) with a throwaway storage
#                                      folder; Ctrl-C stops it and deletes it
#   scripts/orthanc.sh upload DIR [PORT]   POST every file of DIR to /instances
#
# DICOMweb root: http://127.0.0.1:PORT/dicom-web  (allow-list it in the
# `[dicomweb]` config). Remote access and the DICOM port are disabled.
set -euo pipefail

plugin_path() {
  local p
  p=$(dpkg -L orthanc-dicomweb 2>/dev/null | grep 'libOrthancDicomWeb\.so$' | head -n1 || true)
  echo "${ORTHANC_DICOMWEB_PLUGIN:-${p:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}}"
}

case "${1:-}" in
  install)
    if dpkg -s orthanc orthanc-dicomweb >/dev/null 2>&1; then
      echo "orthanc and orthanc-dicomweb are installed"
    else
      apt-get update && apt-get install -y orthanc orthanc-dicomweb
    fi
    ;;
  run)
    port="${2:-8042}"
    dir=$(mktemp -d -t oncohooks-orthanc.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    cat >"$dir/orthanc.json" <<JSON
{
  "Name": "oncohooks-dev",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/storage",
  "HttpPort": $port,
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomServerEnabled": false,
  "Plugins": ["$(plugin_path)"],
  "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
}
JSON
    echo "Orthanc on http://127.0.0.1:$port (DICOMweb: /dicom-web), storage $dir"
    "${ORTHANC_BIN:-Orthanc}" "$dir/orthanc.json"
    ;;
  upload)
    dir="${2:?folder}"
    port="${3:-8042}"
    for f in "$dir"/*; do
      [ -f "$f" ] || continue
      curl -sf -X POST -H 'Content-Type: application/dicom' --data-binary @"$f" \
        "http://127.0.0.1:$port/instances" >/dev/null
      echo "uploaded $f"
    done
    ;;
  *)
    sed -n '2,15p' "$0"
    exit 2
    ;;
esac
