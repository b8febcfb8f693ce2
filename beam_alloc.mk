# beam_alloc.mk: build a NIF against beam_alloc from any make.
#
# Include it from your Makefile (plain GNU make, a rebar3 pre_hooks make,
# elixir_make's by its path in the dependency, or the :beam_alloc Mix
# compiler's `make: true` mode, which exports BEAM_ALLOC_MK: elixir_make
# does not, and `include $(BEAM_ALLOC_MK)` under it includes nothing, the
# recipe below is empty and make builds nothing without a word):
#
#     include path/to/beam_alloc/beam_alloc.mk
#
#     priv/my_nif.so: c_src/my_nif.c $(BEAM_ALLOC_LIB)
#     	$(BEAM_ALLOC_BUILD_NIF)
#
# It defines:
#   BEAM_ALLOC_DIR          beam_alloc's directory (where this file is):
#                           absolute, but relative to this make's directory
#                           when the absolute path holds a space or a
#                           character the shell or make takes (' " $ # ...)
#   BEAM_ALLOC_INCLUDE_DIR  its include/ (beam_alloc.h, beam_alloc_nif.h)
#   BEAM_ALLOC_LIB          $(BEAM_ALLOC_DIR)/build/mk-<checksum of this
#                           make's folder>/libbeam_alloc.a, with a rule
#                           that builds it with beam_alloc's Makefile
#                           (a copy of the library of the CC, target
#                           flags and ERTS_INCLUDE_DIR that make sees,
#                           each kept in a folder of its own: a switch
#                           between the host and a board builds neither
#                           again; your Makefile's CC is passed on,
#                           CFLAGS from the environment (export it for a
#                           board's -m..., --sysroot): a CC set in the
#                           Makefile alone built the library with cc, for
#                           the host, and the board's NIF failed to link;
#                           the copy is this make's folder's own: another
#                           make's CC (rebar3's pre_hook, make lib, another
#                           project's Makefile) rebuilds no NIF here;
#                           build/libbeam_alloc.a, make lib's, in a
#                           checkout whose build/ make cannot write)
#   ERTS_INCLUDE_DIR        where erl_nif.h is (from `erl` unless set)
#   BEAM_ALLOC_CFLAGS       -g -fno-omit-frame-pointer
#                           -fno-optimize-sibling-calls -fPIC
#                           -fvisibility=hidden, both include dirs, and the
#                           flags that keep $(CC) from merging identical
#                           code (GCC's -fno-ipa-icf -fno-crossjumping
#                           -fno-tree-tail-merge, or clang's -mllvm
#                           tail-merge and sinking flags) (-g and frame
#                           pointers: reports give source lines and
#                           callers; no sibling calls: a function whose last
#                           act is an allocator call keeps its frame; no
#                           merging: a report would name the other NIF's, or
#                           the other branch's, line; -foptimize-sibling-calls
#                           in CFLAGS, which come after, takes the jumps back)
#   BEAM_ALLOC_CXXFLAGS     the same for $(CXX)
#   BEAM_ALLOC_LDFLAGS      -shared, and -Wl,--exclude-libs,ALL so that none of
#                           beam_alloc's symbols is exported from your NIF
#   BEAM_ALLOC_BUILD_NIF    a recipe: compiles and links the C sources among
#                           the prerequisites ($^) into $@, with CC, CFLAGS
#                           (set before or after the include; -O2 when
#                           it is not set before), LDFLAGS and LDLIBS;
#                           it stops at a C++ source (use the next one)
#                           and when no source is among them
#   BEAM_ALLOC_BUILD_NIF_CXX  the same for C++ sources (.cc .cpp .cxx
#                           .c++ .C) mixed with C ones: C++ with CXX and
#                           CXXFLAGS, C with CC and CFLAGS, linked by CXX
#
# and, for Erlang projects built with make, beam_alloc's Erlang side
# (beam_alloc_testing, beam_alloc:stats/1 and take_reports/0, the
# explain_load_error/1 of an on_load) as an OTP application directory:
#   BEAM_ALLOC_APP_DIR      where it goes, set before the include (default
#                           $(BEAM_ALLOC_DIR)/build/erlang/beam_alloc; the
#                           C library still builds in the checkout's build/);
#                           its last part must be beam_alloc or
#                           beam_alloc-VSN: code:priv_dir/1 finds it by name
#                           (when its absolute path holds a space, it must
#                           be inside BEAM_ALLOC_DIR, as the default is)
#   BEAM_ALLOC_EBIN         its ebin/, for erl -pa (priv/ is beside it):
#                           absolute, or relative as BEAM_ALLOC_DIR is
#   BEAM_ALLOC_APP          $(BEAM_ALLOC_EBIN)/beam_alloc.app, with a rule
#                           that builds the whole directory: depend on it
#   BEAM_ALLOC_BUILD_APP    a recipe for your own ebin/my_app.app: from the
#                           .app.src first among the prerequisites, with the
#                           modules of the .erl files among them (releases
#                           need the list)
#
# and, for plain C programs without a BEAM (the malloc-backed build):
#   BEAM_ALLOC_STANDALONE_LIB     build/libbeam_alloc_standalone.a, with a
#                                 rule that builds it
#   BEAM_ALLOC_STANDALONE_CFLAGS  -DBEAM_ALLOC_STANDALONE and the include dir
#   BEAM_ALLOC_STANDALONE_LIBS    what to link after it (-pthread)
#
# Only GNU make is supported.

