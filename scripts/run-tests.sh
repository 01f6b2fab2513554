#!/bin/sh
# Runs every test: the unit tests under ASan+UBSan, the unit tests and one
# valgrind pass in the plain build, a bounded libFuzzer run (when a fuzz
# build is given), then the integration suite (pytest, by
# Debian's /usr/bin/python3) against the sanitizer build. Ends with one
# line: "N passed, N failed". Exit status 0 only when nothing failed.
#
#   scripts/run-tests.sh BUILD_DIR ASAN_BUILD_DIR [FUZZ_BUILD_DIR]
set -u

build=${1:-build}
asan=${2:-build-asan}
fuzz=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

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
    --junitxml="$results/integration.xml" "$root/tests/integration" || status=1

/usr/bin/python3 - "$results" "$status" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
passed = failed = 0
for path in glob.glob(sys.argv[1] + "/*.xml"):
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    for s in suites:
        tests = int(s.get("tests", 0))
        bad = int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped = int(s.get("skipped", 0) or s.get("disabled", 0) or 0)
        passed += tests - bad - skipped
        failed += bad
if int(sys.argv[2]) and not failed:
    failed = 1  # a runner failed without saying which test
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed or passed == 0 else 0)
PY
