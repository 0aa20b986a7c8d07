# hubmirror - one GNU Makefile (git, redis style).
#   make                  build ./hubmirror
#   make check            build, then every test (unit + end-to-end)
#   make demo             build, then the main job end to end on a local sample
#   make bench            benchmarks against peers (not part of check)
#   make DEVELOPER=1      strict warnings as errors
#   make check SANITIZE=address,undefined

CC ?= cc
PKGS = libcurl libcrypto sqlite3 libarchive jansson libmicrohttpd
PYTHON ?= /usr/bin/python3

# Install missing Debian packages before pkg-config is asked anything.
DEPS_OK := $(shell mk/deps.sh build >&2 && echo yes)
ifneq ($(DEPS_OK),yes)
$(error missing build dependencies; see the apt-get line above)
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS := $(shell pkg-config --libs $(PKGS))

CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -D_GNU_SOURCE -pthread -MMD -MP
ifdef DEVELOPER
CFLAGS += -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wformat=2
else
CFLAGS += -Wall
endif
ifdef SANITIZE
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif
LIBS = $(PKG_LIBS) -pthread -lm

LIB_DIRS = util verify store fetch mirror
LIB_SRC := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
LIB_OBJ := $(LIB_SRC:.c=.o)
CMD_SRC := $(wildcard cmd/*.c)
CMD_OBJ := $(CMD_SRC:.c=.o)
UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_OBJ := $(UNIT_SRC:.c=.o)

all: hubmirror

libhubmirror.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

hubmirror: $(CMD_OBJ) libhubmirror.a
	$(CC) $(LDFLAGS) -o $@ $(CMD_OBJ) libhubmirror.a $(LIBS)

tests/unit/unit-tests: $(UNIT_OBJ) libhubmirror.a
	$(CC) $(LDFLAGS) -o $@ $(UNIT_OBJ) libhubmirror.a $(LIBS)

%.o: %.c
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

# Objects depend on the flags they were built with (sanitizers, -Werror).
BUILD_FLAGS := $(CC) $(CFLAGS) $(LDFLAGS)
.build-flags: FORCE
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' > $@
$(LIB_OBJ) $(CMD_OBJ) $(UNIT_OBJ): .build-flags

test-deps:
	@mk/deps.sh test

check: hubmirror tests/unit/unit-tests test-deps
	@$(PYTHON) tests/run.py

demo: hubmirror test-deps
	@sh tests/demo.sh

bench: hubmirror
	@mk/deps.sh bench
	@sh bench/run.sh

clean:
	rm -f hubmirror libhubmirror.a tests/unit/unit-tests .build-flags
	find . -name '*.o' -delete -o -name '*.d' -delete

FORCE:
.PHONY: all check demo bench clean test-deps FORCE
-include $(LIB_OBJ:.o=.d) $(CMD_OBJ:.o=.d) $(UNIT_OBJ:.o=.d)