# Leave the including Makefile's default goal alone (restored at the end).
BEAM_ALLOC_SAVED_GOAL := $(.DEFAULT_GOAL)

# Absolute, unless that path holds a space, which make cannot use, or a
# character the recipes' shell or make takes for its own (a quote: a
# project in /home/o'brien failed in the shell): then as the include named
# it, relative to this make's directory (a project that reaches beam_alloc
# through a link, c_src/.beam_alloc as the rebar3 Makefile of the README
# does, has none of them there; recipes must then run from this make's
# directory).
beam_alloc_hash := \#
beam_alloc_specials := ' " ` $$ \ ; & | < > ( ) * ? [ ] ! % : $(beam_alloc_hash)
beam_alloc_plain = $(and $(filter 1,$(words $(1))),$(if $(strip $(foreach c,$(beam_alloc_specials),$(findstring $(c),$(1)))),,plain))
beam_alloc_make_path = $(if $(call beam_alloc_plain,$(abspath $(1))),$(abspath $(1)),$(1))
BEAM_ALLOC_DIR_NAMED := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
BEAM_ALLOC_DIR := $(call beam_alloc_make_path,$(BEAM_ALLOC_DIR_NAMED))
BEAM_ALLOC_INCLUDE_DIR := $(BEAM_ALLOC_DIR)/include
# The library's copy that this folder's NIFs link, a copy of its own
# (build/mk-<checksum of this folder>): beam_alloc's own make (rebar3's
# pre_hook, make lib) and another project's Makefile write theirs, each
# with its CC, and with one copy for all a Makefile's CC = clang rewrote
# the copy the hook had written with cc, and the NIF was built again at
# every rebar3 compile. (cksum, as beam_alloc's Makefile needs it.)
# A word in single quotes for the recipes' shell (a ' in it closed, escaped
# and opened again): a folder's path may hold one (/home/o'brien).
beam_alloc_sh_quote = '$(subst ','\'',$(1))'
beam_alloc_copy_sum := $(firstword $(shell printf '%s' $(call beam_alloc_sh_quote,$(CURDIR)) | cksum))
$(if $(beam_alloc_copy_sum),,$(error cksum is not on PATH (coreutils): it names the folder of the library's copy that beam_alloc.mk's NIFs link))
# A checkout whose build/ this make cannot write (prebuilt, installed for
# a machine's users, a read-only mount) has no room for the copy, and each
# project failed at its mkdir: there the one copy make lib wrote is linked
# (which no other make can write again either, so no NIF is built again
# for another's CC); it served the CC, flags and Erlang it was built for.
beam_alloc_quoted_dir := $(call beam_alloc_sh_quote,$(BEAM_ALLOC_DIR))
beam_alloc_shared_copy := $(shell test ! -w $(beam_alloc_quoted_dir)/build && \
    test -e $(beam_alloc_quoted_dir)/build/libbeam_alloc.a && echo shared)
