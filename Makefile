# lmc: build the compiler, the runtime, trainers and tests.  See README.md.

CC       ?= clang
ifeq ($(origin CC),default)
CC        = clang
endif
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN      = -std=c11 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L
LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null)
BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
CHECK_LIBS  := $(shell pkg-config --libs check 2>/dev/null)
SAN      ?=
# TRAINER_CFLAGS: how emitted trainers are compiled.  OpenMP (the kernels'
# row loops on --threads threads) when the compiler has it; NATIVE=1 adds
# -march=native (AVX2/FMA where the CPU has them; the binary then runs on
# this CPU only), off by default so that trainers stay portable.  With
# -mtune=generic: clang 14's znver3 tuning takes three times as long over
# the Transformer's C (28 s against 10 s) for the same instructions.
OMP_CFLAGS := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
NATIVE   ?=
TRAINER_CFLAGS ?= -O3 $(OMP_CFLAGS) $(if $(filter 1,$(NATIVE)),-march=native -mtune=generic)

# MPI=1: `make trainer` links runtime/dist.c built over Open MPI (mpicc's
# flags with $(CC)), for mpirun -np N; its object comes before the library,
# whose one-rank dist.o is then not linked.
MPI      ?=
ifeq ($(MPI),1)
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
MPI_OBJ     = $(B)/obj/runtime/dist_mpi.o
endif

# GRAPH: the graph file `make trainer` compiles, graphs/MODEL.lua unless
# given; a graph kept elsewhere names its trainer after the file
# (GRAPH=docs/examples/tiny_gru.lua builds build/tiny_gru).
ifdef GRAPH
MODEL   ?= $(basename $(notdir $(GRAPH)))
endif
MODEL   ?= lstm
GRAPH   ?= graphs/$(MODEL).lua
DATA    ?= data/wikitext-2
EPOCHS  ?= 6
ARGS    ?=
LMCFLAGS ?=

