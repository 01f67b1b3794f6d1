# mod_sse — build, install, test, run.
#
#   make            build mod_sse.so and the sse-publish and sse-follow commands
#   make install    install mod_sse.so into `apxs -q LIBEXECDIR`, sse-publish and sse-follow into $(BINDIR),
#                   sse.load and sse.conf into $(APACHE_MODS_AVAILABLE) for a2enmod (Debian),
#                   sse-mpm.conf into $(APACHE_CONF_AVAILABLE) for a2enconf
#   make test       install missing Debian packages (and check that install-deps covers what
#                   the tests use), build, run the unit and integration tests, then test-asan
#   make test-asan  the same under AddressSanitizer and UBSan, in build-asan/ (see below)
#   make test-stress  the integration suite 5 times in a row beside two CPU hogs
#   make run        install missing Debian packages, build, start a demo httpd on 127.0.0.1
#   make stop       stop the demo httpd
#
# The module is C++17, compiled with g++ using the flags apxs reports (apxs itself only
# compiles *.c files and would silently build an empty module from *.c++).

# Node.js 20 from the npm registry when the system's is older (tools/install-deps): first on PATH.
export PATH := $(CURDIR)/build/node/bin:$(PATH)

APXS      ?= apxs
CXX       ?= g++
BUILD     := build

AP_CFLAGS   := $(shell $(APXS) -q CFLAGS 2>/dev/null)
AP_CPPFLAGS := $(shell $(APXS) -q EXTRA_CPPFLAGS 2>/dev/null)
AP_INCLUDES := -I$(shell $(APXS) -q INCLUDEDIR 2>/dev/null) \
               -I$(shell $(APXS) -q APR_INCLUDEDIR 2>/dev/null) \
               -I$(shell $(APXS) -q APU_INCLUDEDIR 2>/dev/null)
LIBEXECDIR  := $(shell $(APXS) -q LIBEXECDIR 2>/dev/null)

# -fno-gnu-unique: otherwise g++'s STB_GNU_UNIQUE symbols make dlclose() a no-op and a
# restart of httpd keeps running the old module.
WARN      := -Wall -Wextra -Werror
CXXFLAGS  ?= -O2 -g
# Link flags of every binary and of mod_sse.so (test-asan links the sanitizer runtimes).
LDFLAGS   ?=
# The core (include/sse/ + src/*.c++, and sse-publish, which links only the core) is compiled
# without httpd's and APR's include paths or apxs's flags, so "the core knows no httpd" is a
# rule the build checks: an #include "httpd.h" or "apr_*.h" slipping into it fails to compile.
# Of apxs's flags it keeps the two g++ does not imply (-fstack-protector-strong,
# -Werror=format-security); the others are g++'s defaults or -pthread's (_GNU_SOURCE,
# _REENTRANT) or read by no core file (LINUX), so the core's code is what it was with them.
CORE_CXXFLAGS := -std=c++17 -fPIC -fno-gnu-unique -pthread -fstack-protector-strong \
               -Werror=format-security $(WARN) $(CXXFLAGS) -Iinclude
# The glue (mod_sse.c++, src/httpd/) and everything else: apxs's flags and include paths.
ALL_CXXFLAGS := -std=c++17 -fPIC -fno-gnu-unique -pthread $(WARN) $(CXXFLAGS) \
               $(filter-out -O2 -g,$(AP_CFLAGS)) $(AP_CPPFLAGS) -Iinclude -I. $(AP_INCLUDES)

CORE_SRCS := src/wire.c++ src/config_values.c++ src/audience.c++ src/registry.c++ src/bus.c++ src/request.c++ src/publisher.c++ src/socket_protocol.c++ \
             src/stream_open.c++ src/presence.c++ src/token.c++ src/delivery.c++ src/fanout.c++ \
             src/event_stream.c++ src/mercure_topic.c++ src/mercure_subscription.c++ \
             src/redis_record.c++ src/redis_link.c++ src/redis_replay.c++ src/cluster_state.c++ src/redis_cluster.c++ \
             src/send_last.c++
