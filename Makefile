# beam_alloc: allocators for Erlang/Elixir NIFs.
#
#   make lib     both static libraries (NIF and standalone)
#   make test    every test: C units (plain, ASan+UBSan), header checks, ExUnit
#   make demo    a walk through every allocator inside a running BEAM
#   make clean
#
# Honours CC, CFLAGS (but for its warning options: see OWN_CFLAGS),
# ERTS_INCLUDE_DIR and MIX_APP_PATH (elixir_make style).

CC      ?= cc
CFLAGS  ?= -O2 -g
BUILD   := build
SAN_CC  ?= clang

# Folders are the build boundary: the allocators (src/*.c) and the
# operating system's part (src/os/) go into both libraries; the NIF glue
# (src/nif/) and the enif backend only into the NIF one; the libc backend
# only into the standalone one.
COMMON_SRC      := $(wildcard src/*.c src/os/*.c)
NIF_SRC         := $(COMMON_SRC) src/backend/enif.c $(wildcard src/nif/*.c)
STANDALONE_SRC  := $(COMMON_SRC) src/backend/libc.c
HEADERS         := $(wildcard include/*.h include/*.hpp include/beam_alloc/*.h src/*.h src/os/*.h src/nif/*.h)

# Found when first needed (after `make deps` may have installed Erlang),
# then remembered.
ERTS_INCLUDE_DIR ?= $(eval ERTS_INCLUDE_DIR := $(shell erl -noshell -eval 'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().' 2>/dev/null))$(ERTS_INCLUDE_DIR)

WARN      := -Wall -Wextra -Werror
# Frame pointers: safe mode's reports walk them to give several frames of
# each allocation's stack (src/frames.c); the library's own frames must be
# there for the walk to reach the caller's.
FRAME_FLAGS := -fno-omit-frame-pointer
LIB_BASE_FLAGS := -std=c11 $(WARN) -fPIC -fvisibility=hidden -Iinclude -pthread $(FRAME_FLAGS)
# TLS descriptors: thread-local access from a dlopen'ed NIF is a couple of
# instructions when glibc (2.32 or later) places the library's small
# thread-local block in its spare static TLS (src/internal.h says when),
# and a call into the dynamic linker otherwise, never a load failure.
# Only with -mgeneral-regs-only: the compiler assumes a descriptor call
# keeps every register, and glibc before 2.40 (Debian 12's 2.36, BZ
# #31372) lets the first access on a thread to a library in dynamic TLS
# (every beam_alloc NIF loaded after the first) clobber the vector
# registers: a value the compiler kept in one across the access was lost
# (seen: a stack walk's return address, held in xmm0, became 0). The
# library has no floating point, so it keeps nothing there; a compiler
# without the flag gets the traditional dialect, a plain call.
# $(call cc_flag,COMPILER,LANGUAGE,FLAG): FLAG when COMPILER takes it for
# LANGUAGE (c, c++) without a warning (clang only warns about some flags
# it does not know), else nothing.
cc_flag = $(shell $(1) -Werror $(3) -x $(2) -c /dev/null -o /dev/null 2>/dev/null && echo $(3))
# Asked when a recipe first needs it, then remembered (as LIBDW_FLAGS;
# NO_ICF and NO_ICF_CXX alike): read with the Makefile, these two probes
# and NO_ICF's two ran the compiler at every make, make clean and make
# format too, and in each sub-make. (Once a make: no target here has a
# CC of its own.)
TLS_DIALECT = $(eval TLS_DIALECT := $(if $(and $(call cc_flag,$(CC),c,-mgeneral-regs-only),$(call cc_flag,$(CC),c,-mtls-dialect=gnu2)),-mtls-dialect=gnu2 -mgeneral-regs-only))$(TLS_DIALECT)
LIB_FLAGS = $(strip $(LIB_BASE_FLAGS) $(TLS_DIALECT))

STANDALONE_OBJ := $(STANDALONE_SRC:src/%.c=$(BUILD)/standalone/%.o)

C_TEST_SRC := $(wildcard test/c/*.c)

.PHONY: all lib deps soak test test-all demo-run c-test c-test-san c-test-tsan c-test-valgrind header-test mix-test demo bench clean format

all: lib

lib: $(BUILD)/libbeam_alloc.a $(BUILD)/libbeam_alloc_standalone.a

# The NIF library alone: what beam_alloc.mk and the :beam_alloc Mix
# compiler build in a dependency (quiet when it is up to date).
# NIF_LIB_COPY (relative to this folder): where nif-lib writes the copy
# of the library (see $(BUILD)/libbeam_alloc.a's rule). beam_alloc.mk
# gives each folder that includes it a copy of its own,
# build/mk-<checksum>/libbeam_alloc.a: with one copy for all, this
# Makefile's goals (rebar3's pre_hook, make lib) wrote it with cc, a
# project's Makefile with CC = clang wrote it back with clang, and the
# project's NIF was built again at every rebar3 compile (two projects
# with different CCs on one checkout as well).
NIF_LIB_COPY ?= $(BUILD)/libbeam_alloc.a
.PHONY: nif-lib standalone-lib
nif-lib: $(NIF_LIB_COPY)
	@:
standalone-lib: $(BUILD)/libbeam_alloc_standalone.a
	@:

# Said before any object is built: an empty -I would take the next flag
# (-c) for its folder, and every compile would fail as a link.
.PHONY: erts-include-dir
erts-include-dir:
	@if [ -z "$(ERTS_INCLUDE_DIR)" ]; then echo "ERTS_INCLUDE_DIR is empty (erl not on PATH?): set it to the folder of erl_nif.h, or put erl on PATH (in this checkout, make deps installs Erlang)" >&2; exit 1; fi

# A target the library cannot serve (32-bit: include/beam_alloc.h says
# why) stops here with the header's one message, before any object: its
# sources' compiles each failed with their own errors, none saying why.
# Preprocessing only (a few milliseconds, silent when it passes): a
# toolchain's CC and CFLAGS (-m32, --sysroot, -march) as the objects get,
# but for dependency output (-MD, -MMD, -MF FILE, -Wp,-MD,FILE): that is
# the objects' too, and here -MD wrote /dev/null.d (a permission error
# failing every build but root's, which left the file in /dev) and -MF
# FILE the header's dependencies over the user's file. (-MF, -MT, -MQ and
# -MJ take the next word: joined to it first, so that it goes with them.)
.PHONY: target-check
target-check:
	@$(CC) $(TARGET_CHECK_CFLAGS) $(LIB_FLAGS) -E -x c include/beam_alloc.h -o /dev/null
TARGET_CHECK_CFLAGS = $(filter-out -M% -Wp$(comma)-M%,$(subst -MF ,-MF,$(subst -MT ,-MT,$(subst -MQ ,-MQ,$(subst -MJ ,-MJ,$(strip $(OWN_CFLAGS)))))))

# The libraries' objects and archives are written under a name of their
# own (the shell's PID) and renamed into place: two builds of one checkout
# at once (two projects sharing a path dependency, built side by side)
# each see a whole file or none, never one the other is writing (a bug
# hunt saw an archive with 13 of its members being read).
TMP_OUT = $@.$$$$.tmp

# CFLAGS reach beam_alloc's own code (optimisation, debug information,
# sanitizers, -D, -f and -m flags) but not its warning options (-W...,
# -pedantic): those are for the user's code, and with the library's
# -Werror a user's CFLAGS="-O2 -Wshadow" (or -Wpedantic) failed the build
# of beam_alloc as a dependency. (WARN sets the library's warnings; -Wp,
# -Wa and -Wl pass options to other tools and stay.)
comma := ,
CFLAGS_WARNINGS = $(filter-out -Wp$(comma)% -Wa$(comma)% -Wl$(comma)%,$(filter -W% -pedantic%,$(CFLAGS)))
OWN_CFLAGS = $(filter-out $(CFLAGS_WARNINGS),$(CFLAGS))

# Each library's objects are built again when CC, or a flag of CFLAGS
# that changes what they need at link and load time (sanitizers,
# coverage, profiling, LTO), changes: they depend on a file holding those,
# rewritten only when it differs. (A dependency built once with
# CFLAGS=-fsanitize=address, or another CC, kept those objects, and a NIF
# linked later without the flag failed to load with "undefined symbol:
# __asan_...".) Not on the rest of CFLAGS: a user's Makefile that adds to
# an exported CFLAGS (CFLAGS += -fPIC -I...) builds the library through
# beam_alloc.mk with other CFLAGS than the Mix compiler or the rebar3
# hook did just before, and with the whole command kept every compile
# built it twice (a review: 60 objects, 17-42 s, at every mix compile).
NIF_OBJ_CMD = $(CC) $(OWN_CFLAGS) $(LIB_FLAGS) -I$(ERTS_INCLUDE_DIR)
STANDALONE_OBJ_CMD = $(CC) $(OWN_CFLAGS) $(LIB_FLAGS) -DBEAM_ALLOC_STANDALONE
LINK_CFLAGS = $(filter -fsanitize% -fno-sanitize% -fprofile% -fcoverage% --coverage -pg -flto% -fno-lto,$(CFLAGS))
NIF_OBJ_KEY = $(CC) $(LINK_CFLAGS) $(TARGET_CFLAGS) $(LIB_FLAGS) -I$(ERTS_INCLUDE_DIR)
STANDALONE_OBJ_KEY = $(CC) $(LINK_CFLAGS) $(TARGET_CFLAGS) $(LIB_FLAGS) -DBEAM_ALLOC_STANDALONE
# The flags that say what machine and system the code is for: -m* (-march,
# -mcpu, -mabi, -m32...), --sysroot, --target/-target, -isysroot, -arch
# (those that take the next word joined to it first). In the key: a
# toolchain wrapper keeps CC and changes them, and its objects were the
# other target's.
TARGET_CFLAGS = $(filter -m% --sysroot% -isysroot% --target% -target% -arch%,$(subst --sysroot ,--sysroot=,$(subst -isysroot ,-isysroot=,$(subst -target ,-target=,$(subst -arch ,-arch=,$(strip $(CFLAGS)))))))
# The NIF library's objects and archive go to a folder per key, so that
# the builds of two targets are both kept: a Nerves developer switches all
# day between the host (mix test) and the board (MIX_TARGET=rpi4: its
# CC, CFLAGS and ERTS_INCLUDE_DIR), and each switch built the whole library
# again (15-33 s each way). The folder is named by a checksum of the key.
# Goals that build no NIF code (NIF_FREE_GOALS) leave ERTS_INCLUDE_DIR out
# of it: asking erl for it takes a second (the key file inside has the
# real one). Those of them that write nothing in it (KEYLESS_GOALS) need
# no name, no cksum run: make clean, format and deps (which installs what
# is missing) were refused without cksum too; the other goals still are.
# $(BUILD)/libbeam_alloc.a is a copy of the last built, for make lib and
# rebar3's hook (beam_alloc.mk's NIFs link their folder's own copy,
# nif-lib's NIF_LIB_COPY, and this one only where build/ is read-only).
KEYLESS_GOALS := clean format deps rebar3-clean
NIF_FREE_GOALS := $(KEYLESS_GOALS) standalone-lib c-test c-test-san c-test-tsan c-test-valgrind \
    cross-test fuzz fuzz-build fuzz-smoke bench-scratch bench-pause bench-sqlite-c target-check \
    %/run_tests %/libbeam_alloc_standalone.a
# Non-empty when goals were given and each is one of the list $(1).
only_goals = $(and $(MAKECMDGOALS),$(if $(filter-out $(1),$(MAKECMDGOALS)),,yes))
NIF_DIR_ERTS = $(if $(call only_goals,$(NIF_FREE_GOALS)),none,$(ERTS_INCLUDE_DIR))
# (LIB_BASE_FLAGS: the key is read with the Makefile, and TLS_DIALECT's
# probes would run then; the dialect follows from CC, which the key has,
# and the command file inside has it.)
NIF_DIR_KEY = $(CC) $(LINK_CFLAGS) $(TARGET_CFLAGS) $(LIB_BASE_FLAGS) ERTS=$(NIF_DIR_ERTS)
NIF_DIR_CKSUM = $(firstword $(shell printf '%s' '$(subst ','\'',$(NIF_DIR_KEY))' | cksum))
NIF_DIR_SUM := $(if $(call only_goals,$(KEYLESS_GOALS)),none,$(NIF_DIR_CKSUM))
# Without cksum the folder was build/nif- for every target, their objects
# mixed, and nothing said so (cksum is coreutils: a refusal, no fallback).
$(if $(NIF_DIR_SUM),,$(error cksum is not on PATH (coreutils): it names the NIF library's folder per target, build/nif-<checksum>))
NIF_DIR := $(BUILD)/nif-$(NIF_DIR_SUM)
NIF_OBJ := $(NIF_SRC:src/%.c=$(NIF_DIR)/%.o)
NIF_LIB := $(NIF_DIR)/libbeam_alloc.a
# (Compared before anything is written: a prebuilt read-only checkout,
# with the same command, stays untouched.)
write_if_changed = printf '%s\n' '$(subst ','\'',$($(1)))' | cmp -s - $@ || \
    { mkdir -p $(@D) && printf '%s\n' '$(subst ','\'',$($(1)))' >$(TMP_OUT) && mv -f $(TMP_OUT) $@; }
.PHONY: FORCE_COMMAND
$(NIF_DIR)/command: FORCE_COMMAND | erts-include-dir target-check
	@$(call write_if_changed,NIF_OBJ_KEY)
$(BUILD)/standalone/command: FORCE_COMMAND | target-check
	@$(call write_if_changed,STANDALONE_OBJ_KEY)

$(NIF_DIR)/%.o: src/%.c $(HEADERS) $(NIF_DIR)/command | erts-include-dir
	@mkdir -p $(@D)
	$(NIF_OBJ_CMD) -c $< -o $(TMP_OUT) && mv -f $(TMP_OUT) $@

$(BUILD)/standalone/%.o: src/%.c $(HEADERS) $(BUILD)/standalone/command
	@mkdir -p $(@D)
	$(STANDALONE_OBJ_CMD) -c $< -o $(TMP_OUT) && mv -f $(TMP_OUT) $@

$(NIF_LIB): $(NIF_OBJ) | erts-include-dir
	rm -f $(TMP_OUT) && ar rcs $(TMP_OUT) $^ && mv -f $(TMP_OUT) $@

# The NIF library of this CC, target flags and ERTS_INCLUDE_DIR
# (NIF_DIR), built, then its path on a line of its own: what the
# :beam_alloc Mix compiler links. Relative to this folder: absolute, a
# quote in the checkout's path broke the echo. nif-dir: the folder alone,
# nothing built.
.PHONY: nif-lib-path nif-dir
nif-lib-path: $(NIF_LIB)
	@echo '$(NIF_LIB)'
nif-dir:
	@echo '$(NIF_DIR)'

# The copy (and NIF_LIB_COPY), compared at every make: the last built
# may be an older archive of another key (back to the host), which make's
# times alone would not copy. Touched when a public header is newer: a
# NIF built by beam_alloc.mk depends on this file alone, and an update of
# beam_alloc that changed a header but none of the library's objects (a
# macro or an inline function only the NIF expands) left the copy as it
# was, and the NIF built against the old header. Touched too when the
# Erlang of the library copied changes (the copy's -erts.key): another
# Erlang's library often comes out byte for byte the same (without -g
# nothing of erl_nif.h's path or version is in its objects), and the NIF
# kept the other erl_nif.h (found in review: OTP 27's, which OTP 25
# refuses to load). Its Erlang alone, not the whole key: another CC that
# builds the same bytes (gcc beside cc) needs no NIF rebuilt, and two
# builds of the copy that differ only so would touch it at every make.
PUBLIC_HEADERS := $(filter include/%,$(HEADERS))
NIF_LIB_COPIES := $(sort $(BUILD)/libbeam_alloc.a $(NIF_LIB_COPY))
$(NIF_LIB_COPIES:.a=-erts.key): FORCE_COMMAND | erts-include-dir
	@$(call write_if_changed,ERTS_INCLUDE_DIR)
$(NIF_LIB_COPIES): %.a: $(NIF_LIB) $(PUBLIC_HEADERS) %-erts.key FORCE_COMMAND
	@cmp -s $< $@ || { cp $< $(TMP_OUT) && mv -f $(TMP_OUT) $@; }
	$(if $(filter $(PUBLIC_HEADERS) $*-erts.key,$?),@touch $@)

$(BUILD)/libbeam_alloc_standalone.a: $(STANDALONE_OBJ)
	rm -f $(TMP_OUT) && ar rcs $(TMP_OUT) $^ && mv -f $(TMP_OUT) $@
	@if nm $@ | grep -q enif_; then echo "standalone library references enif_*" >&2; exit 1; fi

# Install Erlang, Elixir and the headers when missing (Debian, as root).
deps:
	@scripts/ensure-deps

# --- C unit tests -------------------------------------------------------
# The units call into test/nifs/foreign/deep.c too (a library of another
# module, without frame pointers, that allocates through a hook), built
# as DeepStackNif's is.
C_TEST_DEEP := $(BUILD)/test-foreign/libdeep.so
C_TEST_LIBS = -L$(dir $(C_TEST_DEEP)) -ldeep -Wl,-rpath,$(abspath $(dir $(C_TEST_DEEP)))
$(C_TEST_DEEP): test/nifs/foreign/deep.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=c11 $(WARN) -fPIC -fomit-frame-pointer -shared $< -o $@

$(BUILD)/test/run_tests: $(C_TEST_SRC) $(wildcard test/c/*.h) $(BUILD)/libbeam_alloc_standalone.a $(C_TEST_DEEP)
	@mkdir -p $(@D)
	$(CC) -O1 -g -std=c11 $(WARN) $(FRAME_FLAGS) -Iinclude -Isrc -DBEAM_ALLOC_STANDALONE -DBEAM_ALLOC_DEBUG -pthread \
	    $(C_TEST_SRC) $(BUILD)/libbeam_alloc_standalone.a $(C_TEST_LIBS) -o $@

# Sanitizers: everything rebuilt with ASan+UBSan (clang when present).
$(BUILD)/test-san/run_tests: $(C_TEST_SRC) $(wildcard test/c/*.h) $(STANDALONE_SRC) $(HEADERS) $(C_TEST_DEEP)
	@mkdir -p $(@D)
	$(SAN_CC) -O1 -g -std=c11 $(WARN) -Iinclude -Isrc -DBEAM_ALLOC_STANDALONE -DBEAM_ALLOC_DEBUG -pthread \
	    -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer \
	    $(STANDALONE_SRC) $(C_TEST_SRC) $(C_TEST_LIBS) -o $@

# Threads under ThreadSanitizer: the GPA's concurrent tests.
$(BUILD)/test-tsan/run_tests: $(C_TEST_SRC) $(wildcard test/c/*.h) $(STANDALONE_SRC) $(HEADERS) $(C_TEST_DEEP)
	@mkdir -p $(@D)
	$(SAN_CC) -O1 -g -std=c11 $(WARN) -Iinclude -Isrc -DBEAM_ALLOC_STANDALONE -DBEAM_ALLOC_DEBUG -pthread \
	    -fsanitize=thread $(FRAME_FLAGS) $(STANDALONE_SRC) $(C_TEST_SRC) $(C_TEST_LIBS) -o $@

c-test-tsan: $(BUILD)/test-tsan/run_tests
	TSAN_OPTIONS=halt_on_error=1 $(BUILD)/test-tsan/run_tests gpa_

# Memcheck over the plain build (no sanitizer runtime to confuse it).
c-test-valgrind: $(BUILD)/test/run_tests
	valgrind -q --error-exitcode=3 --leak-check=full --errors-for-leak-kinds=definite \
	    $(BUILD)/test/run_tests

c-test: $(BUILD)/test/run_tests
	$(BUILD)/test/run_tests

# The C units for arm64 (aarch64 Linux), cross-built and run under
# qemu-user: not part of `make test` (minutes, and scripts/ensure-deps
# installs the tools when they are missing, with sudo when not root).
# Built with pointer authentication, as some distributions' compilers
# build by default: saved return addresses then
# carry a signature, which the frame walk must take off (qemu's "max"
# processor checks signatures; one without them runs the same code, its
# signing instructions as no-ops). qemu-user shows no weak memory ordering.
AARCH64_CC   ?= aarch64-linux-gnu-gcc
AARCH64_QEMU ?= qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu
.PHONY: cross-test
# (The tools installed are the defaults, each of the two parts alone: a
# compiler or qemu of the user's own, given as AARCH64_CC or AARCH64_QEMU,
# is not installed over, and the other's default still is. Both were
# skipped when either was given.)
CROSS_DEFAULTS = $(if $(filter file,$(origin AARCH64_CC)),cc) $(if $(filter file,$(origin AARCH64_QEMU)),qemu)
cross-test:
	@$(if $(strip $(CROSS_DEFAULTS)),scripts/ensure-deps cross $(strip $(CROSS_DEFAULTS)),:)
	$(MAKE) BUILD=$(BUILD)/aarch64 CC="$(AARCH64_CC) -mbranch-protection=standard" $(BUILD)/aarch64/test/run_tests
	$(AARCH64_QEMU) $(BUILD)/aarch64/test/run_tests

c-test-san: $(BUILD)/test-san/run_tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    $(BUILD)/test-san/run_tests

# The libraries the adapter headers (include/beam_alloc/) adapt: linked by
# their users, never by beam_alloc itself.
ADAPTER_LIBS := -lsqlite3 -lz -lzstd

# The public headers, strict: beam_alloc.h alone with no ERTS include path,
# built and linked against the standalone library; beam_alloc_nif.h with a
# NIF using every public macro (test/header/sample_nif.c) as C11 and C++17
# (HEADER_PEDANTIC_C/CXX, and -fno-exceptions) with gcc and clang; the
# adapter headers run against SQLite, zlib and zstd
# (test/header/adapters.c, C11) and the C++ one with STL and pmr containers
# (test/header/cxx.cpp, C++17 and C++20, its traits checked at compile
# time), with both compilers and with clang++ on libc++ as well; and BEAM_NIF without
# beam_alloc_nif.h must fail with a message that names it, in C and C++;
# the C++ adapter builds with -fno-exceptions and -fno-rtti, and C++14
# fails with a message that names C++17. sample_nif.c, and cxx_flags.cpp
# (BEAM_NIF_INIT with NULL callbacks), are checked strict in every
# standard (C11, C17, gnu11, C2x; C++17 and C++20 with and without
# exceptions and RTTI), with clang's -Weverything too (HEADER_EVERYTHING).
HEADER_STRICT := -Wall -Wextra -Werror -Iinclude
# The warnings strict projects make errors: test/header/sample_nif.c,
# every public macro and inline function and the adapter headers' hooks in
# a NIF, must build clean under them too (C as C11, C++ as C++17).
HEADER_PEDANTIC_C := -Wpedantic -Wcast-qual -Wshadow -Wconversion \
    -Wsign-conversion -Wbad-function-cast -Wstrict-prototypes \
    -Wmissing-prototypes -Wdouble-promotion -Wcast-align -Wundef
HEADER_PEDANTIC_CXX := -Wpedantic -Wold-style-cast \
    -Wzero-as-null-pointer-constant -Wcast-qual -Wshadow -Wconversion \
    -Wsign-conversion -Wdouble-promotion -Wcast-align -Wextra-semi \
    -Wnon-virtual-dtor -Woverloaded-virtual -Wundef
# g++'s own: a cast of the headers' to the type its operand has.
HEADER_PEDANTIC_GXX := -Wuseless-cast
# clang's -Weverything, less what no header can help: struct padding,
# compatibility with C before the standard compiled for (C89; clang 18's
# -Wpre-c11-compat, C11's own _Thread_local and _Alignof, and
# -Wpre-c23-compat, C23's bool keyword in a c2x build: Debian 13's clang
# 19 failed on them) and with C++98, clang 16's -Wunsafe-buffer-usage
# (any pointer arithmetic), and -Wweak-vtables (a header-only class has no
# out-of-line virtual function to anchor its vtable). C before C2x has no
# [[maybe_unused]]: BEAM_NIF's parameters take GNU's unused, every use of
# which -Wused-but-marked-unused reports (HEADER_EVERYTHING_OLD_C).
HEADER_EVERYTHING := -Weverything -Wno-unknown-warning-option -Wno-padded \
    -Wno-declaration-after-statement -Wno-pre-c11-compat -Wno-pre-c23-compat \
    -Wno-c++98-compat \
    -Wno-c++98-compat-pedantic -Wno-unsafe-buffer-usage -Wno-weak-vtables
HEADER_EVERYTHING_OLD_C := -Wno-used-but-marked-unused
# A 32-bit target (-m32 here; a Nerves board's armv6/armv7 compiler alike)
# is refused before anything is compiled, with the public header's one
# message as the build's first error: the GPA packs counts into pointers'
# top 16 bits and maps a 48-bit address space, and a 32-bit build of its
# sources failed with some fifty errors (armhf: one about glibc's atof and
# -mgeneral-regs-only), none saying why. Both libraries, both compilers;
# without 32-bit headers (gcc-multilib) the first error is still ours.
.PHONY: target-check-test
target-check-test:
	@mkdir -p $(BUILD)/m32
	@for cc in gcc $(SAN_CC); do for lib in standalone-lib nif-lib; do \
	    rm -rf $(BUILD)/m32/build; \
	    if $(MAKE) --no-print-directory BUILD=$(BUILD)/m32/build CC=$$cc CFLAGS=-m32 $$lib >$(BUILD)/m32/out 2>&1; then \
	        echo "target-check-test: $$cc -m32 built $$lib" >&2; exit 1; fi; \
	    if ! grep -m1 'error' $(BUILD)/m32/out | grep -q 'beam_alloc needs a 64-bit target'; then \
	        echo "target-check-test: $$cc -m32 $$lib: the first error is not the 64-bit one:" >&2; cat $(BUILD)/m32/out >&2; exit 1; fi; \
	    if [ -n "$$(find $(BUILD)/m32/build -name '*.o' 2>/dev/null)" ]; then \
	        echo "target-check-test: $$cc -m32 $$lib compiled objects:" >&2; cat $(BUILD)/m32/out >&2; exit 1; fi; \
	done; done
	@# A NIF built by other means (its own Makefile, the library prebuilt):
	@# the header says it too, first, in C and C++. x32 too: its pointers
	@# are 32-bit, but it defines __x86_64__.
	@for m in -m32 -mx32; do \
	for c in "gcc -std=c11" "$(SAN_CC) -std=c11" "g++ -std=c++17 -x c++" "$(SAN_CC)++ -std=c++17 -x c++"; do \
	    if $$c $$m $(HEADER_STRICT) -I$(ERTS_INCLUDE_DIR) -fsyntax-only test/header/sample_nif.c >$(BUILD)/m32/out 2>&1; then \
	        echo "target-check-test: $$c $$m compiled sample_nif.c" >&2; exit 1; fi; \
	    grep -m1 'error' $(BUILD)/m32/out | grep -q 'beam_alloc needs a 64-bit target' || \
	        { echo "target-check-test: $$c $$m sample_nif.c: the first error is not the 64-bit one:" >&2; cat $(BUILD)/m32/out >&2; exit 1; }; \
	done; done
	@# A user's dependency flags are for the objects: the check writes no
	@# dependency file (with -MD it wrote /dev/null.d, a permission error
	@# but for root).
	@rm -f $(BUILD)/m32/*.d
	@for cc in gcc $(SAN_CC); do \
	    $(MAKE) --no-print-directory -s CC=$$cc 'CFLAGS=-O2 -MMD -MP -MT x.o -MF $(BUILD)/m32/mf.d -Wp,-MD,$(BUILD)/m32/wp.d' target-check || exit 1; \
	    if ls $(BUILD)/m32/*.d 2>/dev/null; then \
	        echo "target-check-test: $$cc: target-check wrote dependency files" >&2; exit 1; fi; \
	done

header-test: $(BUILD)/libbeam_alloc_standalone.a target-check-test
	@mkdir -p $(BUILD)/header
	gcc -std=c11 -pedantic $(HEADER_STRICT) test/header/plain.c $(BUILD)/libbeam_alloc_standalone.a -pthread -o $(BUILD)/header/plain
	$(BUILD)/header/plain
	g++ -std=c++17 -pedantic $(HEADER_STRICT) -x c++ -c test/header/plain.c -o $(BUILD)/header/plain-cpp.o
	for cc in gcc $(SAN_CC); do \
	    $$cc -std=c11 $(HEADER_STRICT) $(HEADER_PEDANTIC_C) -I$(ERTS_INCLUDE_DIR) -c test/header/sample_nif.c -o $(BUILD)/header/nif-$$cc.o || exit 1; \
	done
	@# Every standard, the ERTS headers as the system's (their warnings are
	@# not ours); syntax only, for speed.
	for std in c11 c17 gnu11 c2x; do \
	    old=$(HEADER_EVERYTHING_OLD_C); [ $$std != c2x ] || old=; \
	    gcc -std=$$std $(HEADER_STRICT) $(HEADER_PEDANTIC_C) -isystem $(ERTS_INCLUDE_DIR) -fsyntax-only test/header/sample_nif.c && \
	    $(SAN_CC) -std=$$std $(HEADER_STRICT) $(HEADER_PEDANTIC_C) $(HEADER_EVERYTHING) $$old -isystem $(ERTS_INCLUDE_DIR) -fsyntax-only test/header/sample_nif.c || \
	        { echo "header-test: the strict $$std build above failed" >&2; exit 1; }; \
	done
	for t in "-std=c++17 -x c++ test/header/sample_nif.c" "-std=c++20 -x c++ test/header/sample_nif.c" "-std=c++17 test/header/cxx_flags.cpp"; do \
	    for f in -fexceptions -fno-exceptions -fno-rtti; do \
	        g++ $$f $(HEADER_STRICT) $(HEADER_PEDANTIC_CXX) $(HEADER_PEDANTIC_GXX) -isystem $(ERTS_INCLUDE_DIR) -fsyntax-only $$t && \
	        $(SAN_CC)++ $$f $(HEADER_STRICT) $(HEADER_PEDANTIC_CXX) $(HEADER_EVERYTHING) -isystem $(ERTS_INCLUDE_DIR) -fsyntax-only $$t || \
	            { echo "header-test: the strict build above ($$t $$f) failed" >&2; exit 1; }; \
	    done; \
	done
	for cxx in g++ $(SAN_CC)++; do \
	    $$cxx -std=c++17 $(HEADER_STRICT) $(HEADER_PEDANTIC_CXX) -I$(ERTS_INCLUDE_DIR) -x c++ -c test/header/sample_nif.c -o $(BUILD)/header/nif-$$cxx.o || exit 1; \
	    $$cxx -std=c++17 -fno-exceptions $(HEADER_STRICT) -I$(ERTS_INCLUDE_DIR) -x c++ -c test/header/sample_nif.c -o $(BUILD)/header/nif-noexc-$$cxx.o || exit 1; \
	    for f in -fno-exceptions -fno-rtti; do \
	        $$cxx -std=c++17 $$f -Wpedantic $(HEADER_STRICT) -I$(ERTS_INCLUDE_DIR) -c test/header/cxx_flags.cpp -o $(BUILD)/header/cxx$$f-$$cxx.o || exit 1; \
	    done; \
	    if $$cxx -std=c++14 $(HEADER_STRICT) -I$(ERTS_INCLUDE_DIR) -c test/header/cxx_flags.cpp -o $(BUILD)/header/cxx14.o 2>$(BUILD)/header/cxx14.err; then \
	        echo "beam_alloc.hpp compiled as C++14" >&2; exit 1; fi; \
	    grep -q 'needs C++17' $(BUILD)/header/cxx14.err || { cat $(BUILD)/header/cxx14.err; exit 1; }; \
	done
	for cc in gcc $(SAN_CC); do \
	    $$cc -std=c11 -pedantic $(HEADER_STRICT) test/header/adapters.c $(BUILD)/libbeam_alloc_standalone.a \
	        $(ADAPTER_LIBS) -pthread -ldl -o $(BUILD)/header/adapters-$$cc && $(BUILD)/header/adapters-$$cc || exit 1; \
	done
	for cxx in g++ $(SAN_CC)++; do for std in c++17 c++20; do \
	    $$cxx -std=$$std -pedantic $(HEADER_STRICT) test/header/cxx.cpp $(BUILD)/libbeam_alloc_standalone.a \
	        -pthread -ldl -o $(BUILD)/header/cxx-$$cxx && $(BUILD)/header/cxx-$$cxx || exit 1; \
	done; done
	@# libc++ (Debian's libc++-14-dev, which has no <memory_resource>).
	$(SAN_CC)++ -stdlib=libc++ -std=c++17 -pedantic $(HEADER_STRICT) test/header/cxx.cpp \
	    $(BUILD)/libbeam_alloc_standalone.a -pthread -ldl -o $(BUILD)/header/cxx-libc++
	$(BUILD)/header/cxx-libc++
	@# -fno-exceptions: a failure aborts, saying what the exception would have.
	for cxx in g++ $(SAN_CC)++; do \
	    $$cxx -std=c++17 -fno-exceptions -pedantic $(HEADER_STRICT) test/header/cxx_noexc.cpp \
	        $(BUILD)/libbeam_alloc_standalone.a -pthread -ldl -o $(BUILD)/header/noexc-$$cxx || exit 1; \
	    for m in oom:'a C++ allocation failed (std::bad_alloc); built without C++ exceptions: aborting' \
	             align:'alignment 32 is above what the raw allocator serves (8): give the NIF .allocator = a large or general purpose allocator (one over the large allocator: a general purpose allocator'\''s large blocks come from its backing); built without C++ exceptions: aborting'; do \
	        rc=0; $(BUILD)/header/noexc-$$cxx $${m%%:*} 2>$(BUILD)/header/noexc.err || rc=$$?; \
	        [ $$rc -eq 134 ] && grep -qF "beam_alloc: $${m#*:}" $(BUILD)/header/noexc.err || \
	            { echo "noexc-$$cxx $${m%%:*}: exit $$rc" >&2; cat $(BUILD)/header/noexc.err >&2; exit 1; }; \
	    done; \
	done
	for cc in gcc $(SAN_CC); do \
	    if $$cc -std=c11 $(HEADER_STRICT) -I$(ERTS_INCLUDE_DIR) -c test/header/missing_nif_header.c -o $(BUILD)/header/missing.o 2>$(BUILD)/header/missing.err; then \
	        echo "BEAM_NIF compiled without beam_alloc_nif.h" >&2; exit 1; fi; \
	    grep -q 'beam_alloc_nif.h' $(BUILD)/header/missing.err || { cat $(BUILD)/header/missing.err; exit 1; }; \
	done
	for cxx in g++ $(SAN_CC)++; do \
	    if $$cxx -std=c++17 $(HEADER_STRICT) -I$(ERTS_INCLUDE_DIR) -x c++ -c test/header/missing_nif_header.c -o $(BUILD)/header/missing.o 2>$(BUILD)/header/missing.err; then \
	        echo "BEAM_NIF compiled without beam_alloc_nif.h (C++)" >&2; exit 1; fi; \
	    grep -q 'static assertion failed: BEAM_NIF needs #include <beam_alloc_nif.h>\|static_assert failed.*BEAM_NIF needs #include <beam_alloc_nif.h>' $(BUILD)/header/missing.err || { cat $(BUILD)/header/missing.err; exit 1; }; \
	done
	@# The glue's functions too: C would declare them implicitly and link.
	for c in "gcc -std=c11" "$(SAN_CC) -std=c11" "g++ -std=c++17 -x c++" "$(SAN_CC)++ -std=c++17 -x c++"; do \
	    if $$c $(HEADER_STRICT) -Wno-error -I$(ERTS_INCLUDE_DIR) -c test/header/missing_nif_header_glue.c -o $(BUILD)/header/missing.o 2>$(BUILD)/header/missing.err; then \
	        echo "the NIF glue's functions compiled without beam_alloc_nif.h ($$c)" >&2; exit 1; fi; \
	    for n in beam_resource_new beam_make_error; do \
	        grep -q "static assertion failed: \"*$$n needs #include <beam_alloc_nif.h>\|static_assert failed \"$$n needs #include <beam_alloc_nif.h>" $(BUILD)/header/missing.err || { echo "$$c: $$n" >&2; cat $(BUILD)/header/missing.err; exit 1; }; \
	    done; \
	done
	@# BEAM_NIF_INIT with neither five arguments nor six says which it takes.
	for c in "gcc -std=c11" "$(SAN_CC) -std=c11" "g++ -std=c++17 -x c++" "$(SAN_CC)++ -std=c++17 -x c++"; do \
	    for n in 3 7; do \
	        if $$c $(HEADER_STRICT) -Wno-error -DBEAM_TEST_ARGS=$$n -I$(ERTS_INCLUDE_DIR) -c test/header/nif_init_count.c -o $(BUILD)/header/missing.o 2>$(BUILD)/header/missing.err; then \
	            echo "BEAM_NIF_INIT compiled with $$n arguments ($$c)" >&2; exit 1; fi; \
	        grep -q "BEAM_NIF_INIT takes (NAME, FUNCS, LOAD, UPGRADE, UNLOAD)" $(BUILD)/header/missing.err || { echo "$$c: $$n arguments" >&2; cat $(BUILD)/header/missing.err; exit 1; }; \
	    done; \
	done

# (beam_alloc-nif.key: the key of the NIFs that rebar3's hook builds into
# priv/, APP_NIF_KEY with MIX_APP_PATH=.)
clean:
	rm -rf $(BUILD) _build priv beam_alloc-nif.key

format:
	clang-format -i include/*.h include/*.hpp include/beam_alloc/*.h src/*.c src/*.h src/*/*.c src/*/*.h c_src/*.c c_src/*.h test/c/*.c test/c/*.h test/nifs/*.c test/nifs/*/*.c test/nifs/*.cpp bench/sqlite/*.c bench/sqlite/*.h bench/nif_call/*.c
	mix format

# --- NIFs, ExUnit and the demo -----------------------------------------
# `make nifs` is what mix's :beam_alloc_make compiler runs (see
# lib/mix/tasks/compile.beam_alloc_make.ex), with MIX_APP_PATH and MIX_ENV
# set: the library always, the test NIFs (test/nifs/*.c, one shared object
# per Elixir module) into $(MIX_APP_PATH)/priv only for MIX_ENV=test.
MIX_ENV      ?= dev
# (Relative: make splits targets at spaces, and $(CURDIR) may have some.
# Mix's compiler hands a path with spaces over as a link under build/.)
MIX_APP_PATH ?= _build/$(MIX_ENV)/lib/beam_alloc

# No identical code folding (as beam_alloc.mk gives users): GCC would merge
# the test NIFs whose bodies are alike, and their reports would name one
# another's lines.
# No merging of identical code (a report would name the other copy's line):
# GCC's flags, or clang's (each compiler refuses the other's).
NO_FOLD_GCC := -fno-ipa-icf -fno-crossjumping -fno-tree-tail-merge
NO_FOLD_CLANG := -mllvm -enable-tail-merge=false -mllvm -simplifycfg-sink-common=false
# (Asked when first used, then remembered, as TLS_DIALECT: NO_ICF_CXX was
# asked again at each C++ NIF.)
NO_ICF = $(eval NO_ICF := $(call cc_flag,$(CC),c,$(NO_FOLD_GCC)) $(call cc_flag,$(CC),c,$(NO_FOLD_CLANG)))$(NO_ICF)
NO_ICF_CXX = $(eval NO_ICF_CXX := $(call cc_flag,$(CXX),c++,$(NO_FOLD_GCC)) $(call cc_flag,$(CXX),c++,$(NO_FOLD_CLANG)))$(NO_ICF_CXX)
# And no sibling calls (as beam_alloc.mk gives users): a function whose
# last act is an allocator call would leave the reports' frames.
NIF_FRAME_FLAGS := $(FRAME_FLAGS) -fno-optimize-sibling-calls
# (Expanded where used: ERTS_INCLUDE_DIR asks erl, a second, which goals
# without NIF code do not pay: NIF_FREE_GOALS.)
NIF_FLAGS = -std=c11 $(WARN) -fPIC -fvisibility=hidden -Iinclude -I$(ERTS_INCLUDE_DIR) -pthread $(NIF_FRAME_FLAGS) $(NO_ICF)
# Each NIF gets its own copy of the library; --exclude-libs keeps that copy
# private to it (nothing of beam_alloc is exported from the .so).
ifeq ($(shell uname -s),Darwin)
NIF_LDFLAGS := -shared -undefined dynamic_lookup -pthread
else
NIF_LDFLAGS := -shared -Wl,--exclude-libs,ALL -pthread
endif

# (test/nifs/foreign/: libraries the NIFs call, not NIFs: see below.)
TEST_NIF_SRC := $(filter-out test/nifs/foreign/%,$(wildcard test/nifs/*.c test/nifs/*/*.c))
TEST_NIF_CXX := $(wildcard test/nifs/*.cpp test/nifs/*/*.cpp)
TEST_NIF_SO  := $(TEST_NIF_SRC:test/nifs/%.c=$(MIX_APP_PATH)/priv/%.so) \
                $(TEST_NIF_CXX:test/nifs/%.cpp=$(MIX_APP_PATH)/priv/%.so)
