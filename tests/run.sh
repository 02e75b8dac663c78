#!/usr/bin/env bash
# `make test`: every suite, in three pytest sessions (decisions 0055 and 0057):
#   - the suite (the testpaths of pyproject.toml) and, beside it, the fuzz suite: its embedded
#     stack shares no server with anything (PostgreSQL from the wheel, the in-process bus), and
#     it keeps the second core busy while the suite waits on its processes;
#   - then the fault suite, whose distributed stack starts once the end-to-end stacks have
#     stopped (together they would not fit PostgreSQL's 100 connections).
# Each runs even when another failed; the exit status says whether all passed. The fuzz suite's
# output is printed once the suite is done, so the two do not interleave.
set -uo pipefail
cd "$(dirname "$0")/.."

UV=${UV:-python3 -m uv}
# Sessions that run at once need base temporary folders of their own: pytest prunes old
# folders under the shared default, which would remove the other session's.
scratch=$(mktemp -d -t taskhub-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
pytest() { $UV run --frozen pytest "$@"; }

pytest tests/fuzz --basetemp="$scratch/fuzz" >"$scratch/fuzz.log" 2>&1 &
fuzz=$!
pytest --basetemp="$scratch/suite"
suite=$?
wait "$fuzz"
fuzzed=$?
echo "==== tests/fuzz (ran beside the suite) ===="
cat "$scratch/fuzz.log"
pytest tests/faults --basetemp="$scratch/faults"
faults=$?
echo "suite: $suite, fuzz: $fuzzed, faults: $faults (0 is a pass)"
exit $((suite || fuzzed || faults))
