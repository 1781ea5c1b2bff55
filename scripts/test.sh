#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs the Debian packages the tests use
# (as root on Debian; otherwise prints the one `apt-get install` line and exits 3), then
# runs `swift test -c release`. Run it as root: the tests create namespaces and taps.
# .ci/run runs this same script last, after its extra stages.
#
# Usage: scripts/test.sh [swift test arguments, e.g. --filter SpecTests]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/packages.sh
netbe_need_swift test
netbe_need_packages test "${NETBE_TOOLCHAIN_PACKAGES[@]}" "${NETBE_BUILD_PACKAGES[@]}" "${NETBE_TEST_PACKAGES[@]}"
[ "$(id -u)" = 0 ] || echo "test: not root: the tests that create namespaces and taps will fail" >&2
echo "== swift test -c release $*"
exec swift test -c release "$@"