CXX          ?= g++
NIF_CXXFLAGS = -std=c++17 $(WARN) -fPIC -fvisibility=hidden -Iinclude -I$(ERTS_INCLUDE_DIR) -pthread $(NIF_FRAME_FLAGS) $(NO_ICF_CXX)
# The test NIFs of the adapter headers link what they adapt.
$(MIX_APP_PATH)/priv/adapters_nif.so: NIF_LIBS := -lz -lzstd
$(MIX_APP_PATH)/priv/sqlite_nif.so: NIF_LIBS := -lsqlite3
# SqliteNif fills bench-sqlite's orders database (one workload for both).
$(MIX_APP_PATH)/priv/sqlite_nif.so: bench/sqlite/orders.h
# A C library of the kind the adapters serve (SQLite, zlib): a shared
# object of its own, without frame pointers, that DeepStackNif links.
FOREIGN_SO := $(MIX_APP_PATH)/priv/foreign/libdeep.so
$(FOREIGN_SO): test/nifs/foreign/deep.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=c11 $(WARN) -fPIC -fomit-frame-pointer -shared $< -o $@
$(MIX_APP_PATH)/priv/deep_stack_nif.so: $(FOREIGN_SO)
$(MIX_APP_PATH)/priv/deep_stack_nif.so: NIF_LIBS := -L$(dir $(FOREIGN_SO)) -ldeep -Wl,-rpath,'$$ORIGIN/foreign'
# A library of each allocator-hook shape <beam_alloc/hooks.h> serves.
HOOKLIB_SO := $(MIX_APP_PATH)/priv/foreign/libhooklib.so
$(HOOKLIB_SO): test/nifs/foreign/hooklib.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -std=c11 $(WARN) -fPIC -fomit-frame-pointer -shared $< -o $@
$(MIX_APP_PATH)/priv/hooks_nif.so: $(HOOKLIB_SO)
$(MIX_APP_PATH)/priv/hooks_nif.so: NIF_LIBS := -L$(dir $(HOOKLIB_SO)) -lhooklib -Wl,-rpath,'$$ORIGIN/foreign'

