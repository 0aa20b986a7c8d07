# hubmirror - one GNU Makefile (git, redis style).
#   make                  build ./hubmirror
#   make check            build, then every test (unit + end-to-end)
#   make demo             build, then the main job end to end on a local sample
#   make install          the binary, its man page and bash/zsh completions
#                         under PREFIX (default /usr/local; DESTDIR for staging)
#   make bench            benchmarks against peers (not part of check)
#   make DEVELOPER=1      strict warnings as errors
#   make check SANITIZE=address,undefined

CC ?= cc
PKGS = libcurl libcrypto sqlite3 libarchive jansson libmicrohttpd libpcre2-8 zlib
PYTHON ?= /usr/bin/python3

# Install missing Debian packages before pkg-config is asked anything; never
# for `make clean` / `make uninstall`, nor under `make -n` (a dry run runs nothing).
NO_DEPS_GOALS := clean uninstall
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))
NEED_DEPS := $(if $(MAKECMDGOALS),$(filter-out $(NO_DEPS_GOALS),$(MAKECMDGOALS)),all)
ifneq ($(DRY_RUN),)
DEPS_OK := yes
else ifeq ($(NEED_DEPS),)
DEPS_OK := yes
else
DEPS_OK := $(shell mk/deps.sh build >&2 && echo yes)
endif
ifneq ($(DEPS_OK),yes)
$(error missing build dependencies; see the apt-get line above)
endif
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS))
# The BitTorrent swarm (p2p/): one C++ file over libtorrent, built by default.
CXX ?= g++
P2P_CXXFLAGS := $(shell pkg-config --cflags libtorrent-rasterbar)
P2P_LIBS := $(shell pkg-config --libs libtorrent-rasterbar) -lstdc++

CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -pthread -MMD -MP -Werror=implicit-function-declaration
ifdef DEVELOPER
CFLAGS += -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2
else
CFLAGS += -Wall
endif
ifdef SANITIZE
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif
LIBS = $(PKG_LIBS) $(P2P_LIBS) -pthread -lm
# Fault injection (util/fault.c, HUBMIRROR_FAULT): calls from our own objects
# to these go through util/fault.c's __wrap_ functions; see docs/DEVELOPING.md.
FAULT_FUNCS = write pwrite fsync fdatasync syncfs rename malloc calloc realloc strdup strndup
LDFLAGS += $(foreach f,$(FAULT_FUNCS),-Wl,--wrap=$(f))

LIB_DIRS = util verify store fetch s3 mirror serve bundle formats convert engine p2p
LIB_SRC := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_CXX := $(wildcard p2p/*.cpp)
LIB_OBJ := $(LIB_SRC:.c=.o) $(LIB_CXX:.cpp=.o)
CMD_SRC := $(wildcard cmd/*.c)
CMD_OBJ := $(CMD_SRC:.c=.o)
UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_OBJ := $(UNIT_SRC:.c=.o)
FUZZ_TARGETS := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_REPLAY := $(addprefix tests/fuzz/replay-,$(FUZZ_TARGETS))
FUZZ_SECONDS ?= 60

all: hubmirror

libhubmirror.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

hubmirror: $(CMD_OBJ) libhubmirror.a
	$(CC) $(LDFLAGS) -o $@ $(CMD_OBJ) libhubmirror.a $(LIBS)

tests/unit/unit-tests: $(UNIT_OBJ) libhubmirror.a
	$(CC) $(LDFLAGS) -o $@ $(UNIT_OBJ) libhubmirror.a $(LIBS)

# Fuzz targets replayed over their corpus by `make check` (no libFuzzer needed)...
tests/fuzz/replay-%: tests/fuzz/fuzz_%.o tests/fuzz/driver.o libhubmirror.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# ... and run for real with clang's libFuzzer: make fuzz [FUZZ_SECONDS=60]
fuzz:
	@mkdir -p tests/fuzz/out
	@for t in $(FUZZ_TARGETS); do \
		clang -g -O1 -std=c11 -D_GNU_SOURCE -pthread -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all $(PKG_CFLAGS) \
			-o tests/fuzz/out/fuzz-$$t tests/fuzz/fuzz_$$t.c $(filter-out util/fault.c,$(LIB_SRC)) $(LIBS) || exit 1; \
		mkdir -p tests/fuzz/out/corpus-$$t; \
		tests/fuzz/out/fuzz-$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
			tests/fuzz/out/corpus-$$t tests/fuzz/corpus/$$t || exit 1; \
	done

%.o: %.c
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++17 -pthread -MMD -MP -Wall
ifdef DEVELOPER
CXXFLAGS += -Wextra -Werror
endif
ifdef SANITIZE
CXXFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
%.o: %.cpp
	$(CXX) $(CXXFLAGS) $(P2P_CXXFLAGS) -c -o $@ $<

# Objects depend on the flags they were built with (sanitizers, -Werror).
BUILD_FLAGS := $(CC) $(CFLAGS) $(CXX) $(CXXFLAGS) $(LDFLAGS)
.build-flags: FORCE
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' > $@
$(LIB_OBJ) $(CMD_OBJ) $(UNIT_OBJ) tests/fuzz/driver.o $(FUZZ_TARGETS:%=tests/fuzz/fuzz_%.o): .build-flags

test-deps:
	@mk/deps.sh test

check: hubmirror tests/unit/unit-tests $(FUZZ_REPLAY) test-deps
	@$(PYTHON) tests/run.py

# the demo needs python3 only (not the browsers and numpy of the tests)
demo: hubmirror
	@mk/deps.sh demo
	@sh tests/demo.sh

# The man page and completions come from the command table, as --help does.
install: hubmirror
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions
	install -m 755 hubmirror $(DESTDIR)$(BINDIR)/hubmirror
	./hubmirror --man > $(DESTDIR)$(MANDIR)/man1/hubmirror.1
	./hubmirror completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/hubmirror
	./hubmirror completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_hubmirror

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/hubmirror $(DESTDIR)$(MANDIR)/man1/hubmirror.1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/hubmirror \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_hubmirror

bench: hubmirror
	@mk/deps.sh bench
	@sh bench/run.sh
	@sh bench/bundle.sh
	@sh bench/stats.sh
	@sh bench/convert.sh
	@sh bench/engine.sh

clean:
	rm -f hubmirror libhubmirror.a tests/unit/unit-tests .build-flags $(FUZZ_REPLAY)
	rm -rf tests/fuzz/out
	find . -name '*.o' -delete -o -name '*.d' -delete

FORCE:
.PHONY: all check demo bench clean test-deps fuzz install uninstall FORCE
-include $(LIB_OBJ:.o=.d) $(CMD_OBJ:.o=.d) $(UNIT_OBJ:.o=.d)
