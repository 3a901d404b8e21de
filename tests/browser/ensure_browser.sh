#!/usr/bin/env bash
# Set up what the browser tests need, or say plainly why it cannot be had (`make browser-deps`).
#   1. Playwright's Python package, pinned, from PyPI. Never `playwright install`: it downloads a browser build,
#      which fails offline; the tests drive Debian's Chromium instead.
#   2. A Chromium: $SAELAB_CHROMIUM when set, else /usr/bin/chromium (or chromium on the PATH), else Debian's
#      package, installed with apt-get when this runs as root or with password-less sudo.
# When no browser can be had it exits 1 if CI=true (a missing browser must never pass silently in CI) and 0
# otherwise, after saying that the browser tests will be skipped.
set -uo pipefail

PY="${1:-.venv/bin/python}"
PLAYWRIGHT_PIN="playwright==1.65.2"

is_ci() { case "${CI:-}" in 1 | true | TRUE | True | yes | on) return 0 ;; esac; return 1; }

cannot() {
    echo "*** browser tests: $1" >&2
    if is_ci; then
        echo "*** CI=true: stopping here, a missing browser must not pass silently." >&2
        exit 1
    fi
    echo "*** The browser tests (tests/browser) will be SKIPPED on this machine." >&2
    exit 0
}

if ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
    echo "browser tests: installing $PLAYWRIGHT_PIN (the Python package only)"
    "$PY" -m pip install --quiet "$PLAYWRIGHT_PIN" || cannot "could not install $PLAYWRIGHT_PIN from PyPI."
fi

if [ -n "${SAELAB_CHROMIUM:-}" ]; then
    command -v "$SAELAB_CHROMIUM" >/dev/null 2>&1 \
        || cannot "SAELAB_CHROMIUM=$SAELAB_CHROMIUM is not an executable. Point it at a Chromium or Chrome binary."
    echo "browser tests: using SAELAB_CHROMIUM=$SAELAB_CHROMIUM"
    exit 0
fi
for candidate in /usr/bin/chromium chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
        echo "browser tests: using $(command -v "$candidate")"
        exit 0
    fi
done

command -v apt-get >/dev/null 2>&1 \
    || cannot "Chromium is not installed and this machine has no apt-get. Install Chromium or Chrome and set SAELAB_CHROMIUM=/path/to/it."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        cannot "Chromium is not installed, and installing it needs root. Run 'sudo apt-get install -y chromium', or set SAELAB_CHROMIUM=/path/to/chromium."
    fi
fi
echo "browser tests: installing Debian's chromium (apt-get install -y chromium)"
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -q chromium >"$log" 2>&1; then
    # a fresh container may have no package lists yet
    $SUDO apt-get update -q >>"$log" 2>&1 && $SUDO apt-get install -y -q chromium >>"$log" 2>&1
fi
if command -v /usr/bin/chromium >/dev/null 2>&1; then
    rm -f "$log"
    echo "browser tests: installed $(/usr/bin/chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
tail -n 15 "$log" >&2
rm -f "$log"
cannot "apt-get could not install chromium (see above). Install Chromium or Chrome and set SAELAB_CHROMIUM=/path/to/it."