beam_alloc_lib_copy := build/$(if $(beam_alloc_shared_copy),,mk-$(beam_alloc_copy_sum)/)libbeam_alloc.a
BEAM_ALLOC_LIB := $(BEAM_ALLOC_DIR)/$(beam_alloc_lib_copy)
BEAM_ALLOC_STANDALONE_LIB := $(BEAM_ALLOC_DIR)/build/libbeam_alloc_standalone.a
BEAM_ALLOC_STANDALONE_CFLAGS := -DBEAM_ALLOC_STANDALONE -I$(BEAM_ALLOC_INCLUDE_DIR) -pthread
BEAM_ALLOC_STANDALONE_LIBS := -pthread

# Found when first needed, then remembered (an environment value wins).
ERTS_INCLUDE_DIR ?= $(eval ERTS_INCLUDE_DIR := $(shell erl -noshell -eval 'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)]), halt().' 2>/dev/null))$(ERTS_INCLUDE_DIR)

# The no-merging flags for compilers that take them (GCC's, or clang's;
# -Werror: clang only warns about
# flags it does not know). Asked wherever the flags are used, of the
# compiler in force there (a target may set its own CC): a few
# milliseconds per NIF built.
BEAM_ALLOC_NO_FOLD_GCC = -fno-ipa-icf -fno-crossjumping -fno-tree-tail-merge
BEAM_ALLOC_NO_FOLD_CLANG = -mllvm -enable-tail-merge=false -mllvm -simplifycfg-sink-common=false
beam_alloc_flags_if = $(shell $(1) -Werror $(3) -x $(2) -c /dev/null -o /dev/null 2>/dev/null && echo $(3))
beam_alloc_no_icf = $(call beam_alloc_flags_if,$(1),$(2),$(BEAM_ALLOC_NO_FOLD_GCC)) $(call beam_alloc_flags_if,$(1),$(2),$(BEAM_ALLOC_NO_FOLD_CLANG))
BEAM_ALLOC_NO_ICF_CC = $(call beam_alloc_no_icf,$(CC),c)
BEAM_ALLOC_NO_ICF_CXX = $(call beam_alloc_no_icf,$(CXX),c++)

# -O2 when CFLAGS (CXXFLAGS) is not set before the include: in these
# flags, not in CFLAGS, which the Makefile that includes this one owns (a
# CFLAGS ?= here made its own CFLAGS ?= after the include a no-op: its
# -O3 -Werror -std=gnu99 were dropped without a word). CFLAGS comes after
# these flags wherever they are used: its -O level wins.
BEAM_ALLOC_OPT_C := $(if $(filter undefined,$(origin CFLAGS)),-O2)
BEAM_ALLOC_OPT_CXX := $(if $(filter undefined,$(origin CXXFLAGS)),-O2)
BEAM_ALLOC_BASE_FLAGS = -g -fno-omit-frame-pointer -fno-optimize-sibling-calls -fPIC -fvisibility=hidden -I$(BEAM_ALLOC_INCLUDE_DIR) -I$(ERTS_INCLUDE_DIR) -pthread
BEAM_ALLOC_CFLAGS = $(BEAM_ALLOC_BASE_FLAGS) $(BEAM_ALLOC_NO_ICF_CC) $(BEAM_ALLOC_OPT_C)
# (<beam_alloc.hpp> needs C++17, which clang++ 14 does not default to; a
# -std in CXXFLAGS, which comes after, wins.)
BEAM_ALLOC_CXXFLAGS = -std=gnu++17 $(BEAM_ALLOC_BASE_FLAGS) $(BEAM_ALLOC_NO_ICF_CXX) $(BEAM_ALLOC_OPT_CXX)
ifeq ($(shell uname -s),Darwin)
BEAM_ALLOC_LDFLAGS := -shared -undefined dynamic_lookup -pthread
else
BEAM_ALLOC_LDFLAGS := -shared -Wl,--exclude-libs,ALL -pthread
endif

