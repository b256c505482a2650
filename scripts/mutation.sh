#!/usr/bin/env bash
# Mutation testing of the pure packages: gremlins makes small deliberate
# bugs (a comparison flipped or moved by one, an increment made a
# decrement) one at a time and runs the package's tests against each. The
# test efficacy is the share of those bugs the tests notice (killed / killed
# + lived); a package below MIN fails the run. Mutants judged equivalent
# (no behaviour tells them apart) are listed in docs/MUTATION.md.
#
# usage: scripts/mutation.sh GREMLINS MIN PACKAGE...   (run by make mutation)
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 GREMLINS MIN PACKAGE..." >&2; exit 2; }
gremlins=$1 min=$2
shift 2
cd "$(dirname "$0")/.."

# gremlins gives each mutant's test run a time limit of the coverage run's
# duration times the coefficient, compiling included. -count=1: a cached
# coverage run takes milliseconds, which would make every mutant "time
# out". Coefficient 30: on a busy machine compiling a mutant alone can take
# ten times the coverage run, and tests that notice a mutant by a wait that
# never ends (5 s bounds in internal/idle and internal/websocket) must be
# counted as noticing it, not as timed out.
export GOFLAGS=-count=1
summary=() fail=0
for pkg in "$@"; do
	out=$("$gremlins" unleash --workers 1 --timeout-coefficient 30 --output-statuses lt "./$pkg" 2>&1) || {
		echo "$out"
		echo "$pkg: gremlins failed" >&2
		fail=1
		continue
	}
	echo "$out"
	eff=$(sed -n 's/^Test efficacy: \([0-9.]*\)%$/\1/p' <<<"$out")
	counts=$(grep -E '^Killed: ' <<<"$out" || true)
	if [ -z "$eff" ]; then
		echo "$pkg: no efficacy in gremlins' output" >&2
		fail=1
		continue
	fi
	verdict=ok
	if awk -v e="$eff" -v m="$min" 'BEGIN { exit !(e < m) }'; then
		verdict="BELOW $min%"
		fail=1
	fi
	summary+=("$(printf '%-22s %7s%%  %s  %s' "$pkg" "$eff" "$verdict" "$counts")")
done
echo
echo "test efficacy (minimum $min%):"
printf '  %s\n' "${summary[@]}"
exit $fail