.PHONY: nifs

# The fault-injection driver of BeamAlloc.Testing (c_src/), in every
# environment: it is part of the library's Elixir API. crash_note.c is its
# fatal-signal handler, linked into the same shared object.
TESTING_SO := $(MIX_APP_PATH)/priv/beam_alloc_testing.so
TESTING_SRC := c_src/beam_alloc_testing.c c_src/crash_note.c

# Source lines for reports (c_src/beam_alloc_symbolize.c), read by
# BeamAlloc.Reporter: the only object linked with libdw; without libdw's
# headers it builds without it and sites stay as object+offset.
SYMBOLIZE_SO := $(MIX_APP_PATH)/priv/beam_alloc_symbolize.so
# (Asked of the compiler in force, with its flags: the host's
# /usr/include said yes to a cross compiler, and a board's build of
# beam_alloc failed with "cannot find -ldw". The header and the library:
# Debian's cross compilers, and clang for another --target, search the
# host's /usr/include too, but find no libdw of their target, and
# -print-file-name gives the bare name back for a library it cannot find.)
# Asked when first used, in the recipes that link the symbolizer, then
# remembered: read with the Makefile, its two compiler runs (~45 ms) were
# paid by every make, `make format` and `make clean` too.
LIBDW_FLAGS = $(eval LIBDW_FLAGS := $(shell printf '\043include <elfutils/libdwfl.h>\n' | $(CC) $(TARGET_CHECK_CFLAGS) -E -x c - -o /dev/null >/dev/null 2>&1 && \
    case "$$($(CC) $(TARGET_CHECK_CFLAGS) -print-file-name=libdw.so 2>/dev/null)" in (/*) echo -DBEAM_HAVE_LIBDW -ldw;; esac))$(LIBDW_FLAGS)

nifs: $(BUILD)/libbeam_alloc.a $(TESTING_SO) $(SYMBOLIZE_SO) $(if $(filter test,$(MIX_ENV)),$(TEST_NIF_SO))
	@:

# Built again when libdw comes or goes: the stamp holds the flags of the
# last link, rewritten only when they differ (in a recipe, so that only a
# goal that links the symbolizer asks the compiler; its name said yes or
# no before, which asked at every make). One per NIF folder, whose key
# has CC and the target flags: one for the whole build folder was
# rewritten at each switch between the host and a board without libdw,
# and each switch relinked the other's symbolizer, warning again.
LIBDW_STAMP  := $(NIF_DIR)/symbolizer-libdw

$(LIBDW_STAMP): FORCE_COMMAND
	@$(call write_if_changed,LIBDW_FLAGS)

# The key of the NIF library these NIFs were last linked with in this
# application folder, rewritten only when it differs: by times alone, a
# switch back to a key built before (OTP 27, then 25 again, or CC) found
# the older library and command file and kept NIFs linked for the other
# erl_nif.h (found in an audit of rebuilds).
# Every NIF linked in the application folder depends on it, named here
# once rather than in each rule: the driver, the symbolizer and the test
# NIFs (TEST_NIF_SO, lines/ among them; by times alone, a suite run after
# one with another CC or OTP loaded the other's).
APP_NIF_KEY := $(MIX_APP_PATH)/beam_alloc-nif.key
$(APP_NIF_KEY): FORCE_COMMAND | erts-include-dir
	@$(call write_if_changed,NIF_DIR_KEY)
$(TESTING_SO) $(SYMBOLIZE_SO) $(TEST_NIF_SO): $(APP_NIF_KEY)

$(SYMBOLIZE_SO): c_src/beam_alloc_symbolize.c c_src/nif_text.h src/nif/report_tokens.h $(LIBDW_STAMP) $(NIF_DIR)/command | erts-include-dir
	@mkdir -p $(@D)
	@if [ -z "$(LIBDW_FLAGS)" ] && [ "$$(uname -s)" = Linux ]; then \
	    echo "warning: libdw-dev is missing ($(CC) finds no elfutils/libdwfl.h or libdw.so): building the symbolizer without it;" \
	         "reports will name sites as lib.so+0x.. instead of file.c:line (scripts/ensure-deps installs it)" >&2; fi
	$(CC) $(OWN_CFLAGS) $(NIF_FLAGS) $< $(NIF_LDFLAGS) $(LIBDW_FLAGS) -o $@

$(TESTING_SO): $(TESTING_SRC) c_src/crash_note.h c_src/nif_text.h $(HEADERS) $(NIF_LIB) | erts-include-dir
	@mkdir -p $(@D)
	$(CC) $(OWN_CFLAGS) $(NIF_FLAGS) $(TESTING_SRC) $(NIF_LIB) $(NIF_LDFLAGS) -ldl -o $@

# rebar3 (the pre_hook of rebar.config): the library, and the driver and
# the symbolizer into priv/ of the source directory, which rebar3 links
# into _build.
.PHONY: rebar3-nifs rebar3-clean
rebar3-nifs: $(BUILD)/libbeam_alloc.a
	@$(MAKE) --no-print-directory erlang-app-nifs MIX_APP_PATH=.

# rebar3's post-compile hook: the appup (scripts/appup) beside the .app
# rebar3 wrote, in _build/PROFILE/lib/beam_alloc (this project's own, or a
# dependency's, compiled in place) or, for a copy in _checkouts/, in
# _build/PROFILE/checkouts/beam_alloc (_build/PROFILE/lib before rebar3
# 3.14, which has no REBAR_CHECKOUTS_OUT_DIR). Which one: whether this
# folder is one of _checkouts/'s, compared physically (pwd -P), in the
# shell: _checkouts/beam_alloc is often a symbolic link, and the hook runs
# where it points (make's CURDIR), never under _checkouts/, so that a
# test of CURDIR against REBAR_CHECKOUTS_DIR looked for the .app in
# _build/PROFILE/lib and the build failed (escript's enoent); and make's
# functions split the paths at a space.
.PHONY: rebar3-appup
rebar3-appup:
	@out="$$REBAR_DEPS_DIR"; here="$$(pwd -P)"; \
	for d in "$$REBAR_CHECKOUTS_DIR"/*/; do \
	  if [ "$$(cd "$$d" 2>/dev/null && pwd -P)" = "$$here" ]; then \
	    out="$${REBAR_CHECKOUTS_OUT_DIR:-$$REBAR_DEPS_DIR}"; fi; \
	done; \
	escript scripts/appup "$$out/beam_alloc/ebin/beam_alloc.app"

rebar3-clean:
	rm -rf $(BUILD) priv beam_alloc-nif.key

# make (beam_alloc.mk's BEAM_ALLOC_APP): beam_alloc's Erlang side as an OTP
# application directory, ERLANG_APP_DIR (its name must stay beam_alloc:
# code:priv_dir/1 finds the NIFs by it): ebin/ with the modules and
# beam_alloc.app, priv/ with the driver and the symbolizer.
.PHONY: erlang-app
ERLANG_APP_DIR ?= $(BUILD)/erlang/beam_alloc
ERLANG_APP_BEAMS := $(patsubst erlang/%.erl,$(ERLANG_APP_DIR)/ebin/%.beam,$(wildcard erlang/*.erl))
erlang-app: $(BUILD)/libbeam_alloc.a $(ERLANG_APP_BEAMS) $(ERLANG_APP_DIR)/ebin/beam_alloc.app \
            $(ERLANG_APP_DIR)/ebin/beam_alloc.appup
	@$(MAKE) --no-print-directory erlang-app-nifs MIX_APP_PATH=$(ERLANG_APP_DIR)

# (A goal of its own, quiet when they are up to date.)
.PHONY: erlang-app-nifs
erlang-app-nifs: $(TESTING_SO) $(SYMBOLIZE_SO)
	@:

# Compiled again for another Erlang (its ERTS_INCLUDE_DIR names the
# install and version): by times alone, a switch back from OTP 27 to 25
# kept OTP 27's modules, which 25 refuses (features_not_allowed), and a
# make user's on_load failed with undef (found in an audit of rebuilds).
ERLANG_APP_ERTS := $(ERLANG_APP_DIR)/beam_alloc-erts.key
$(ERLANG_APP_ERTS): FORCE_COMMAND | erts-include-dir
	@$(call write_if_changed,ERTS_INCLUDE_DIR)

$(ERLANG_APP_DIR)/ebin/%.beam: erlang/%.erl $(ERLANG_APP_ERTS)
	@mkdir -p $(@D)
	erlc +debug_info -o $(@D) $<

# (With its modules: releases need the list.)
$(ERLANG_APP_DIR)/ebin/beam_alloc.app: erlang/beam_alloc.app.src $(wildcard erlang/*.erl)
	@mkdir -p $(@D)
	@echo "writing $@"
	@escript scripts/app-file $@ $< $(filter %.erl,$^)

# (Release upgrades to this version: see scripts/appup.)
$(ERLANG_APP_DIR)/ebin/beam_alloc.appup: $(ERLANG_APP_DIR)/ebin/beam_alloc.app $(ERLANG_APP_BEAMS) scripts/appup
	@echo "writing $@"
	@escript scripts/appup $<

# The lines/ libraries: test/nifs/lines/lines.h under the build flags a
# user may have, for the symbolizer (test/lines_test.exs). Split DWARF is
# compiled apart, so that each compiler puts the .dwo beside the object.
LINES_SO := $(MIX_APP_PATH)/priv/lines
$(filter $(LINES_SO)/%,$(TEST_NIF_SO)): $(wildcard test/nifs/lines/*.h)
$(LINES_SO)/lto_nif.so: CFLAGS += -flto
$(LINES_SO)/lto_nif.so: NIF_LIBS := -flto
$(LINES_SO)/no_debug_nif.so $(LINES_SO)/no_debug_cxx_nif.so: CFLAGS += -g0
$(LINES_SO)/omit_fp_nif.so: NIF_FRAME_FLAGS := -fomit-frame-pointer -fno-optimize-sibling-calls
$(LINES_SO)/no_build_id_nif.so $(LINES_SO)/no_build_id_shifted_nif.so $(LINES_SO)/no_build_id_kept_nif.so: NIF_LIBS := -Wl,--build-id=none
$(LINES_SO)/split_dwarf_nif.so: test/nifs/lines/split_dwarf_nif.c test/nifs/lines/lines.h $(HEADERS) $(NIF_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -gsplit-dwarf $(NIF_FLAGS) -c $< -o $@.o
	$(CC) $(LINK_CFLAGS) $@.o $(NIF_LIB) $(NIF_LDFLAGS) -o $@

$(MIX_APP_PATH)/priv/%.so: test/nifs/%.c $(wildcard test/nifs/*.h) $(HEADERS) $(NIF_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(NIF_FLAGS) $< $(NIF_LIB) $(NIF_LDFLAGS) $(NIF_LIBS) -o $@

$(MIX_APP_PATH)/priv/%.so: test/nifs/%.cpp $(wildcard test/nifs/*.h) $(HEADERS) $(NIF_LIB)
	@mkdir -p $(@D)
	$(CXX) $(CFLAGS) $(NIF_CXXFLAGS) $< $(NIF_LIB) $(NIF_LDFLAGS) $(NIF_LIBS) -o $@

# The library is built here first so that the make that mix runs finds it
# up to date (and two makes never write the same objects).
# MIX_TEST_FILES="test/a_test.exs ...": those files only, not the whole
# ExUnit suite (scripts/fresh-machine-check does).
MIX_TEST_FILES ?=
mix-test: lib
	MIX_ENV=test mix test $(MIX_TEST_FILES)

# The stress test's long variant: SOAK_SECONDS (default 300) of 64
# processes mixing operations over every allocator.
soak: deps lib
	MIX_ENV=test mix test --only soak test/stress_test.exs

# Where no locale is set (a fresh container), the VM takes file names as
# latin1, and the suite's project under a path with an e-acute failed
# there (Debian 13 in a chroot): a UTF-8 locale for every command make
# runs then. A locale the environment sets is left as it is.
ifeq ($(origin LANG)$(origin LC_ALL)$(origin LC_CTYPE),undefinedundefinedundefined)
export LANG := C.UTF-8
endif

# `test` and `demo` install what is missing first, then run in a new make:
# this one read the Makefile before Erlang was there, and its flags
# (ERTS_INCLUDE_DIR above all) were fixed then.
#
# Then the programs the suites run are built, TEST_JOBS compiles at a time
# (default: one per processor), and only then the suites, one after another.
# Built by each suite in turn, every compile (the two libraries, the plain,
# sanitizer and ThreadSanitizer unit tests, the fuzz harnesses) ran alone:
# a 2-processor CI machine's second processor stood idle for them. The runs
# stay serial: valgrind, TSan and the VM's schedulers take every processor.
test: deps
	@$(if $(strip $(TEST_BUILDS)),$(MAKE) --no-print-directory -j$(TEST_JOBS) -Otarget $(TEST_BUILDS))
	@$(MAKE) --no-print-directory test-all

# Every suite; TESTS= runs some (scripts/fresh-machine-check does).
TESTS ?= lib tls-check c-test c-test-san c-test-tsan c-test-valgrind fuzz-smoke header-test \
         mix-test examples-test fresh-machine-check
TEST_JOBS ?= $(shell getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
# What those of TESTS build, each the prerequisite its target names.
TEST_BUILDS = $(if $(filter lib tls-check mix-test,$(TESTS)),lib) \
    $(if $(filter header-test,$(TESTS)),$(BUILD)/libbeam_alloc_standalone.a) \
    $(if $(filter c-test c-test-valgrind,$(TESTS)),$(BUILD)/test/run_tests) \
    $(if $(filter c-test-san,$(TESTS)),$(BUILD)/test-san/run_tests) \
    $(if $(filter c-test-tsan,$(TESTS)),$(BUILD)/test-tsan/run_tests) \
    $(if $(filter fuzz-smoke,$(TESTS)),fuzz-build)
test-all: $(TESTS)
	@:

# TLS descriptors stay safe only while the library keeps no value in a
# vector register (see TLS_DIALECT): a compiler or flag change that brings
# one back fails here, not in a VM on the first access of some thread.
# And the thread-locals must fit glibc's spare static TLS (512 bytes) for a
# dlopen'ed NIF to get static slots: a field too many would silently send
# every fast-path access through a descriptor call. What a NIF takes hangs
# on the order its link pulls the objects in (alignment pads them): 488
# bytes linked whole, 496 in README's NIF (the figure it gave), 482 in a
# NIF of one BEAM_NIF, on 7 December 2026 (then 496 and 504, the glue
# noting a continuation's entry; gcc 14 links README's NIF at 504 too).
# It measured the whole archive linked, 8 bytes under README's NIF, so it
# could pass at 512 with that NIF at 520: it now checks the most any link
# order can take (scripts/tls-bound: 504 then), and fails first.
.PHONY: tls-check
tls-check: $(NIF_LIB)
	@if [ -n "$(findstring gnu2,$(TLS_DIALECT))" ] && \
	    objdump -d $(NIF_LIB) | grep -q '%[xyz]mm'; then \
	  echo "tls-check: libbeam_alloc.a uses vector registers with TLS descriptors (Makefile, TLS_DIALECT)" >&2; exit 1; \
	fi
	@size=$$(readelf -SW $< | awk -f scripts/tls-bound) || exit 1; \
	  if [ "$${size:-513}" -gt 512 ]; then \
	    echo "tls-check: the NIF build's thread-locals can take $${size:-an unknown number of} bytes in a NIF, over glibc's 512-byte spare static TLS: the fast paths would lose their static slots (README, Performance)" >&2; exit 1; \
	  fi; \
	  echo "tls-check: ok ($(if $(TLS_DIALECT),$(TLS_DIALECT),traditional TLS dialect); thread-locals at most $$size in a NIF, of glibc's 512 spare bytes)"

# The examples, each built and tested as a user would from a clean copy
# (scripts/test-examples), and the README's commands on a simulated machine
# without Erlang or Elixir (scripts/fresh-machine-check).
.PHONY: examples-test fresh-machine-check
examples-test:
	scripts/test-examples
fresh-machine-check:
	scripts/fresh-machine-check

# The demo has its own NIF (demo/demo_nif.c) and runs as a plain script.
DEMO_SO := $(BUILD)/demo/beam_alloc_demo.so

$(DEMO_SO): demo/demo_nif.c $(HEADERS) $(NIF_LIB)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(NIF_FLAGS) $< $(NIF_LIB) $(NIF_LDFLAGS) -o $@

demo: deps
	@$(MAKE) --no-print-directory demo-run

demo-run: lib $(DEMO_SO)
	BEAM_ALLOC_DEMO_NIF=$(CURDIR)/$(basename $(DEMO_SO)) elixir demo/demo.exs

# --- Benchmarks ---------------------------------------------------------
# Installs the peers (mimalloc, jemalloc, tcmalloc, gnuplot) when missing,
# builds, runs everything once, writes bench/results/. See bench/run.sh.
bench:
	@CC="$(CC)" MAKE="$(MAKE)" NIF_LDFLAGS="$(NIF_LDFLAGS)" bench/run.sh

# SQLite's allocator in a BEAM: malloc, enif_alloc with a size header,
# beam_alloc's general purpose allocator (beam_sqlite3_use) and mimalloc,
# on 1 and 2 dirty schedulers (bench/sqlite/). BENCH_ROUNDS (default 7) and
# BENCH_ROWS (default 20000) set its length; the table goes to
# bench/results/sqlite.md.
.PHONY: bench-sqlite bench-sqlite-run
SQLITE_BENCH_SO := $(BUILD)/bench/sqlite_bench_nif.so

$(SQLITE_BENCH_SO): bench/sqlite/sqlite_bench_nif.c bench/sqlite/orders.h $(HEADERS) $(NIF_LIB)
	@mkdir -p $(@D)
	$(CC) -O2 -g $(NIF_FLAGS) $< $(NIF_LIB) $(NIF_LDFLAGS) -lsqlite3 -lmimalloc -o $@

bench-sqlite: deps
	@$(MAKE) --no-print-directory bench-sqlite-run

bench-sqlite-run: lib $(SQLITE_BENCH_SO)
	@mkdir -p bench/results
	BENCH_SQLITE_NIF=$(CURDIR)/$(basename $(SQLITE_BENCH_SO)) BENCH_OUT=bench/results/sqlite.md \
	    elixir --erl "+SDcpu 2:2" bench/sqlite/bench_sqlite.exs

# What BEAM_NIF's glue costs a tiny NIF per call, against the same body as
# a plain erl_nif function, with and without one small allocation; normal
# and dirty CPU schedulers, paired per round (bench/nif_call/; some 10 s).
# BENCH_ROUNDS (7), BENCH_CALLS (1000000).
.PHONY: bench-nif-call
NIF_CALL_BENCH_SO := $(BUILD)/bench/nif_call_bench_nif.so

$(NIF_CALL_BENCH_SO): bench/nif_call/nif_call_bench_nif.c $(HEADERS) $(NIF_LIB)
	@mkdir -p $(@D)
	$(CC) -O2 -g $(NIF_FLAGS) $< $(NIF_LIB) $(NIF_LDFLAGS) -o $@

bench-nif-call: lib $(NIF_CALL_BENCH_SO)
	BENCH_NIF_CALL_NIF=$(CURDIR)/$(basename $(NIF_CALL_BENCH_SO)) elixir bench/nif_call/bench_nif_call.exs

# SQLite on a general purpose allocator against glibc malloc, standalone:
# paired CPU-time ratios, MEMSTATUS on and off (bench/sqlite/sqlite_paired.c).
# BENCH_ROUNDS (9), BENCH_ROWS (100000), BENCH_PROCS (3).
.PHONY: bench-sqlite-c
bench-sqlite-c: $(BUILD)/libbeam_alloc_standalone.a
	@mkdir -p $(BUILD)/bench
	$(CC) -O2 -g -std=c11 $(WARN) -Iinclude -pthread \
	    bench/sqlite/sqlite_paired.c $(BUILD)/libbeam_alloc_standalone.a -lsqlite3 -o $(BUILD)/bench/sqlite_paired
	$(BUILD)/bench/sqlite_paired $(or $(BENCH_ROUNDS),9) $(or $(BENCH_ROWS),100000) $(or $(BENCH_PROCS),3)

# Scratch arenas (BEAM_NIF .scratch = true) against freeing each block: a
# standalone program, ns per allocation and the ratio.
.PHONY: bench-scratch
bench-scratch: $(BUILD)/libbeam_alloc_standalone.a
	@mkdir -p $(BUILD)/bench
	$(CC) -O2 -g -std=c11 $(WARN) -Iinclude -DBEAM_ALLOC_STANDALONE -pthread \
	    bench/scratch_bench.c $(BUILD)/libbeam_alloc_standalone.a -o $(BUILD)/bench/scratch_bench
	$(BUILD)/bench/scratch_bench

# Pauses from slot eviction and heap retirement with BENCH_PAUSE_MIB (default
# 1024) held: worst and p99.9 call times (bench/pause_bench.c).
.PHONY: bench-pause
BENCH_PAUSE_MIB ?= 1024
bench-pause: $(BUILD)/libbeam_alloc_standalone.a
	@mkdir -p $(BUILD)/bench
	$(CC) -O2 -g -std=c11 $(WARN) -Iinclude -pthread \
	    bench/pause_bench.c $(BUILD)/libbeam_alloc_standalone.a -o $(BUILD)/bench/pause_bench
	$(BUILD)/bench/pause_bench $(BENCH_PAUSE_MIB)

# --- Fuzzing --------------------------------------------------------------
# libFuzzer harnesses (clang, ASan+UBSan), one per allocator over the shared
# driver fuzz/driver.h, built from the sources directly. `make fuzz` runs
# each for FUZZ_SECONDS; `make fuzz-smoke` for FUZZ_SMOKE_SECONDS, FUZZ_JOBS
# harnesses at a time (default one per processor: half a minute on two).
# Both fail on any crash, leak or failed check; reproducers
# land in build/fuzz/ (see fuzz/run.sh). The seeds in fuzz/corpus/ come from
# fuzz/make_corpus.py.
FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 9
FUZZ_MAX_LEN       ?= 4096
FUZZ_HARNESSES     := gpa arena fixed_buffer large failing malloc
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_FLAGS := -O1 -g -std=c11 $(WARN) -Iinclude -Isrc -DBEAM_ALLOC_STANDALONE -DBEAM_ALLOC_DEBUG -pthread $(FUZZ_SAN)
FUZZ_OBJ   := $(STANDALONE_SRC:src/%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_BINS  := $(FUZZ_HARNESSES:%=$(BUILD)/fuzz/fuzz_%)

.PHONY: fuzz fuzz-smoke fuzz-build
.SECONDARY: $(FUZZ_OBJ)

$(BUILD)/fuzz/obj/%.o: src/%.c $(HEADERS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(BUILD)/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/driver.h test/c/flip_allocator.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer $< $(FUZZ_OBJ) -o $@

fuzz-build: $(FUZZ_BINS)

fuzz: $(FUZZ_BINS)
	sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_MAX_LEN) $(FUZZ_HARNESSES)

fuzz-smoke: $(FUZZ_BINS)
	sh fuzz/run.sh $(FUZZ_SMOKE_SECONDS) 4096 $(FUZZ_HARNESSES)
