# attnlab: the two commands of the quick start, and a few helpers. Each target sets up what it needs.
BUILD ?= build
JOBS ?= $(shell nproc)
ATTNLAB := $(BUILD)/attnlab
DEMO_DIR ?= runs/demo

.PHONY: all setup build demo test test-all format clean

all: build

# Packages and corpora (idempotent; skips what is already there).
setup:
	@scripts/setup.sh --no-build

build: setup
	@[ -f $(BUILD)/CMakeCache.txt ] || cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	@cmake --build $(BUILD) -j $(JOBS)

# The main job on the embedded default data: the whole study (configs/quick.yaml: softmax, linear attention
# and Gated DeltaNet on SOTU, every stage, report.html). A rerun after Ctrl-C resumes where it stopped.
demo: build
	@$(ATTNLAB) study configs/quick.yaml --out $(DEMO_DIR)

# Every test that needs no GPU (labels cpu and slow).
test: build
	@cd $(BUILD) && ctest -LE gpu --output-on-failure -j $(JOBS) --timeout 900

# Every test, GPU ones included (on a GPU machine).
test-all: build
	@cd $(BUILD) && ctest --output-on-failure --timeout 900

format:
	@git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