GLUE_SRCS := mod_sse.c++ src/httpd/respond.c++ src/httpd/subscribe.c++ src/httpd/publish.c++ \
             src/httpd/publish_socket.c++ src/httpd/socket_daemon.c++ src/httpd/async_hub.c++ \
             src/httpd/subscription.c++ src/httpd/status.c++ src/httpd/channel_access.c++ \
             src/httpd/token_check.c++ src/httpd/mercure_hub.c++ \
             src/httpd/shared_segment.c++ src/httpd/config.c++ src/httpd/generation.c++ \
             src/httpd/location_mapping.c++ src/httpd/query_param_expr.c++ \
             src/httpd/suspended_connection.c++ src/httpd/taken_socket.c++ \
             src/httpd/stream_transport.c++ src/httpd/mpm_sizing.c++ src/httpd/redis_bus.c++ \
             src/httpd/redis_cluster_state.c++ src/httpd/redis_presence.c++
CORE_OBJS := $(CORE_SRCS:%.c++=$(BUILD)/%.o)
# Signed tokens (src/token.c++): libjwt verifies, libcrypto loads and checks the public keys.
# Whatever links src/token.o (the module, the unit tests) links these; the other binaries take
# only what they use from libssecore.a and need neither. Expanded only when a link uses it (after
# `make deps` installed the packages); missing, it stops the build rather than letting -shared
# make a module that fails at LoadModule with an undefined symbol.
JWT_LIBS   = $(or $(shell pkg-config --libs libjwt libcrypto 2>/dev/null),$(error libjwt or libcrypto not found by pkg-config: run tools/install-deps (Debian: libjwt-dev libssl-dev)))
GLUE_OBJS := $(GLUE_SRCS:%.c++=$(BUILD)/%.o)
FOLLOW_OBJS := $(BUILD)/tools/sse-follow.o $(BUILD)/tools/http_stream.o
# SSERedis (src/redis_link.c++): Debian's libhiredis-dev (0.14), linked by the module and the
# unit tests.
REDIS_LIBS  = $(or $(shell pkg-config --libs hiredis 2>/dev/null),$(error hiredis not found by pkg-config: run tools/install-deps (Debian: libhiredis-dev)))
SSL_LIBS    = $(or $(shell pkg-config --libs libssl libcrypto 2>/dev/null),$(error libssl not found by pkg-config: run tools/install-deps (Debian: libssl-dev)))