B = build
COMPILER_SRC := $(filter-out compiler/main.c,$(wildcard compiler/*.c compiler/emit/*.c))
COMPILER_OBJ := $(COMPILER_SRC:%.c=$(B)/obj/%.o)
RUNTIME_SRC  := $(filter-out runtime/main.c,$(wildcard runtime/*.c))
RUNTIME_OBJ  := $(RUNTIME_SRC:%.c=$(B)/obj/%.o)
CHECK_SRC    := $(wildcard tests/check_*.c)
CHECK_BIN    := $(CHECK_SRC:tests/%.c=$(B)/tests/%)
MODELS       := $(basename $(notdir $(wildcard graphs/*.lua)))

.PHONY: all deps test test-deps generate trainer train clean sanitize fuzz bench bench-mpi tune plot graphs-png docs-png bench-passes
all: $(B)/lmc $(B)/liblmcrt.a $(B)/obj/runtime/main.o

$(B)/obj/compiler/%.o: compiler/%.c $(wildcard compiler/*.h compiler/emit/*.h) $(wildcard runtime/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) $(WARN) $(LUA_CFLAGS) -Iruntime -c $< -o $@

$(B)/obj/runtime/%.o: runtime/%.c runtime/lmc_rt.h $(wildcard runtime/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) $(WARN) $(BLAS_CFLAGS) -Iruntime -c $< -o $@

$(B)/obj/runtime/dist_mpi.o: runtime/dist.c runtime/lmc_rt.h $(wildcard runtime/*.h)
	@command -v mpicc >/dev/null || { echo "MPI=1: mpicc not found (make deps MPI=1 installs Open MPI)" >&2; exit 1; }
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) $(WARN) -DLMC_MPI $(MPI_CFLAGS) -Iruntime -c $< -o $@

$(B)/liblmc.a: $(COMPILER_OBJ)
	@rm -f $@; ar rcs $@ $^

$(B)/liblmcrt.a: $(RUNTIME_OBJ)
	@rm -f $@; ar rcs $@ $^

$(B)/lmc: $(B)/obj/compiler/main.o $(B)/liblmc.a $(B)/liblmcrt.a
	$(CC) $(SAN) -o $@ $^ $(LUA_LIBS) -lm

$(B)/tests/check_%: tests/check_%.c $(B)/liblmc.a $(B)/liblmcrt.a tests/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) $(WARN) $(LUA_CFLAGS) -Icompiler -Iruntime -Itests -o $@ $< $(B)/liblmc.a $(B)/liblmcrt.a $(CHECK_LIBS) $(LUA_LIBS) $(BLAS_LIBS) -lm

# The runtime against a hand-written model (tests/fake_model.c), both called
# directly and through fake_trainer, a trainer built from it with main.o.
$(B)/tests/check_train: tests/check_train.c tests/fake_model.c $(B)/liblmcrt.a $(B)/obj/runtime/main.o tests/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) $(WARN) $(BLAS_CFLAGS) -Iruntime -o $(B)/tests/fake_trainer tests/fake_model.c $(B)/obj/runtime/main.o $(B)/liblmcrt.a $(BLAS_LIBS) -lm
	$(CC) $(CFLAGS) $(SAN) $(WARN) $(BLAS_CFLAGS) -Iruntime -Itests -DFAKE_TRAINER='"$(B)/tests/fake_trainer"' -o $@ $< tests/fake_model.c $(B)/liblmcrt.a $(CHECK_LIBS) $(BLAS_LIBS) -lm

deps:
	@sh tools/deps.sh build $(if $(filter 1,$(MPI)),mpi)

test-deps:
	@sh tools/deps.sh test

test: test-deps
	@$(MAKE) --no-print-directory all $(CHECK_BIN) $(B)/bench/gencorpus
	@sh tests/run.sh $(CHECK_BIN)

# Every suite under AddressSanitizer (LeakSanitizer included) and UBSan,
# built in build/san: the compiler, the runtime, the check binaries, and the
# C that check_emit, check_grad and suite_trainer.sh emit and compile (they
# add $SAN to their clang lines).  Any report fails its test.
SANITIZERS = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_CHECKS := $(CHECK_SRC:tests/%.c=build/san/tests/%)
sanitize:
	@sh tools/deps.sh sanitize
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory B=build/san SAN="$(SANITIZERS)" CFLAGS="-O1 -g" all $(SAN_CHECKS) build/san/bench/gencorpus
	@B=build/san LMC=build/san/lmc SAN="$(SANITIZERS)" LMC_LIBDIR="$(CURDIR)/graphs/lib" \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 sh tests/run.sh $(SAN_CHECKS)

# libFuzzer targets (tests/fuzz/fuzz_*.c, README.md there): the compiler
# and the runtime built in build/fuzz with coverage, ASan and UBSan, each
# target linked with libFuzzer and run for FUZZ_SECONDS on a copy of its
# seed corpus tests/fuzz/corpus/NAME/.  Fails on any crash, leak, timeout
# or out-of-memory, printing the reproducer (build/fuzz/artifacts/); prints
# each target's execution count.  One target: make fuzz FUZZ_TARGETS=graph.
FUZZ_SECONDS ?= 60
FUZZ_SAN      = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS ?= $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
fuzz:
	@sh tools/deps.sh fuzz
	@$(MAKE) --no-print-directory B=build/fuzz SAN="-fsanitize=fuzzer-no-link $(FUZZ_SAN)" CFLAGS="-O1 -g" \
	  build/fuzz/liblmc.a build/fuzz/liblmcrt.a $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
	@FUZZ_SECONDS=$(FUZZ_SECONDS) LMC_LIBDIR="$(CURDIR)/graphs/lib" sh tests/fuzz/run.sh $(FUZZ_TARGETS)

$(B)/fuzz_%: tests/fuzz/fuzz_%.c $(B)/liblmc.a $(B)/liblmcrt.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) $(WARN) $(LUA_CFLAGS) $(BLAS_CFLAGS) -Icompiler -Iruntime -o $@ $< \
	  $(B)/liblmc.a $(B)/liblmcrt.a $(LUA_LIBS) $(BLAS_LIBS) -lm

generate: $(B)/lmc
	@for m in $(MODELS); do echo "lmc compile graphs/$$m.lua -> generated/$$m.c"; \
	  $(B)/lmc compile graphs/$$m.lua -o generated/$$m.c || exit 1; done

# A trainer for MODEL (the graph file GRAPH) compiled for the vocabulary of DATA.
trainer: all $(MPI_OBJ)
	@mkdir -p $(B)/gen
	@ntok=$$($(B)/lmc vocab $(DATA) | cut -f1) || exit 1; \
	  flags=""; [ -f $(B)/tune/$(MODEL).flags ] && flags=$$(cat $(B)/tune/$(MODEL).flags); \
	  echo "lmc compile $(GRAPH) -D ntoken=$$ntok $$flags $(LMCFLAGS)"; \
	  $(B)/lmc compile $(GRAPH) -o $(B)/gen/$(MODEL).c -D ntoken=$$ntok $$flags $(LMCFLAGS) || exit 1
	$(CC) $(TRAINER_CFLAGS) -std=c11 -Wall -Wextra -Werror $(BLAS_CFLAGS) -Iruntime -o $(B)/$(MODEL) \
	  $(B)/gen/$(MODEL).c $(B)/obj/runtime/main.o $(MPI_OBJ) $(B)/liblmcrt.a $(BLAS_LIBS) $(MPI_LIBS) -lm

train: deps
	@$(MAKE) --no-print-directory trainer
	$(B)/$(MODEL) train --data $(DATA) --epochs $(EPOCHS) --save $(B)/$(MODEL).safetensors $(ARGS)

# A PNG of a training log or --log-csv file, next to it.
plot:
	@[ -n "$(LOG)" ] || { echo "usage: make plot LOG=FILE (a training log or a --log-csv file)" >&2; exit 2; }
	@sh tools/plot.sh "$(LOG)"

# lmc's trainers against PyTorch in one run: bench/README.md, bench/chart.png.
# BENCH_QUICK=1 for a short run; BENCH_MODELS, BENCH_THREADS, ... in bench/bench.py.
bench: test-deps
	@$(MAKE) --no-print-directory all
	@CC="$(CC)" TRAINER_CFLAGS="$(TRAINER_CFLAGS)" BLAS_CFLAGS="$(BLAS_CFLAGS)" BLAS_LIBS="$(BLAS_LIBS)" \
	  DATA="$(DATA)" NATIVE="$(NATIVE)" /usr/bin/python3 bench/bench.py

# Data-parallel training speed: np=1 and np=2 against one process with two
# threads, and a projection to more ranks (bench/README.md, "Data-parallel
# training"; BENCH_QUICK=1 for a short run, the rest in bench/bench_mpi.py).
bench-mpi: all
	@$(MAKE) --no-print-directory deps MPI=1
	@CC="$(CC)" DATA="$(DATA)" /usr/bin/python3 bench/bench_mpi.py

# A synthetic corpus with WikiText-103's sizes (bench/README.md, "Large
# corpora"): build/bench/gencorpus DIR.
$(B)/bench/gencorpus: bench/gencorpus.c $(B)/liblmcrt.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN) $(WARN) -Iruntime -o $@ $< $(B)/liblmcrt.a -lm

# The fp32 and bf16 peaks of a core and the GFLOP/s of sgemm and
# lmc_gemm_bf16 at the trainers' shapes (usage in bench/peak.c).
$(B)/bench/peak: bench/peak.c $(B)/liblmcrt.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(BLAS_CFLAGS) -Iruntime -o $@ $< $(B)/liblmcrt.a $(BLAS_LIBS) -lm

# A preloaded cblas_sgemm timer: the time and GFLOP/s of each product
# shape a trainer runs (usage in bench/gemmtime.c).
$(B)/bench/gemmtime.so: bench/gemmtime.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -std=c11 -Wall -Wextra -Werror -shared -fPIC $(BLAS_CFLAGS) -o $@ $< -ldl

# Times MODEL's trainer under each pass configuration; the fastest goes to
# build/tune/MODEL.flags, which `make trainer` reads.
tune: all
	@CC="$(CC)" TRAINER_CFLAGS="$(TRAINER_CFLAGS)" BLAS_CFLAGS="$(BLAS_CFLAGS)" BLAS_LIBS="$(BLAS_LIBS)" \
	  DATA="$(DATA)" MODEL="$(MODEL)" LMCFLAGS="$(LMCFLAGS)" sh bench/tune.sh

# docs/MODEL.png: every model's training graph after the passes, loops and
# fused kernels as clusters (lmc compile --emit=dot, then Graphviz).
# The picture of docs/architecture.md, from its hand-drawn docs/architecture.dot.
docs-png:
	dot -Tpng -Gdpi=80 docs/architecture.dot -o docs/architecture.png

graphs-png: $(B)/lmc
	@for m in $(MODELS); do echo "lmc compile graphs/$$m.lua --emit=dot | dot -Tpng > docs/$$m.png"; \
	  $(B)/lmc compile graphs/$$m.lua --emit=dot -o $(B)/$$m.dot && dot -Tpng $(B)/$$m.dot -o docs/$$m.png || exit 1; done

# What each optimization pass buys: ms per training batch and peak memory of
# every model with each pass on and off, -O0 against -O2 (bench/passes.md).
bench-passes: all
	@CC="$(CC)" TRAINER_CFLAGS="$(TRAINER_CFLAGS)" BLAS_CFLAGS="$(BLAS_CFLAGS)" BLAS_LIBS="$(BLAS_LIBS)" \
	  DATA="$(DATA)" sh bench/passes.sh

clean:
	rm -rf build
