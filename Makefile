# A thin front for CMake. `make` builds, `make test` runs every test,
# `make demo` shows gpulet on a simulated DGX A100. Each installs the
# Debian packages it needs first (scripts/install-deps.sh).

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build build-asan deps test demo bench clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

$(ASAN_BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DGPULET_SANITIZE=ON >/dev/null

build: deps $(BUILD)/Makefile
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

build-asan: deps $(ASAN_BUILD)/Makefile
	@cmake --build $(ASAN_BUILD) -j $(JOBS) -- --no-print-directory

test: build build-asan
	@./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD)

demo: build
	@./scripts/demo.sh $(BUILD)

bench: build
	@$(BUILD)/bench/bench_inventory

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