UNIT_SRCS := $(wildcard t/unit/*.c++)
UNIT_BIN  := $(BUILD)/t/unit/run-unit-tests

# libFuzzer targets, one per parser of untrusted input (t/fuzz/fuzz_*.c++; docs/tests.md says
# what each checks). `make fuzz` runs each for FUZZ_SECONDS: 8 targets x 20 s keep it near three
# minutes in `make test`; FUZZ_SECONDS=600 make fuzz for a longer search.
FUZZ_SECONDS ?= 20
FUZZ_BINS := $(patsubst t/fuzz/%.c++,$(BUILD)/fuzz/%,$(wildcard t/fuzz/fuzz_*.c++))
FUZZ_CORE := $(filter-out src/registry.c++ src/bus.c++ src/publisher.c++ src/stream_open.c++ src/delivery.c++ src/fanout.c++ src/redis_link.c++ src/redis_replay.c++ src/redis_cluster.c++,$(CORE_SRCS))
FUZZ_FLAGS := -std=c++17 $(WARN) -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Iinclude

# The bus under writers and readers killed with SIGKILL (t/stress/bus_stress.c++): the run
# phase lasts STRESS_SECONDS; STRESS_SEED=N replays a failing run's random choices.
STRESS_SECONDS ?= 30
STRESS_BIN := $(BUILD)/t/stress/bus-stress

.PHONY: all install test test-asan test-stress unit stress integration fuzz deps run stop clean bench-publish bench-publish-cost bench-fanout-cost bench-redis \
        bench-nchan bench-memory \
        bench-resume bench-fanout bench-registry bench-authz bench-token

PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
# Where Debian's a2enmod looks for modules (the name a2enmod itself reads from the
# environment). Empty: no sse.load or sse.conf is installed (a layout without a2enmod).
APACHE_MODS_AVAILABLE ?= /etc/apache2/mods-available
# Where Debian's a2enconf looks for conf snippets (sse-mpm.conf). Empty: not installed.
APACHE_CONF_AVAILABLE ?= /etc/apache2/conf-available

all: $(BUILD)/mod_sse.so $(BUILD)/sse-publish $(BUILD)/sse-follow

$(BUILD)/%.o: %.c++
	@mkdir -p $(dir $@)
	$(CXX) $(OBJ_CXXFLAGS) -MMD -MP -c $< -o $@

# Which flags an object gets (see CORE_CXXFLAGS above).
OBJ_CXXFLAGS = $(ALL_CXXFLAGS)
$(CORE_OBJS) $(BUILD)/tools/sse-publish.o $(FOLLOW_OBJS): OBJ_CXXFLAGS = $(CORE_CXXFLAGS)

$(BUILD)/libssecore.a: $(CORE_OBJS)
	ar rcs $@ $^

$(BUILD)/mod_sse.so: $(GLUE_OBJS) $(BUILD)/libssecore.a
	$(CXX) -shared -fno-gnu-unique -pthread $(LDFLAGS) -o $@ $(GLUE_OBJS) $(BUILD)/libssecore.a \
	    $(JWT_LIBS) $(REDIS_LIBS)

$(BUILD)/sse-publish: $(BUILD)/tools/sse-publish.o $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^

# sse-follow: the core's event-stream reader over HTTP or HTTPS (OpenSSL's libssl).
$(BUILD)/sse-follow: $(FOLLOW_OBJS) $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^ $(SSL_LIBS)

# sse.load names the module where this install puts it (conf/sse.load says Debian's path).
$(BUILD)/sse.load: conf/sse.load
	@mkdir -p $(dir $@)
	sed 's|^LoadModule sse_module .*|LoadModule sse_module $(LIBEXECDIR)/mod_sse.so|' $< > $@

# Installs conf file $(1) as $(2): an existing $(2) that differs is the admin's and is kept, and
# the shipped one goes beside it as $(2).new.
define install_conf
	@conf=$(2); \
	if [ -e $$conf ] && ! cmp -s $(1) $$conf; then \
	    echo "install: keeping $$conf (changed); the shipped one is $$conf.new"; \
	    echo "install -m 644 $(1) $$conf.new"; \
	    install -m 644 $(1) $$conf.new; \
	else \
	    echo "install -m 644 $(1) $$conf"; \
	    install -m 644 $(1) $$conf; \
	fi
endef

# sse.conf and sse-mpm.conf are the admin's once installed (install_conf); sse.load only says
# where the module is, and is replaced. sse-mpm.conf (the event MPM's sizing for mod_sse) is a
# conf-available snippet, enabled on purpose with a2enconf.
install: all $(BUILD)/sse.load
	install -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(BINDIR)
	install -m 644 $(BUILD)/mod_sse.so $(DESTDIR)$(LIBEXECDIR)/mod_sse.so
	install -m 755 $(BUILD)/sse-publish $(DESTDIR)$(BINDIR)/sse-publish
	install -m 755 $(BUILD)/sse-follow $(DESTDIR)$(BINDIR)/sse-follow
ifneq ($(APACHE_MODS_AVAILABLE),)
	install -d $(DESTDIR)$(APACHE_MODS_AVAILABLE)
	install -m 644 $(BUILD)/sse.load $(DESTDIR)$(APACHE_MODS_AVAILABLE)/sse.load
	$(call install_conf,conf/sse.conf,$(DESTDIR)$(APACHE_MODS_AVAILABLE)/sse.conf)
endif
ifneq ($(APACHE_CONF_AVAILABLE),)
	install -d $(DESTDIR)$(APACHE_CONF_AVAILABLE)
	$(call install_conf,conf/sse-mpm.conf,$(DESTDIR)$(APACHE_CONF_AVAILABLE)/sse-mpm.conf)
endif

$(UNIT_BIN): $(UNIT_SRCS:%.c++=$(BUILD)/%.o) $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs check) $(JWT_LIBS) $(REDIS_LIBS)

$(BUILD)/publish-bench: $(BUILD)/bench/publish_bench.o $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^

# sse-load speaks TLS too (-T), with OpenSSL's libssl (libssl-dev, already needed for tokens).
$(BUILD)/sse-load: $(BUILD)/bench/sse_load.o $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs openssl)

# The floor of bench-nchan: one epoll thread, one send() per subscriber (bench/floor_server.c).
$(BUILD)/floor-server: bench/floor_server.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -g $(WARN) $(LDFLAGS) -o $@ $<

$(BUILD)/resume-bench: $(BUILD)/bench/resume_bench.o $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^

$(BUILD)/fanout-bench: $(BUILD)/bench/fanout_bench.o $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^ $(JWT_LIBS)

# A subscribe of 64 new channels on a full channel table, this registry against the one before
# the O(1) table (commit 58ea68a, from git, namespace renamed sse_old): bench/registry_bench.c++.
REGISTRY_OLD_COMMIT := 58ea68a
OLD_DIR := $(BUILD)/bench/old
$(OLD_DIR)/registry_old.h:
	@mkdir -p $(@D)
	git show $(REGISTRY_OLD_COMMIT):include/sse/registry.h \
	    | sed -e 's/SSE_REGISTRY_H/SSE_REGISTRY_OLD_H/' -e 's/^namespace sse {/namespace sse_old {/' > $@
$(OLD_DIR)/registry_old.c++: $(OLD_DIR)/registry_old.h
	git show $(REGISTRY_OLD_COMMIT):src/registry.c++ \
	    | sed -e 's|"sse/registry.h"|"registry_old.h"|' \
	          -e 's/^namespace sse {/namespace sse_old {\nusing namespace ::sse;/' > $@
$(OLD_DIR)/registry_old.o: $(OLD_DIR)/registry_old.c++
	$(CXX) $(ALL_CXXFLAGS) -I$(OLD_DIR) -c $< -o $@
$(BUILD)/bench/registry_bench.o: bench/registry_bench.c++ $(OLD_DIR)/registry_old.h
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) -I$(OLD_DIR) -MMD -MP -c $< -o $@
$(BUILD)/registry-bench: $(BUILD)/bench/registry_bench.o $(OLD_DIR)/registry_old.o $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^
bench-registry: $(BUILD)/registry-bench
	$(BUILD)/registry-bench 10000 100000

# BusReader::start_after on a full 16 MB and 256 MB bus (bench/resume_bench.c++).
bench-resume: $(BUILD)/resume-bench
	$(BUILD)/resume-bench 16 256

# Fan-out per event (sse/fanout.h) against the hub's fan-out before it (bench/fanout_bench.c++).
bench-fanout: $(BUILD)/fanout-bench
	$(BUILD)/fanout-bench 10000 100 4000 15
	$(BUILD)/fanout-bench 1000 1 4000 15

bench-publish: all $(BUILD)/publish-bench
	bench/run-publish-bench

# What one HTTP publish costs next to a static GET: instructions (callgrind), system calls,
# context switches (perf stat) per request (bench/run-publish-cost; docs/benchmarks.md).
bench-publish-cost: all $(BUILD)/publish-bench
	bench/run-publish-cost
# What one delivery costs on 100 channels x 100 streams, mod_sse and the floor server: system
# calls, context switches per delivery (bench/run-fanout-cost; docs/benchmarks.md).
bench-fanout-cost: all $(BUILD)/sse-load $(BUILD)/floor-server
	bench/run-fanout-cost
# SSERedis: publish cost with and without it, alternating, and cross-server delivery latency
# (bench/run-redis-bench).
bench-redis: all $(BUILD)/publish-bench $(BUILD)/sse-load
	tools/install-deps --bench
	bench/run-redis-bench
	bench/run-redis-stream-figures

bench-memory: all
	bench/run-memory-compare

# Subscribes per second with channel authorization (per-channel lookups, Require sse-channel)
# against the module without it (bench/run-authz-bench).
bench-authz: all
	bench/run-authz-bench

# Subscribes per second without a token key and with HS256, RS256, ES256 (bench/run-token-cost).
bench-token: all
	bench/run-token-cost

# mod_sse against nginx + Nchan and the floor server, every row with both ratios, ~5 minutes
# (bench/run-nchan-compare; docs/benchmarks.md).
bench-nchan: all $(BUILD)/sse-load $(BUILD)/publish-bench $(BUILD)/floor-server
	tools/install-deps --bench
	bench/run-nchan-compare

# install-deps installs what is missing; check-deps then fails if the tests use a Perl module,
# command or npm package that install-deps does not install (one this machine has by chance).
deps:
	tools/install-deps
	tools/check-deps

unit: $(UNIT_BIN)
	$(UNIT_BIN)

$(STRESS_BIN): $(BUILD)/t/stress/bus_stress.o $(BUILD)/libssecore.a
	$(CXX) -pthread $(LDFLAGS) -o $@ $^

stress: $(STRESS_BIN)
	STRESS_SECONDS=$(STRESS_SECONDS) $(STRESS_BIN)

# Each target links the pure parsers (FUZZ_CORE), built once with the sanitizers and
# libFuzzer's coverage. `make fuzz` runs every target from a copy of its committed seeds (the
# corpus that grows stays in build/fuzz/<target>/), keeps its output in build/fuzz/<target>/log
# and shows the tail; it fails when a fuzzer exits non-zero (a report, or it did not start) or
# leaves a crash-, leak-, timeout- or oom- input, after running all of them.
.SECONDARY: $(FUZZ_BINS:$(BUILD)/fuzz/%=$(BUILD)/fuzz/obj/t/fuzz/%.o)
$(BUILD)/fuzz/obj/%.o: %.c++
	@mkdir -p $(dir $@)
	clang++ $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/t/fuzz/fuzz_%.o $(FUZZ_CORE:%.c++=$(BUILD)/fuzz/obj/%.o)
	clang++ $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(JWT_LIBS)

fuzz: $(FUZZ_BINS)
	@failed=; \
	for bin in $(FUZZ_BINS); do \
	    t=$${bin##*/fuzz_}; dir=$(BUILD)/fuzz/$$t; \
	    rm -rf $$dir && mkdir -p $$dir/corpus; \
	    if ! cp t/fuzz/corpus/$$t/* $$dir/corpus/; then failed="$$failed $$t(no seeds)"; continue; fi; \
	    echo "fuzz: $$t for $(FUZZ_SECONDS) s (log: $$dir/log)"; \
	    $$bin -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -print_final_stats=1 \
	        -artifact_prefix=$$dir/ $$dir/corpus >$$dir/log 2>&1; rc=$$?; \
	    if [ $$rc -ne 0 ] || ls $$dir/crash-* $$dir/leak-* $$dir/timeout-* $$dir/oom-* >/dev/null 2>&1; then \
	        tail -n 40 $$dir/log; \
	        echo "fuzz: $$t FAILED (exit status $$rc; log and inputs in $$dir/)"; failed="$$failed $$t"; \
	    else \
	        grep -E '^#[0-9]+[[:space:]]+DONE|^Done ' $$dir/log; \
	    fi; \
	done; \
	test -z "$$failed" || { echo "fuzz: failed:$$failed"; exit 1; }

integration: all $(BUILD)/sse-load
	SSE_TEST_REQUIRE_BROWSER=1 SSE_TEST_MPM=event prove -I t/lib t/*.t
	SSE_TEST_REQUIRE_BROWSER=1 SSE_TEST_MPM=prefork prove -I t/lib t/*.t

test: deps
	$(MAKE) all $(UNIT_BIN)
	$(MAKE) unit
	$(MAKE) stress
	$(MAKE) fuzz
	$(MAKE) integration
	$(MAKE) test-asan

# test-asan: mod_sse.so, sse-publish, the unit tests and the bus stress built with AddressSanitizer
# and UBSan in $(ASAN_BUILD) (the normal build is untouched), then run: the unit tests, the stress
# for ASAN_STRESS_SECONDS, the fuzzers (built with both sanitizers already) for ASAN_FUZZ_SECONDS
# and the whole integration suite under the event MPM with the instrumented module and
# sse-publish. Debian's apache2 is not instrumented: the harness preloads the sanitizer runtimes
# into httpd only (SSE_TEST_PRELOAD) and gives each server a sanitizer/ directory for the reports
# (t/lib/SSETest.pm). Any report fails the run: the binaries exit non-zero on one (halt_on_error),
# a test fails on a report of its server, and what the other binaries wrote to $(ASAN_LOGS) fails
# the last step. t/packaging.t and t/demo.t test build/ (installed, and the demo of `make run`).
#   detect_leaks=1 (ASan's default, said for the record): a leak fails the binary; the harness
#   turns it off for httpd only (APR's and OpenSSL's exit-time allocations, not mod_sse's).
#   abort_on_error=0 (default): a report ends the process with exit code 1, not a core dump.
#   print_stacktrace=1:halt_on_error=1 for UBSan: by default it prints one line and goes on.
ASAN_BUILD   := build-asan
SANITIZE     := -fsanitize=address,undefined -fno-omit-frame-pointer
ASAN_LOGS    := $(abspath $(ASAN_BUILD))/sanitizer
ASAN_STRESS_SECONDS ?= 10
ASAN_FUZZ_SECONDS   ?= 10
ASAN_OPTS    := detect_leaks=1:abort_on_error=0
UBSAN_OPTS   := print_stacktrace=1:halt_on_error=1
ASAN_ENV     := ASAN_OPTIONS=$(ASAN_OPTS) UBSAN_OPTIONS=$(UBSAN_OPTS)

test-asan: $(BUILD)/sse-load
	$(MAKE) BUILD=$(ASAN_BUILD) CXXFLAGS="-O1 -g $(SANITIZE)" LDFLAGS="$(SANITIZE)" \
	    all $(ASAN_BUILD)/t/unit/run-unit-tests $(ASAN_BUILD)/t/stress/bus-stress
	rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS) && chmod 777 $(ASAN_LOGS)
	$(ASAN_ENV) $(ASAN_BUILD)/t/unit/run-unit-tests
	$(ASAN_ENV) STRESS_SECONDS=$(ASAN_STRESS_SECONDS) $(ASAN_BUILD)/t/stress/bus-stress
	$(MAKE) fuzz FUZZ_SECONDS=$(ASAN_FUZZ_SECONDS)
	ASAN_OPTIONS=$(ASAN_OPTS):log_path=$(ASAN_LOGS)/asan \
	UBSAN_OPTIONS=$(UBSAN_OPTS):log_path=$(ASAN_LOGS)/ubsan SSE_TEST_BUILD=$(abspath $(ASAN_BUILD)) \
	    SSE_TEST_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libubsan.so)" \
	    SSE_TEST_REQUIRE_BROWSER=1 SSE_TEST_MPM=event prove -I t/lib t/*.t
	@test -z "$$(ls $(ASAN_LOGS))" || { head -n 40 $(ASAN_LOGS)/*; \
	    echo "test-asan: sanitizer reports in $(ASAN_LOGS)"; exit 1; }

# The integration suite TEST_STRESS_RUNS times in a row, both MPMs each time, with two CPU-bound
# processes beside it (t/under-load): the tests must not depend on speed or load. Like `make
# test`, it installs what is missing first (the tests' npm packages included).
TEST_STRESS_RUNS ?= 5
test-stress: deps
	$(MAKE) all $(BUILD)/sse-load
	t/under-load $(TEST_STRESS_RUNS) integration

run: deps
	$(MAKE) all
	tools/run-demo start

stop:
	tools/run-demo stop

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
