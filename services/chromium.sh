#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser test (Debian's package; Playwright drives it
# through its executable path, so no browser download is needed).
#
#   services/chromium.sh install   apt-get install chromium if /usr/bin/chromium is missing
#   services/chromium.sh path      print the executable's path (exit 1 if not installed)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAME=chromium
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

cmd_install() {
    [[ -x "$CHROMIUM" ]] && return 0
    log $NAME "installing chromium (apt) ..."
    apt_install chromium
    [[ -x "$CHROMIUM" ]] || die $NAME "apt installed chromium but $CHROMIUM is missing"
    log $NAME "installed $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
}

cmd_path() {
    [[ -x "$CHROMIUM" ]] || { log $NAME "not installed; run '$0 install'" >&2; return 1; }
    echo "$CHROMIUM"
}

case "${1:-}" in
    install) cmd_install ;;
    path) cmd_path ;;
    *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
