# mod_sse — build, install, test, run.
#
#   make            build mod_sse.so (and the unit-test binary's library)
#   make install    install mod_sse.so into `apxs -q LIBEXECDIR`
#   make test       install missing Debian packages, build, run the unit and integration tests
#   make run        install missing Debian packages, build, start a demo httpd on 127.0.0.1
#   make stop       stop the demo httpd
#
# The module is C++17, compiled with g++ using the flags apxs reports (apxs itself only
# compiles *.c files and would silently build an empty module from *.c++).

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
ALL_CXXFLAGS := -std=c++17 -fPIC -fno-gnu-unique -pthread $(WARN) $(CXXFLAGS) \
               $(filter-out -O2 -g,$(AP_CFLAGS)) $(AP_CPPFLAGS) -Iinclude -I. $(AP_INCLUDES)

CORE_SRCS := src/wire.c++ src/bus.c++ src/request.c++ src/publisher.c++ src/socket_protocol.c++
GLUE_SRCS := mod_sse.c++ src/httpd/respond.c++ src/httpd/subscribe.c++ src/httpd/publish.c++ \
             src/httpd/publish_socket.c++ src/httpd/socket_daemon.c++
CORE_OBJS := $(CORE_SRCS:%.c++=$(BUILD)/%.o)
GLUE_OBJS := $(GLUE_SRCS:%.c++=$(BUILD)/%.o)

UNIT_SRCS := $(wildcard t/unit/*.c++)
UNIT_BIN  := $(BUILD)/t/unit/run-unit-tests

.PHONY: all install test unit integration deps run stop clean

all: $(BUILD)/mod_sse.so

$(BUILD)/%.o: %.c++
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libssecore.a: $(CORE_OBJS)
	ar rcs $@ $^

$(BUILD)/mod_sse.so: $(GLUE_OBJS) $(BUILD)/libssecore.a
	$(CXX) -shared -fno-gnu-unique -pthread -o $@ $(GLUE_OBJS) $(BUILD)/libssecore.a

install: $(BUILD)/mod_sse.so
	install -d $(DESTDIR)$(LIBEXECDIR)
	install -m 644 $(BUILD)/mod_sse.so $(DESTDIR)$(LIBEXECDIR)/mod_sse.so

$(UNIT_BIN): $(UNIT_SRCS:%.c++=$(BUILD)/%.o) $(BUILD)/libssecore.a
	$(CXX) -pthread -o $@ $^ $(shell pkg-config --libs check)

deps:
	tools/install-deps

unit: $(UNIT_BIN)
	$(UNIT_BIN)

integration: $(BUILD)/mod_sse.so
	SSE_TEST_MPM=event prove -I t/lib t/*.t
	SSE_TEST_MPM=prefork prove -I t/lib t/*.t

test: deps
	$(MAKE) all $(UNIT_BIN)
	$(MAKE) unit
	$(MAKE) integration

run: deps
	$(MAKE) all
	tools/run-demo start

stop:
	tools/run-demo stop

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
