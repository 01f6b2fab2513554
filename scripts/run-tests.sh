#!/bin/sh
# Runs every test: the unit tests under ASan+UBSan, the unit tests and one
# valgrind pass in the plain build, a bounded libFuzzer run (when a fuzz
# build is given), then the integration suite (pytest, by
# Debian's /usr/bin/python3) against the sanitizer build. Ends with the
# tests that failed, every skip with its reason, and one line:
# "N passed, N failed, N skipped", each test counted once. Exit status 0
# only when nothing failed.
#
#   scripts/run-tests.sh BUILD_DIR ASAN_BUILD_DIR [FUZZ_BUILD_DIR]
set -u

build=${1:-build}
asan=${2:-build-asan}
fuzz=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# Every test runs with a TMPDIR of the run's own, checked at the end: a test
# run, killed processes included, leaves nothing behind. Its name is short:
# podman refuses a run root over 50 characters, and the tests put theirs
# there. pytest's folders (tmp_path) are in $work, removed with it.
tmp=$(mktemp -d /tmp/gt.XXXXXX)
trap 'rm -rf "$work" "$tmp"' EXIT
results=$work/results
mkdir "$results"
export TMPDIR=$tmp

# Leaks fail the sanitizer run; UBSan stops at the first finding.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_ctest() { # dir label junit
    echo "== ctest in $1 ($2)"
    ctest --test-dir "$1" -L "$2" --output-on-failure --no-tests=error \
        --output-junit "$3" -j 2
}

# A runner that fails without a report (a crash, a missing tool) still
# counts as a failure below.
status=0
run_ctest "$asan" unit "$results/unit-asan.xml" || status=1
run_ctest "$build" 'unit|valgrind' "$results/unit-plain.xml" || status=1
if [ -n "$fuzz" ]; then
    run_ctest "$fuzz" fuzz "$results/fuzz.xml" || status=1
fi

echo "== integration tests (pytest) against $asan"
GPULET_BUILD="$root/$asan" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    --basetemp="$work/pytest" --junitxml="$results/integration.xml" \
    "$root/tests/integration" || status=1

# The check of what is left in TMPDIR, as one more test in the reports.
/usr/bin/python3 - "$TMPDIR" "$results/leftovers.xml" <<'PY'
import os, sys, xml.etree.ElementTree as ET
left = sorted(os.listdir(sys.argv[1]))
suite = ET.Element("testsuite", name="leftovers", tests="1")
case = ET.SubElement(suite, "testcase", classname="run-tests", name="nothing_left_in_TMPDIR")
if left:
    ET.SubElement(case, "failure", message="left in TMPDIR: " + " ".join(left))
    print("== left in TMPDIR by the tests:", " ".join(left))
ET.ElementTree(suite).write(sys.argv[2])
PY

/usr/bin/python3 - "$results" "$status" <<'PY'
"""Counts each test once from the JUnit reports (pytest writes a second
record for a test whose teardown failed too), failed over skipped over
passed, and lists what failed and every skip with its reason."""
import glob, os, sys, xml.etree.ElementTree as ET
outcome, why = {}, {}
rank = {"passed": 0, "skipped": 1, "failed": 2}
for path in sorted(glob.glob(sys.argv[1] + "/*.xml")):
    suite = os.path.basename(path)[:-4]
    for case in ET.parse(path).getroot().iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        key = f"{suite}: {name}" if cls in ("", name) else f"{suite}: {cls}::{name}"
        skip = case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            state = "failed"
        elif skip is not None or case.get("status") in ("notrun", "disabled"):
            state = "skipped"
            reason = (skip.get("message") if skip is not None else None) or case.get("status")
            said = (case.findtext("system-out") or "").strip().splitlines()
            if reason.startswith("SKIP_RETURN_CODE") and said:
                reason = said[-1]  # ctest: the test's own last line says why
            why.setdefault(key, " ".join(reason.split()))
        else:
            state = "passed"
        if rank[state] >= rank[outcome.get(key, "passed")]:
            outcome[key] = state
count = {s: sum(1 for v in outcome.values() if v == s) for s in rank}
for key in sorted(k for k, v in outcome.items() if v == "failed"):
    print(f"failed: {key}")
for key in sorted(k for k, v in outcome.items() if v == "skipped"):
    print(f"skipped: {key}: {why[key]}")
if int(sys.argv[2]) and not count["failed"]:
    count["failed"] = 1  # a runner failed without saying which test
    print("failed: a runner that named no test (see its output above)")
print(f"{count['passed']} passed, {count['failed']} failed, {count['skipped']} skipped")
sys.exit(1 if count["failed"] or count["passed"] == 0 else 0)
PY
