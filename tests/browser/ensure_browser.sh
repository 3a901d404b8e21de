#!/usr/bin/env bash
# Set up what the browser tests need, or say plainly why it cannot be had (`make browser-deps`).
#   1. Playwright's Python package, pinned, from PyPI. Never `playwright install`: it downloads a browser build,
#      which fails offline; the tests drive Debian's Chromium instead.
#   2. A Chromium: $SAELAB_CHROMIUM when set, else /usr/bin/chromium (or chromium on the PATH), else Debian's
#      package, through scripts/ensure_debian_package.sh (apt-get, as root or with password-less sudo).
# When no browser can be had it exits 1 if CI=true (a missing browser must never pass silently in CI) and 0
# otherwise, after saying that the browser tests will be skipped.
set -uo pipefail

PY="${1:-.venv/bin/python}"
PLAYWRIGHT_PIN="playwright==1.65.2"

source "$(dirname "$0")/../../scripts/ci_common.sh"
cannot() { give_up "browser tests: $1" "The browser tests (tests/browser)"; }

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

# Debian's package, installed as the other system packages the tests need are; it says why when it cannot
bash "$(dirname "$0")/../../scripts/ensure_debian_package.sh" chromium /usr/bin/chromium \
    || cannot "Chromium could not be installed (see above). Install Chromium or Chrome and set SAELAB_CHROMIUM=/path/to/it."
command -v /usr/bin/chromium >/dev/null 2>&1 || cannot "Chromium is not installed (see above). Install Chromium or Chrome and set SAELAB_CHROMIUM=/path/to/it."
/usr/bin/chromium --version 2>/dev/null | head -n 1
