#!/usr/bin/env bash
# Checks packaging/systemd/*.service with `systemd-analyze verify`: syntax, known
# directives and sandboxing options, and that ExecStart names an executable — the units'
# /usr/bin/ paths are pointed at this build's programs in a copy, nothing else changes.
# Any warning about one of our units fails the test. Exits 77 (ctest: skipped) without
# systemd-analyze (apt-get install systemd).
# Usage: systemd_units_test.sh UNITS_DIR BIN_DIR
set -euo pipefail
units=$(cd "$1" && pwd)
bin=$(cd "$2" && pwd)
command -v systemd-analyze >/dev/null 2>&1 || { echo "SKIPPED: systemd-analyze is not installed (apt-get install systemd)" >&2; exit 77; }

work=$(mktemp -d "${TMPDIR:-/tmp}/meshhub-units.XXXXXX")
trap 'rm -rf "$work"' EXIT
found=0
for unit in "$units"/*.service; do
  found=1
  sed "s|^ExecStart=/usr/bin/|ExecStart=$bin/|" "$unit" >"$work/$(basename "$unit")"
  grep -q "^ExecStart=$bin/" "$work/$(basename "$unit")" || { echo "FAIL: $(basename "$unit") has no ExecStart=/usr/bin/…" >&2; exit 1; }
done
((found)) || { echo "FAIL: no units in $units" >&2; exit 1; }

status=0
out=$(systemd-analyze verify "$work"/*.service 2>&1) || status=$?
printf '%s\n' "$out"
if ((status != 0)); then echo "FAIL: systemd-analyze verify exited $status" >&2; exit 1; fi
# Warnings about our units (unknown directives, bad values) do not change the exit status.
if grep -q 'meshhub-' <<<"$out"; then echo "FAIL: systemd-analyze has something to say about the units (above)" >&2; exit 1; fi
for unit in "$work"/*.service; do
  for want in 'ProtectSystem=strict' 'ReadWritePaths=' 'NoNewPrivileges=yes' 'PrivateTmp=yes' 'Type=notify'; do
    grep -q "^$want" "$unit" || { echo "FAIL: $(basename "$unit") lacks $want" >&2; exit 1; }
  done
done
echo "ok: $(cd "$units" && echo *.service) verified"
