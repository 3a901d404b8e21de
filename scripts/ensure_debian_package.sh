#!/usr/bin/env bash
# Make sure a Debian package that the tests need is installed: `ensure_debian_package.sh PACKAGE FILE`.
# FILE is what the tests use; when it exists nothing is done. Otherwise PACKAGE is installed with apt-get when this
# runs as root or with password-less sudo. When it cannot be had, this exits 1 under CI=true (a missing package must
# never turn into skipped tests there) and 0 elsewhere, after saying which tests will be skipped.
set -uo pipefail

PACKAGE="${1:?usage: ensure_debian_package.sh PACKAGE FILE}"
FILE="${2:?usage: ensure_debian_package.sh PACKAGE FILE}"

source "$(dirname "$0")/ci_common.sh"
cannot() { give_up "$PACKAGE: $1" "The tests that need $FILE"; }

[ -e "$FILE" ] && exit 0

command -v apt-get >/dev/null 2>&1 \
    || cannot "$FILE is missing and this machine has no apt-get; install the package '$PACKAGE' by hand."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        cannot "$FILE is missing, and installing it needs root. Run 'sudo apt-get install -y $PACKAGE'."
    fi
fi
echo "installing Debian's $PACKAGE (apt-get install -y $PACKAGE)"
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q "$PACKAGE" >"$log" 2>&1; then
    # a fresh container may have no package lists yet
    $SUDO apt-get update -q >>"$log" 2>&1 && $SUDO apt-get install -y -q "$PACKAGE" >>"$log" 2>&1
fi
if [ -e "$FILE" ]; then
    rm -f "$log"
    echo "installed $PACKAGE"
    exit 0
fi
tail -n 15 "$log" >&2
rm -f "$log"
cannot "apt-get could not install $PACKAGE (see above)."