# Sources of the wrong language, or none, are refused: either recipe left
# out what it does not compile, and linked beam_alloc's library alone (a
# C++ NIF given BEAM_ALLOC_BUILD_NIF built, then failed to load with
# "undefined symbol: _nif_init").
BEAM_ALLOC_CXX_SRC = $(filter %.cc %.cpp %.cxx %.c++ %.C,$^)
BEAM_ALLOC_ONLY_C = $(if $(BEAM_ALLOC_CXX_SRC),$(error BEAM_ALLOC_BUILD_NIF builds C sources only: $(firstword $(BEAM_ALLOC_CXX_SRC)) is C++, use $$(BEAM_ALLOC_BUILD_NIF_CXX)))
BEAM_ALLOC_SOME_SRC = $(if $(filter %.c,$^)$(BEAM_ALLOC_CXX_SRC),,$(error $(1): no C or C++ source among the prerequisites of $@))
BEAM_ALLOC_BUILD_NIF = $(BEAM_ALLOC_ONLY_C)$(call BEAM_ALLOC_SOME_SRC,BEAM_ALLOC_BUILD_NIF)mkdir -p $(@D) && \
    $(CC) $(BEAM_ALLOC_CFLAGS) $(CFLAGS) $(filter %.c,$^) $(BEAM_ALLOC_LIB) \
        $(BEAM_ALLOC_LDFLAGS) $(LDFLAGS) $(LDLIBS) -o $@
# C sources are compiled as C (next to $@, removed after the link), C++ ones
# as C++, and the whole linked by the C++ compiler.
BEAM_ALLOC_CXX_CSRC = $(filter %.c,$^)
BEAM_ALLOC_CXX_COBJ = $(foreach c,$(BEAM_ALLOC_CXX_CSRC),$@-$(notdir $(c)).o)
BEAM_ALLOC_BUILD_NIF_CXX = $(call BEAM_ALLOC_SOME_SRC,BEAM_ALLOC_BUILD_NIF_CXX)mkdir -p $(@D) && \
    $(foreach c,$(BEAM_ALLOC_CXX_CSRC),$(CC) $(BEAM_ALLOC_CFLAGS) $(CFLAGS) -c $(c) -o $@-$(notdir $(c)).o &&) \
    $(CXX) $(BEAM_ALLOC_CXXFLAGS) $(CXXFLAGS) $(BEAM_ALLOC_CXX_SRC) $(BEAM_ALLOC_CXX_COBJ) \
        $(BEAM_ALLOC_LIB) $(BEAM_ALLOC_LDFLAGS) $(LDFLAGS) $(LDLIBS) -o $@; \
    status=$$?; rm -f $(BEAM_ALLOC_CXX_COBJ); exit $$status

# beam_alloc's own Makefile decides whether a library is out of date: it
# runs once per make, before anything that depends on the library is
# considered (so a NIF is rebuilt only when the library really changed, or
# one of beam_alloc's headers, which the NIF's sources include).
$(BEAM_ALLOC_LIB): FORCE_BEAM_ALLOC_NIF_LIB
	@$(MAKE) --no-print-directory -C $(BEAM_ALLOC_DIR) nif-lib NIF_LIB_COPY=$(beam_alloc_lib_copy) \
	    ERTS_INCLUDE_DIR=$(ERTS_INCLUDE_DIR) CC="$(CC)"
