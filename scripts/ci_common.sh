# Sourced by the scripts that set up what the tests need (a Debian package, a browser).

is_ci() { case "${CI:-}" in 1 | true | TRUE | True | yes | on) return 0 ;; esac; return 1; }

# give_up REASON WHO: say why something cannot be had. Under CI=true exit 1, since a missing dependency must never
# turn into skipped tests there; elsewhere exit 0 after saying that WHO (some tests) will be skipped.
give_up() {
    echo "*** $1" >&2
    if is_ci; then
        echo "*** CI=true: stopping here; nothing may be skipped in CI." >&2
        exit 1
    fi
    echo "*** $2 will be SKIPPED on this machine." >&2
    exit 0
}
