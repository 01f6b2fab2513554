#!/bin/sh
# Prints "NAME PATH" for every shared library the given ELF files load
# (from ldd), once each, sorted: what an image must carry for them to run.
# The dynamic loader itself is not listed; `readelf -l` names it. Static
# programs need nothing and are passed over.
#
#   scripts/elf-deps.sh ELF...
set -eu
for elf in "$@"; do
    # A static program loads nothing (ldd would say "not a dynamic executable").
    readelf -d "$elf" 2>/dev/null | grep -q '(NEEDED)' || continue
    ldd "$elf"
done | sed -n 's/^\s*\([^/[:space:]]*\) => \(\/\S*\) .*/\1 \2/p' | sort -u