$(BEAM_ALLOC_STANDALONE_LIB): FORCE_BEAM_ALLOC_STANDALONE_LIB
	@$(MAKE) --no-print-directory -C $(BEAM_ALLOC_DIR) standalone-lib CC="$(CC)"
BEAM_ALLOC_APP_DIR ?= $(BEAM_ALLOC_DIR)/build/erlang/beam_alloc
# Absolute unless that holds a space (or a quote...), as BEAM_ALLOC_DIR
# (an absolute path with a space reached beam_alloc's make as two words:
# it wrote the application to the path's first part, /tmp/my/ebin for
# /tmp/my projects, and failed).
BEAM_ALLOC_APP_ROOT := $(call beam_alloc_make_path,$(BEAM_ALLOC_APP_DIR))
ifeq ($(filter beam_alloc beam_alloc-%,$(notdir $(BEAM_ALLOC_APP_ROOT))),)
$(error BEAM_ALLOC_APP_DIR ($(BEAM_ALLOC_APP_DIR)) must end in beam_alloc or beam_alloc-VSN: code:priv_dir/1 finds the application by its folder's name)
endif
# The same folder as beam_alloc's make, which runs in BEAM_ALLOC_DIR, names
# it: absolute, or relative to BEAM_ALLOC_DIR (the default folder is there).
BEAM_ALLOC_APP_FOR_MAKE := $(if $(filter /%,$(BEAM_ALLOC_APP_ROOT)),$(BEAM_ALLOC_APP_ROOT),$(patsubst $(BEAM_ALLOC_DIR)/%,%,$(filter $(BEAM_ALLOC_DIR)/%,$(BEAM_ALLOC_APP_ROOT))))
ifeq ($(BEAM_ALLOC_APP_FOR_MAKE),)
$(error BEAM_ALLOC_APP_DIR ($(BEAM_ALLOC_APP_DIR)): its absolute path holds a space, which make cannot take, and it is not inside BEAM_ALLOC_DIR ($(BEAM_ALLOC_DIR)): leave it unset, or choose a folder inside beam_alloc's or on a path without spaces)
endif
BEAM_ALLOC_EBIN := $(BEAM_ALLOC_APP_ROOT)/ebin
BEAM_ALLOC_APP := $(BEAM_ALLOC_EBIN)/beam_alloc.app
# (After the library: two makes must not build it at once under make -j.
# With the library's CC: erlang-app builds the library too, for its NIFs,
# and with beam_alloc's own CC, where a project's Makefile set another, it
# built a second whole library, and wrote the one copy then shared with
# the NIF for the other CC at each make, which rebuilt the NIF.)
$(BEAM_ALLOC_APP): FORCE_BEAM_ALLOC_APP | $(BEAM_ALLOC_LIB)
	$(if $(filter-out $(BEAM_ALLOC_APP_ROOT),$(call beam_alloc_make_path,$(BEAM_ALLOC_APP_DIR))),$(error BEAM_ALLOC_APP_DIR changed after beam_alloc.mk was included: set it before the include))
	@$(MAKE) --no-print-directory -C $(BEAM_ALLOC_DIR) erlang-app \
	    ERLANG_APP_DIR=$(BEAM_ALLOC_APP_FOR_MAKE) ERTS_INCLUDE_DIR=$(ERTS_INCLUDE_DIR) CC="$(CC)"
BEAM_ALLOC_BUILD_APP = mkdir -p $(@D) && \
    escript $(BEAM_ALLOC_DIR)/scripts/app-file $@ $< $(filter %.erl,$^)
.PHONY: FORCE_BEAM_ALLOC_NIF_LIB FORCE_BEAM_ALLOC_STANDALONE_LIB FORCE_BEAM_ALLOC_APP

.DEFAULT_GOAL := $(BEAM_ALLOC_SAVED_GOAL)
