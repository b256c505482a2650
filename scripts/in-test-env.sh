#!/usr/bin/env bash
# Runs a command (the tests) in the network namespace where
# scripts/test-env.sh started the tests' MariaDB and Docker engines: they
# listen on that namespace's loopback only, out of reach of this machine's
# users and web pages. The command runs as root (sudo when needed), with
# this PATH, and DOCKER_HOST naming the tests' engine (for the docker
# command). Example: scripts/in-test-env.sh go test ./e2e/
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }
if [ "${ZUN_WSPROXY_TEST_NS:-}" = "$TEST_NS" ]; then
	exec "$@"
fi
[ -e "/run/netns/$TEST_NS" ] || { echo "no network namespace $TEST_NS: run scripts/test-env.sh first (make test does)" >&2; exit 1; }
exec $SUDO nsenter --net="/run/netns/$TEST_NS" env PATH="$PATH" ZUN_WSPROXY_TEST_NS="$TEST_NS" \
	DOCKER_HOST="unix://$RUN_DIR/engine.sock" "$@"
