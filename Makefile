# A thin front for CMake. `make` builds, `make test` runs every test,
# `make demo` shows gpulet serving a simulated DGX A100, `make e2e` runs it on a real
# node (a real kubelet, containerd and runc). Each installs the
# Debian packages it needs first (scripts/install-deps.sh).

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build build-asan build-fuzz deps test e2e demo bench fuzz image validator clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

$(FUZZ_BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(FUZZ_BUILD) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DGPULET_FUZZ=ON >/dev/null

build-fuzz: deps $(FUZZ_BUILD)/Makefile
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers -- --no-print-directory

# A long fuzzing run (10 minutes per target); make test runs 20 seconds of each.
fuzz: build-fuzz
	@cmake -S . -B $(FUZZ_BUILD) -DGPULET_FUZZ_SECONDS=600 >/dev/null
	@ctest --test-dir $(FUZZ_BUILD) -L fuzz --output-on-failure -j $(JOBS)
	@cmake -S . -B $(FUZZ_BUILD) -DGPULET_FUZZ_SECONDS=20 >/dev/null

$(ASAN_BUILD)/Makefile: CMakeLists.txt
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DGPULET_SANITIZE=ON >/dev/null

build: deps $(BUILD)/Makefile
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

build-asan: deps $(ASAN_BUILD)/Makefile
	@cmake --build $(ASAN_BUILD) -j $(JOBS) -- --no-print-directory

test: build build-asan build-fuzz
	@./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

# gpulet on a real node, once per Kubernetes version: a standalone kubelet
# v1.20.2 (built once into $(BUILD)/e2e-cache or $GPULET_E2E_CACHE) and a
# one-node v1.34.9 cluster ($GPULET_E2E_K8S or the shared binaries, etcd and
# containerd from Debian trixie, cached there too); not part of `make test`.
e2e: build
	@./tests/e2e/run.sh $(BUILD)

demo: build
	@./scripts/demo.sh $(BUILD)

# The container image gpulet:VERSION, FROM scratch, offline (buildah, vfs).
image: deps
	@./scripts/build-image.sh build-image

# validator/vectoradd and the image gpulet-validator:VERSION (needs nvcc;
# says so and does nothing without it).
validator: build
	@./scripts/build-validator-image.sh $(BUILD)

bench: build
	@$(BUILD)/bench/bench_inventory
	@$(BUILD)/bench/bench_cuda_interpose

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) build-image
