# MoE Engine: `make run` and `make test` set up everything on a fresh machine.
#   make run   [ARGS="--model deepseek-v3 --tokens 16"]   build, then `moe run`
#   make test                                              build, then every test (ctest)
#   make sanitize                                          CPU tests under ASan + UBSan
#                                                          (no Python module: it would need
#                                                          the ASan runtime preloaded)
#   make format / make format-check                        clang-format the sources
#   make cpu                                               CPU-only build (no CUDA)
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
ARGS ?=

.PHONY: setup configure build run test sanitize cpu format format-check clean

setup:
	@scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	./$(BUILD)/moe run $(ARGS)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

sanitize: setup
	@cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DMOE_ENABLE_CUDA=OFF -DMOE_SANITIZE=ON -DMOE_BUILD_PYTHON=OFF >/dev/null
	@cmake --build build-sanitize -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir build-sanitize --output-on-failure -j $(JOBS) -LE 'format|package'

cpu:
	$(MAKE) build BUILD=build-cpu CMAKE_FLAGS="-DMOE_ENABLE_CUDA=OFF"

format:
	git ls-files -co --exclude-standard -- '*.h' '*.cc' '*.cu' '*.cuh' | xargs clang-format -i

format-check: setup
	scripts/check_format.sh

clean:
	rm -rf $(BUILD) build-sanitize build-cpu
