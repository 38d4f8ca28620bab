# The two commands of the README:
#   make run   installs dependencies, builds (Release), starts the server on CPU
#   make test  installs dependencies, builds, runs every test: the CTest suite,
#              then the sanitizer builds (ASan+UBSan, TSan) and a short
#              libFuzzer run of every fuzz target
# Also: make test-sanitize, make fuzz (longer fuzzing), make soak (minutes of
# mixed traffic against a live server), make bench, make image, and on a
# machine with an NVIDIA GPU make gpu-check (see README).
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
ARGS ?=
FUZZ_SECONDS ?= 300
SOAK_SECONDS ?= 300
CMAKE_COMMON = -G Ninja -DCMAKE_BUILD_TYPE=Release -DNORMSERVE_WERROR=ON

# The targets run one after another even under make -j (each builds with
# all cores itself, and test's stages share the machine's memory).
.NOTPARALLEL:

.PHONY: all deps build run test test-unit test-sanitize fuzz-smoke fuzz soak bench gpu-check image clean format

all: build

deps:
	bash deploy/install-deps.sh

build: deps
	cmake -S . -B $(BUILD_DIR) $(CMAKE_COMMON)
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	$(BUILD_DIR)/server/normserve $(ARGS)

test: test-unit test-sanitize fuzz-smoke

test-unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure --timeout 600 -j $(JOBS)

# ASan + UBSan over the unit and integration tests (the server binary the
# integration tests start is instrumented too; the container image and
# perf_analyzer tests already ran in test-unit), then ThreadSanitizer over
# the tests that exercise threads. Any report fails the run.
# (GCC's -Wmaybe-uninitialized misfires under the sanitizers, so these builds
# keep warnings as warnings; the main build enforces -Werror.)
# (CPU-only: nvcc does not take the sanitizer flags.)
SAN_CMAKE = -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNORMSERVE_BUILD_BENCH=OFF \
  -DNORMSERVE_CUDA=OFF

test-sanitize: deps
	cmake -S . -B build-asan $(SAN_CMAKE) -DNORMSERVE_SANITIZE=address
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure --timeout 900 -j $(JOBS) -LE "container|external_tool"
	cmake -S . -B build-tsan $(SAN_CMAKE) -DNORMSERVE_SANITIZE=thread
	cmake --build build-tsan -j $(JOBS) --target concurrency_tests
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --output-on-failure --timeout 900 -L concurrency

FUZZ_CMAKE = CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNORMSERVE_FUZZ=ON \
  -DNORMSERVE_BUILD_TESTS=OFF -DNORMSERVE_BUILD_BENCH=OFF -DNORMSERVE_CUDA=OFF
FUZZ_TARGETS = request_decoder_fuzz oip_translate_fuzz npy_fuzz model_config_fuzz

fuzz-smoke: deps
	$(FUZZ_CMAKE) -DNORMSERVE_FUZZ_SECONDS=10
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)
	cd build-fuzz && ctest --output-on-failure -L fuzz

fuzz: deps
	$(FUZZ_CMAKE) -DNORMSERVE_FUZZ_SECONDS=$(FUZZ_SECONDS)
	cmake --build build-fuzz -j $(JOBS) --target $(FUZZ_TARGETS)
	cd build-fuzz && ctest --output-on-failure -L fuzz

soak: build
	NORMSERVE_SOAK_SECONDS=$(SOAK_SECONDS) $(BUILD_DIR)/tests/soak_test

# On a machine with an NVIDIA GPU (and nvcc): the CUDA tests, the server on
# the GPU, the CUDA benchmark against a device copy and PyTorch, and
# compute-sanitizer (tests/gpu_checks.sh; logs in $(BUILD_DIR)/gpu-checks).
gpu-check: build
	bash tests/gpu_checks.sh $(BUILD_DIR)

bench: build
	$(BUILD_DIR)/bench/normalize_bench
	$(BUILD_DIR)/bench/int8_report
	python3 bench/compare_cpu.py --build $(BUILD_DIR)

# The container image (Dockerfile), with Docker or else Podman. Podman
# builds Docker-format images here: its default, OCI, drops the HEALTHCHECK.
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  docker build -t normserve:latest . ; \
	elif command -v podman >/dev/null 2>&1; then \
	  podman build --format docker --network host -t normserve:latest . ; \
	else echo "make image: needs docker or podman" >&2; exit 1; fi

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan build-fuzz
