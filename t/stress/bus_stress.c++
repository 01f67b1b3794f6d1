/* bus_stress — the bus's promises under writers and readers killed with SIGKILL.
 *
 * Forked writer processes publish into one small shared bus (full and evicting all the time):
 * small and large events on several channels, some for `only`/`except` audiences, some with
 * their own ids, and control records (CloseChannels, EndStream). Forked reader processes run
 * one session after another, each a BusReader that starts live or resumes (from the last id
 * its slot received, from an id some way back that may be evicted, from a publisher-given id,
 * or from an id that never existed), then follows live. The parent kills writers (also in the
 * middle of a publish, holding the robust lock) and readers at random and starts new ones.
 * One recorder process reads every record of the bus all along.
 *
 * Oracle (it must stay right when writers die at any point):
 * - before publishing, a writer declares the record in a shared log (its kind, channels,
 *   audience, id, type, size, and the bus's next seq at that moment); after, it writes the seq
 *   it got. Every payload carries its declaration's index, so whoever reads a record knows what
 *   it is even when its writer died before writing the seq down.
 * - every reader logs what its session got (seq and declaration), each Overrun, and at the end
 *   of the run that it had read everything ("drained").
 * - after the run, seq -> declaration is rebuilt from writers' and readers' logs. A seq nobody
 *   accounts for can only be the publish of a killed writer's last declaration, published
 *   between that declaration and the kill; if such a record could have been for a session,
 *   the gap it sits in is counted as undetermined instead of judged.
 * Checked per session: records arrive at most once, in publish order; only records for the
 * session (its channels; events only when their audience admits its client id); no control
 * record and no event from before its channel's CloseChannels is replayed; no silent gap:
 * between the start point (live: its position; resume found: the matched event) and what it
 * received, between two records, and up to the end of the run, every record it should have
 * had was received, unless next() returned Overrun there or start_after() returned false
 * before the first record. Readers compare every record with its declaration byte for byte.
 * A child that dies other than by our SIGKILL is a failure too.
 *
 * Environment: STRESS_SECONDS (run phase, default 30), STRESS_SEED (replays the same random
 * choices; the interleaving is the machine's), STRESS_BUS_KB (default 512).
 * Exit 0 when every check passed, 1 with the seed and the first violations otherwise.
 */
#include "sse/bus.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace sse;

namespace {

constexpr int kChannels = 6;
constexpr int kClients = 6;          /* "u0".."u5"; client index kClients is anonymous */
constexpr int kRecorderClient = 7;   /* reads ChannelSet::all() */
constexpr int kWriters = 4;
constexpr int kReaders = 6;

constexpr std::size_t kMaxDecls = 3000000;
constexpr std::size_t kMaxObs = 12000000;
constexpr std::size_t kMaxSessions = 400000;
constexpr std::size_t kMaxProcs = 200000;   /* writer and reader incarnations */

std::string channel_name(int k) { return "ch" + std::to_string(k); }
std::string client_name(int c) { return c < kClients ? "u" + std::to_string(c) : ""; }

/* One declared record. Fields are written before `state` becomes 1; `seq` before 2. */
struct Decl {
    std::atomic<std::uint32_t> state;
    std::uint32_t writer;
    std::uint8_t kind;
    std::uint8_t ch_mask;
    std::uint8_t only_mask, except_mask; /* events: client indices */
    std::uint8_t custom_id, type, n_serials, pad_;
    std::uint32_t data_len;
    std::uint32_t serials[2];            /* EndStream: the sessions it names */
    std::uint64_t hint;                  /* the bus's next seq before publishing */
    std::atomic<std::uint64_t> seq;
};

enum ObsType : std::uint32_t { ObsNone = 0, ObsRecord, ObsOverrun, ObsDrained, ObsCorrupt };

/* One thing a session saw; `type` is written last. */
struct Obs {
    std::atomic<std::uint32_t> type;
    std::uint32_t session;
    std::uint64_t seq;    /* record's seq; Drained: the bus's final next seq */
    std::uint64_t idx;    /* declaration index; Corrupt: what was wrong (a code) */
};

struct Session {
    std::atomic<std::uint32_t> state;    /* 1: started, fields valid */
    std::uint32_t proc;
    std::uint8_t client;
    std::uint8_t ch_mask;
    std::uint8_t mode;                   /* 0 live, 1 start_after */
    std::uint8_t found;
    char resume_id[48];
    std::uint64_t P;                     /* position() after the start */
};

struct Slot {
    std::atomic<std::uint32_t> len;      /* 0 while written */
    char last_id[48];
};

struct ProcRec {
    std::atomic<std::uint64_t> kill_next; /* writers: the bus's next seq once it was dead */
    int pid;
    int slot;                            /* readers */
    bool writer;
};

struct Shared {
    std::atomic<std::uint32_t> stop_writers, drain, full;
    std::atomic<std::uint64_t> final_next;
    std::atomic<std::uint64_t> n_decls, n_obs, n_sessions;
    std::atomic<std::uint64_t> recoveries_seen;
    Slot slots[kReaders];
};

Shared *S;
Decl *decls;
Obs *obs;
Session *sessions;
ProcRec *procs;
Bus bus;
std::uint64_t g_seed;
std::uint64_t first_seq;

void *shared_alloc(std::size_t n)
{
    void *p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    return p;
}

std::int64_t wall_us()
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return std::int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

double mono_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + ts.tv_nsec / 1e9;
}

void sleep_us(long us)
{
    struct timespec ts{us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, nullptr);
}

std::uint64_t mix(std::uint64_t a, std::uint64_t b)
{
    std::uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

std::vector<std::string> names_of(std::uint8_t mask, std::string (*name)(int), int n)
{
    std::vector<std::string> out;
    for (int k = 0; k < n; ++k)
        if (mask >> k & 1)
            out.push_back(name(k));
    return out;
}

/* What a declaration's payload is: its index first, then a filler that depends on it. */
std::string payload(std::uint64_t idx, std::uint32_t len)
{
    std::string s = "D" + std::to_string(idx) + " ";
    s.resize(std::max<std::size_t>(len, s.size()), char('a' + idx % 26));
    return s;
}

const char *const kTypes[] = {"", "tick", "upd"};

std::string custom_id(std::uint64_t idx) { return "k" + std::to_string(idx); }

/* Whether a client (index) gets an event with these masks, as audience.h says: listed in
 * `only` (or `only` empty) and not in `except`; the anonymous client is never in either. */
bool admits(const Decl &d, int client)
{
    if (client == kRecorderClient)
        return true;
    if (client >= kClients)
        return d.only_mask == 0;
    return (d.only_mask == 0 || (d.only_mask >> client & 1)) && !(d.except_mask >> client & 1);
}

bool relevant(const Decl &d, const Session &s)
{
    if (!(d.ch_mask & s.ch_mask))
        return false;
    return d.kind != std::uint8_t(RecordKind::Event) || admits(d, s.client);
}

/* ---- writers ---- */

[[noreturn]] void writer_main(std::uint32_t w)
{
    std::mt19937_64 rng(mix(g_seed, 1000000 + w));
    auto pct = [&] { return int(rng() % 1000); };
    while (!S->stop_writers.load()) {
        /* Mostly short bursts; now and then a long one, during which a resume's scan of the
         * ring rarely sees the tail stay put (what a busy server does all the time). */
        int burst = pct() < 50 ? 100 + int(rng() % 900) : 1 + int(rng() % 16);
        for (int b = 0; b < burst && !S->stop_writers.load(); ++b) {
            std::uint64_t idx = S->n_decls.fetch_add(1);
            if (idx >= kMaxDecls) {
                S->full.store(1);
                while (!S->stop_writers.load())
                    sleep_us(10000);
                _exit(0);
            }
            Decl &d = decls[idx];
            d.writer = w;
            int r = pct();
            d.kind = std::uint8_t(r < 4 ? RecordKind::CloseChannels
                                        : r < 6 ? RecordKind::EndStream : RecordKind::Event);
            int nch = d.kind == std::uint8_t(RecordKind::CloseChannels) ? 1 : 1 + int(rng() % 3);
            d.ch_mask = 0;
            while (__builtin_popcount(d.ch_mask) < nch)
                d.ch_mask |= std::uint8_t(1u << (rng() % kChannels));
            d.only_mask = d.except_mask = 0;
            d.n_serials = 0;
            if (d.kind == std::uint8_t(RecordKind::Event)) {
                int a = pct();
                if (a < 120 || (a >= 240 && a < 270))
                    d.only_mask = std::uint8_t((1u << (rng() % kClients)) | (1u << (rng() % kClients)));
                if (a >= 120 && a < 270)
                    d.except_mask = std::uint8_t(1u << (rng() % kClients));
                d.custom_id = pct() < 150;
                d.type = std::uint8_t(rng() % 3);
            } else if (d.kind == std::uint8_t(RecordKind::EndStream)) {
                std::uint64_t ns = S->n_sessions.load();
                d.n_serials = 1 + (rng() % 2);
                for (int i = 0; i < d.n_serials; ++i)
                    d.serials[i] = std::uint32_t(ns > 1 ? ns - 1 - rng() % std::min<std::uint64_t>(ns - 1, 12) : 0);
            }
            d.data_len = pct() < 15 ? 2000 + std::uint32_t(rng() % 30000) : std::uint32_t(rng() % 120);
            d.hint = bus.stats().next_seq;
            d.state.store(1, std::memory_order_release);

            std::vector<std::string> chs = names_of(d.ch_mask, channel_name, kChannels);
            PublishResult res;
            if (d.kind == std::uint8_t(RecordKind::Event)) {
                EventFields ev;
                ev.has_data = true;
                ev.data = payload(idx, d.data_len);
                ev.event = kTypes[d.type];
                if (d.custom_id)
                    ev.id = custom_id(idx);
                Audience aud;
                aud.only = names_of(d.only_mask, client_name, kClients);
                aud.except = names_of(d.except_mask, client_name, kClients);
                res = bus.publish(chs, ev, wall_us(), aud);
            } else {
                Audience aud;
                for (int i = 0; i < d.n_serials; ++i)
                    aud.only.push_back(stream_target(d.serials[i]));
                res = bus.publish_control(RecordKind(d.kind), chs, aud, payload(idx, d.data_len),
                                          wall_us());
            }
            d.seq.store(res.seq, std::memory_order_relaxed);
            d.state.store(2, std::memory_order_release);
            if (res.recovered_lock)
                S->recoveries_seen.fetch_add(1);
        }
        sleep_us(long(rng() % 4000));
    }
    _exit(0);
}

/* ---- readers ---- */

void log_obs(std::uint32_t session, ObsType t, std::uint64_t seq, std::uint64_t idx, bool *ok)
{
    if (!*ok)
        return;
    std::uint64_t i = S->n_obs.fetch_add(1);
    if (i >= kMaxObs) {
        S->full.store(1);
        *ok = false;
        return;
    }
    obs[i].session = session;
    obs[i].seq = seq;
    obs[i].idx = idx;
    obs[i].type.store(t, std::memory_order_release);
}

/* Checks a received record against its declaration. Returns 0 and sets *idx, or a code. */
int verify(const BusEvent &e, std::uint64_t *idx)
{
    std::size_t at = e.kind == RecordKind::Event ? e.wire.find("data: D") : 0;
    if (at == std::string::npos)
        return 1;
    at += e.kind == RecordKind::Event ? 7 : 1;
    if (e.kind != RecordKind::Event && (e.wire.empty() || e.wire[0] != 'D'))
        return 1;
    char *end = nullptr;
    unsigned long long v = strtoull(e.wire.c_str() + at, &end, 10);
    if (end == e.wire.c_str() + at || v >= S->n_decls.load() || v >= kMaxDecls)
        return 2;
    *idx = v;
    const Decl &d = decls[v];
    std::uint32_t st = d.state.load(std::memory_order_acquire);
    if (st == 0)
        return 3;
    if (st == 2 && d.seq.load() != e.seq)
        return 4;
    if (std::uint8_t(e.kind) != d.kind)
        return 5;
    if (e.channels != names_of(d.ch_mask, channel_name, kChannels))
        return 6;
    if (d.kind == std::uint8_t(RecordKind::Event)) {
        if (e.audience.only != names_of(d.only_mask, client_name, kClients) ||
            e.audience.except != names_of(d.except_mask, client_name, kClients))
            return 7;
        EventFields ev;
        ev.has_data = true;
        ev.data = payload(v, d.data_len);
        ev.event = kTypes[d.type];
        ev.id = d.custom_id ? custom_id(v) : std::to_string(e.seq);
        std::string wire;
        encode_event(ev, wire);
        if (e.wire != wire || e.id != ev.id || e.event != ev.event)
            return 8;
    } else {
        std::vector<std::string> want;
        for (int i = 0; i < d.n_serials; ++i)
            want.push_back(stream_target(d.serials[i]));
        if (e.audience.only != want || !e.audience.except.empty())
            return 7;
        if (e.wire != payload(v, d.data_len))
            return 8;
    }
    return 0;
}

/* Reads one session: returns when it ended (control record, time up) or at the drain. Returns
 * false when the process should exit. */
bool run_session(std::uint32_t proc, int slot, std::mt19937_64 &rng, bool recorder)
{
    std::uint64_t sid = S->n_sessions.fetch_add(1);
    if (sid >= kMaxSessions) {
        S->full.store(1);
        return false;
    }
    Session &s = sessions[sid];
    s.proc = proc;
    s.client = recorder ? kRecorderClient : std::uint8_t(rng() % (kClients + 1));
    s.ch_mask = 0;
    if (recorder) {
        s.ch_mask = (1u << kChannels) - 1;
    } else {
        int n = 1 + int(rng() % 3);
        while (__builtin_popcount(s.ch_mask) < n)
            s.ch_mask |= std::uint8_t(1u << (rng() % kChannels));
    }
    BusReader reader(bus, recorder ? ChannelSet::all() : ChannelSet(names_of(s.ch_mask, channel_name, kChannels)),
                     client_name(s.client));
    std::string id;
    int mode = recorder ? 0 : int(rng() % 100);
    if (mode >= 15 && mode < 50) { /* reconnect: the last id this slot received */
        Slot &sl = S->slots[slot];
        std::uint32_t n = sl.len.load(std::memory_order_acquire);
        if (n > 0 && n < sizeof sl.last_id)
            id.assign(sl.last_id, n);
    } else if (mode >= 50 && mode < 80) { /* some way back: held, or evicted */
        std::uint64_t next = bus.stats().next_seq;
        std::uint64_t back = 1 + rng() % 6000;
        id = std::to_string(next > back ? next - back : 1);
    } else if (mode >= 80 && mode < 90) { /* a publisher-given id, maybe evicted or not yet published */
        std::uint64_t nd = S->n_decls.load();
        std::uint64_t back = 1 + rng() % 6000;
        id = custom_id(nd > back ? nd - back : 0);
    } else if (mode >= 90) { /* never existed */
        int k = int(rng() % 3);
        id = k == 0 ? "nope" + std::to_string(rng() % 1000)
                    : k == 1 ? std::to_string(bus.stats().next_seq + 1000000 + rng() % 1000) : "0";
    }
    if (id.empty()) {
        reader.start_live();
        s.mode = 0;
        s.found = 1;
    } else {
        HistoryLimits limits;
        limits.count = ~std::uint64_t(0);
        limits.max_age_s = 0;
        s.mode = 1;
        s.found = reader.start_after(id, limits, wall_us());
    }
    std::snprintf(s.resume_id, sizeof s.resume_id, "%s", id.c_str());
    s.P = reader.position();
    s.state.store(1, std::memory_order_release);

    const double until = mono_s() + (recorder ? 1e9 : 0.005 + double(rng() % 400) / 1000);
    bool ok = true;
    BusEvent e;
    for (std::uint64_t iter = 0;; ++iter) {
        std::uint32_t seen = bus.wake_word();
        BusReader::Next n = reader.next(&e);
        if (n == BusReader::Next::Overrun) {
            log_obs(std::uint32_t(sid), ObsOverrun, 0, 0, &ok);
        } else if (n == BusReader::Next::Event) {
            std::uint64_t idx = 0;
            int bad = verify(e, &idx);
            if (bad) {
                log_obs(std::uint32_t(sid), ObsCorrupt, e.seq, std::uint64_t(bad), &ok);
                std::fprintf(stderr, "bus-stress: session %llu: record %llu does not match its declaration (code %d)\n",
                             (unsigned long long)sid, (unsigned long long)e.seq, bad);
            } else {
                log_obs(std::uint32_t(sid), ObsRecord, e.seq, idx, &ok);
            }
            if (!recorder && e.kind == RecordKind::Event && e.id.size() < sizeof S->slots[0].last_id) {
                Slot &sl = S->slots[slot];
                sl.len.store(0, std::memory_order_release);
                std::memcpy(sl.last_id, e.id.data(), e.id.size());
                sl.len.store(std::uint32_t(e.id.size()), std::memory_order_release);
            }
            /* What a stream does: a closed channel or its own EndStream ends it. */
            if (!recorder && (e.kind == RecordKind::CloseChannels || names_stream(e, sid)))
                return ok;
        } else {
            if (S->drain.load()) {
                log_obs(std::uint32_t(sid), ObsDrained, S->final_next.load(), 0, &ok);
                return false;
            }
            if (mono_s() > until)
                return ok;
            bus.wait(seen, 20);
        }
        if (!ok)
            return false;
        if ((iter & 63) == 0 && mono_s() > until && !S->drain.load())
            return true;
    }
}

[[noreturn]] void reader_main(std::uint32_t proc, int slot, bool recorder)
{
    std::mt19937_64 rng(mix(g_seed, 2000000 + proc));
    try {
        while (run_session(proc, slot, rng, recorder)) {
        }
    } catch (const std::exception &ex) {
        std::fprintf(stderr, "bus-stress: reader %u: %s\n", proc, ex.what());
        _exit(3);
    }
    /* Out of log space: stay until the drain so that the parent sees no early exit. */
    while (!S->drain.load())
        sleep_us(10000);
    _exit(0);
}

/* ---- the parent ---- */

std::vector<std::string> failures; /* child deaths and hangs */
std::uint32_t n_procs = 0;

int spawn(bool writer, int slot, bool recorder = false)
{
    if (n_procs >= kMaxProcs)
        return -1;
    std::uint32_t p = n_procs++;
    procs[p].writer = writer;
    procs[p].slot = slot;
    procs[p].kill_next.store(~std::uint64_t(0));
    fflush(stdout);
    fflush(stderr);
    int pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        /* Children must not outlive an interrupted run (writers would publish forever). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(0);
        if (writer)
            writer_main(p);
        reader_main(p, slot, recorder);
    }
    procs[p].pid = pid;
    return int(p);
}

std::string describe_status(int st)
{
    if (WIFSIGNALED(st))
        return "killed by signal " + std::to_string(WTERMSIG(st));
    return "exit status " + std::to_string(WEXITSTATUS(st));
}

/* Waits for `pid` up to `seconds`; kills it after that. Returns its status, or -1. */
int wait_bounded(int pid, double seconds)
{
    double until = mono_s() + seconds;
    int st = 0;
    for (;;) {
        int r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0)
            return -1;
        if (mono_s() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_us(2000);
    }
}

/* ---- the checker ---- */

struct Checker {
    std::uint64_t final_next = 0;
    std::vector<std::int64_t> at;           /* seq - first_seq -> declaration, -1 unknown */
    std::vector<std::int64_t> decl_seq;     /* declaration -> seq, -1 unknown */
    std::vector<std::uint64_t> unresolved;  /* declared, seq unknown, writer killed */
    std::vector<std::uint64_t> unknown_seqs; /* seqs no log accounts for, ascending */
    std::vector<std::vector<std::uint64_t>> closes; /* per channel: seqs of CloseChannels */
    std::vector<std::string> violations;
    std::map<std::string, std::uint64_t> counts;
    std::uint64_t undetermined = 0;

    void violation(const std::string &kind, const std::string &text)
    {
        /* The first few of each kind: one bug often shows as many of one kind. */
        if (++counts[kind] <= 3)
            violations.push_back(kind + ": " + text);
    }

    std::string decl_text(std::uint64_t idx) const
    {
        const Decl &d = decls[idx];
        char buf[200];
        std::snprintf(buf, sizeof buf, "decl %llu (writer %u, kind %u, channels 0x%x, only 0x%x, except 0x%x, %u bytes)",
                      (unsigned long long)idx, d.writer, d.kind, d.ch_mask, d.only_mask, d.except_mask,
                      d.data_len);
        return buf;
    }

    std::string session_text(std::uint64_t sid) const
    {
        const Session &s = sessions[sid];
        char buf[200];
        std::snprintf(buf, sizeof buf, "session %llu (client %d, channels 0x%x, %s '%s' -> %s, position %llu)",
                      (unsigned long long)sid, s.client, s.ch_mask, s.mode ? "start_after" : "start_live",
                      s.resume_id, s.found ? "true" : "false", (unsigned long long)s.P);
        return buf;
    }

    std::int64_t decl_at(std::uint64_t seq) const
    {
        return seq >= first_seq && seq < final_next ? at[seq - first_seq] : -1;
    }

    void link(std::uint64_t seq, std::uint64_t idx, const char *source)
    {
        if (seq < first_seq || seq >= final_next || idx >= decl_seq.size()) {
            violation("bad-seq", std::string(source) + " names seq " + std::to_string(seq) +
                                     " outside the bus's range, " + decl_text(idx));
            return;
        }
        std::int64_t &a = at[seq - first_seq];
        if ((a >= 0 && std::uint64_t(a) != idx) ||
            (decl_seq[idx] >= 0 && std::uint64_t(decl_seq[idx]) != seq)) {
            violation("conflict", std::string(source) + ": seq " + std::to_string(seq) + " is " +
                                      decl_text(idx) + ", but seq " + std::to_string(a) +
                                      " / decl seq " + std::to_string(decl_seq[idx]) + " elsewhere");
            return;
        }
        a = std::int64_t(idx);
        decl_seq[idx] = std::int64_t(seq);
    }

    /* For a seq nobody accounts for: 0 none of its possible records concerns the session,
     * 1 one might (undetermined), 2 no declaration can explain it. */
    int unknown_concerns(std::uint64_t seq, const Session *s, int channel_close = -1) const
    {
        bool any = false, might = false;
        for (std::uint64_t idx : unresolved) {
            const Decl &d = decls[idx];
            if (d.hint > seq || procs[d.writer].kill_next.load() <= seq)
                continue;
            any = true;
            if (channel_close >= 0)
                might = might || (d.kind == std::uint8_t(RecordKind::CloseChannels) &&
                                  (d.ch_mask >> channel_close & 1));
            else
                might = might || relevant(d, *s);
        }
        return !any ? 2 : might ? 1 : 0;
    }

    /* Whether a replayed event at `seq` is excluded by a CloseChannels on every one of the
     * session's channels it is on, published after it and before the session's position.
     * 0 no, 1 yes, 2 cannot tell. */
    int closed_before(std::uint64_t seq, const Decl &d, const Session &s) const
    {
        bool maybe = false;
        for (int k = 0; k < kChannels; ++k) {
            if (!((d.ch_mask & s.ch_mask) >> k & 1))
                continue;
            auto it = std::upper_bound(closes[k].begin(), closes[k].end(), seq);
            if (it != closes[k].end() && *it < s.P)
                continue;
            bool could = false;
            for (auto u = std::upper_bound(unknown_seqs.begin(), unknown_seqs.end(), seq);
                 u != unknown_seqs.end() && *u < s.P && !could; ++u)
                could = unknown_concerns(*u, &s, k) == 1;
            if (!could)
                return 0;
            maybe = true;
        }
        return maybe ? 2 : 1;
    }

    /* Every record in (from, to) the session should have received; reports the first. */
    void check_gap(std::uint64_t sid, std::uint64_t from, std::uint64_t to, const std::string &where)
    {
        const Session &s = sessions[sid];
        for (std::uint64_t x = from + 1; x < to; ++x) {
            std::int64_t idx = decl_at(x);
            if (idx < 0) {
                int u = unknown_concerns(x, &s);
                if (u == 1)
                    ++undetermined;
                else if (u == 2)
                    violation("phantom", "seq " + std::to_string(x) + " is no declared record");
                continue;
            }
            const Decl &d = decls[idx];
            if (!relevant(d, s))
                continue;
            if (x < s.P) {
                if (d.kind != std::uint8_t(RecordKind::Event))
                    continue;
                int c = closed_before(x, d, s);
                if (c == 1)
                    continue;
                if (c == 2) {
                    ++undetermined;
                    continue;
                }
            }
            violation("missed", session_text(sid) + " did not get seq " + std::to_string(x) + " (" +
                                    decl_text(std::uint64_t(idx)) + (x < s.P ? ", to replay" : ", live") +
                                    ") between seq " + std::to_string(from) + " and " + where +
                                    ", and no Overrun");
            return;
        }
    }

    void check_session(std::uint64_t sid, const std::vector<const Obs *> &log)
    {
        const Session &s = sessions[sid];
        bool defined = false;
        std::uint64_t c = 0, last = 0;
        std::int64_t not_found_seq = -1; /* start_after false for an id that was an event */
        const std::string id = s.resume_id;
        std::int64_t id_seq = -1;        /* the resume id's event, when known */
        bool id_possible = false;        /* whether an event can have that id */
        if (s.mode == 1) {
            char *end = nullptr;
            unsigned long long v = strtoull(id.c_str(), &end, 10);
            if (!id.empty() && *end == 0 && std::isdigit((unsigned char)id[0])) {
                std::int64_t idx = decl_at(v);
                if (idx >= 0) {
                    const Decl &d = decls[idx];
                    id_possible = d.kind == std::uint8_t(RecordKind::Event) && !d.custom_id;
                    if (id_possible)
                        id_seq = std::int64_t(v);
                } else {
                    id_possible = v >= first_seq && v < final_next;
                }
            } else if (id.size() > 1 && id[0] == 'k') {
                unsigned long long k = strtoull(id.c_str() + 1, &end, 10);
                if (*end == 0 && k < decl_seq.size()) {
                    const Decl &d = decls[k];
                    id_possible = d.state.load() >= 1 && d.kind == std::uint8_t(RecordKind::Event) && d.custom_id;
                    if (id_possible)
                        id_seq = decl_seq[k];
                }
            }
        }
        if (s.mode == 0) {
            defined = true;
            c = s.P - 1;
        } else if (s.found) {
            if (!id_possible) {
                violation("found-what", session_text(sid) + ": start_after found an id no event has");
            } else if (id_seq >= 0) {
                if (std::uint64_t(id_seq) >= s.P)
                    violation("found-what", session_text(sid) + ": matched seq " + std::to_string(id_seq) +
                                                " is not before the position");
                defined = true;
                c = std::uint64_t(id_seq);
            } else {
                ++undetermined; /* matched a record nobody saw: the start is not checked */
            }
        } else if (id_seq >= 0 && std::uint64_t(id_seq) < s.P) {
            not_found_seq = id_seq;
        }
        bool overrun = false;
        for (const Obs *o : log) {
            std::uint32_t t = o->type.load();
            if (t == ObsOverrun) {
                defined = false;
                overrun = true;
                continue;
            }
            if (t == ObsDrained) {
                if (defined)
                    check_gap(sid, c, o->seq, "the end of the run");
                continue;
            }
            const std::uint64_t x = o->seq;
            if (t == ObsCorrupt)
                violation("corrupt", session_text(sid) + ": seq " + std::to_string(x) +
                                         " did not match its declaration (code " + std::to_string(o->idx) + ")");
            if ((last && x <= last) || (defined && x <= c)) {
                violation("order", session_text(sid) + ": got seq " + std::to_string(x) + " after " +
                                       std::to_string(std::max(last, c)));
                continue;
            }
            if (t == ObsRecord) {
                const Decl &d = decls[o->idx];
                if (!relevant(d, s))
                    violation("not-for-it", session_text(sid) + " got seq " + std::to_string(x) + ", " +
                                                decl_text(o->idx));
                if (x < s.P && d.kind != std::uint8_t(RecordKind::Event))
                    violation("replayed-control", session_text(sid) + " got control seq " + std::to_string(x) +
                                                      " in its replay");
                else if (x < s.P && closed_before(x, d, s) == 1)
                    violation("replayed-closed", session_text(sid) + " got seq " + std::to_string(x) +
                                                     " from before its channel's CloseChannels");
                if (not_found_seq >= 0 && !overrun && x < std::uint64_t(not_found_seq))
                    violation("not-found", session_text(sid) + ": start_after said the id is not held (seq " +
                                               std::to_string(not_found_seq) + "), then replayed older seq " +
                                               std::to_string(x));
            }
            if (defined)
                check_gap(sid, c, x, "the next it got, seq " + std::to_string(x));
            defined = true;
            c = last = x;
        }
    }

    int run()
    {
        final_next = S->final_next.load();
        const std::uint64_t nd = std::min<std::uint64_t>(S->n_decls.load(), kMaxDecls);
        const std::uint64_t no = std::min<std::uint64_t>(S->n_obs.load(), kMaxObs);
        const std::uint64_t ns = std::min<std::uint64_t>(S->n_sessions.load(), kMaxSessions);
        at.assign(final_next - first_seq, -1);
        decl_seq.assign(nd, -1);
        for (std::uint64_t i = 0; i < nd; ++i)
            if (decls[i].state.load() == 2)
                link(decls[i].seq.load(), i, "writer's log");
        std::vector<std::vector<const Obs *>> logs(ns);
        std::uint64_t received = 0, overruns = 0;
        for (std::uint64_t i = 0; i < no; ++i) {
            const Obs &o = obs[i];
            std::uint32_t t = o.type.load();
            if (t == ObsNone || o.session >= ns)
                continue;
            logs[o.session].push_back(&o);
            if (t == ObsRecord) {
                link(o.seq, o.idx, "a reader");
                ++received;
            }
            overruns += t == ObsOverrun;
        }
        closes.assign(kChannels, {});
        for (std::uint64_t x = first_seq; x < final_next; ++x) {
            std::int64_t idx = decl_at(x);
            if (idx < 0) {
                unknown_seqs.push_back(x);
                continue;
            }
            if (decls[idx].kind == std::uint8_t(RecordKind::CloseChannels))
                for (int k = 0; k < kChannels; ++k)
                    if (decls[idx].ch_mask >> k & 1)
                        closes[k].push_back(x);
        }
        for (std::uint64_t i = 0; i < nd; ++i)
            if (decls[i].state.load() >= 1 && decl_seq[i] < 0) {
                if (procs[decls[i].writer].kill_next.load() == ~std::uint64_t(0))
                    violation("lost-publish", decl_text(i) + ": its writer was not killed, yet no seq");
                else
                    unresolved.push_back(i);
            }
        std::uint64_t resumes = 0, found = 0, started = 0;
        for (std::uint64_t sid = 0; sid < ns; ++sid) {
            if (sessions[sid].state.load() != 1)
                continue;
            ++started;
            resumes += sessions[sid].mode == 1;
            found += sessions[sid].mode == 1 && sessions[sid].found;
            check_session(sid, logs[sid]);
        }
        BusStats st = bus.stats();
        std::printf("bus-stress: %llu records published (%llu evicted, %llu lock recoveries), %llu declared, "
                    "%llu seqs known only to nobody\n",
                    (unsigned long long)st.published, (unsigned long long)st.evicted,
                    (unsigned long long)st.lock_recoveries, (unsigned long long)nd, (unsigned long long)unknown_seqs.size());
        std::printf("bus-stress: %llu sessions (%llu resumes, %llu found), %llu records received, %llu overruns, "
                    "%llu gaps undetermined (a killed writer's record nobody saw)\n",
                    (unsigned long long)started, (unsigned long long)resumes, (unsigned long long)found,
                    (unsigned long long)received, (unsigned long long)overruns, (unsigned long long)undetermined);
        return 0;
    }
};

} // namespace

int main()
{
    const char *e = getenv("STRESS_SECONDS");
    const double seconds = e && *e ? atof(e) : 30;
    e = getenv("STRESS_SEED");
    g_seed = e && *e ? strtoull(e, nullptr, 10)
                     : std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) % 1000000000;
    e = getenv("STRESS_BUS_KB");
    const std::size_t bus_bytes = (e && *e ? strtoull(e, nullptr, 10) : 512) * 1024;
    std::printf("bus-stress: seed %llu (STRESS_SEED=%llu replays it), %.0f s, bus %zu KB, %d writers, %d readers\n",
                (unsigned long long)g_seed, (unsigned long long)g_seed, seconds, bus_bytes / 1024, kWriters,
                kReaders);

    /* The bus is followed by an inaccessible page: a read past its end faults at once. */
    const std::size_t page = std::size_t(sysconf(_SC_PAGESIZE));
    const std::size_t mapped = (bus_bytes + page - 1) / page * page;
    auto *mem = static_cast<unsigned char *>(shared_alloc(mapped + page));
    mprotect(mem + mapped, page, PROT_NONE);
    std::string err = Bus::format(mem + (mapped - bus_bytes), bus_bytes, wall_us());
    if (!err.empty()) {
        std::fprintf(stderr, "bus-stress: %s\n", err.c_str());
        return 2;
    }
    bus = Bus::attach(mem + (mapped - bus_bytes), bus_bytes, &err);
    first_seq = bus.stats().next_seq;

    S = new (shared_alloc(sizeof(Shared))) Shared();
    decls = static_cast<Decl *>(shared_alloc(sizeof(Decl) * kMaxDecls));
    obs = static_cast<Obs *>(shared_alloc(sizeof(Obs) * kMaxObs));
    sessions = static_cast<Session *>(shared_alloc(sizeof(Session) * kMaxSessions));
    procs = static_cast<ProcRec *>(shared_alloc(sizeof(ProcRec) * kMaxProcs));

    std::mt19937_64 rng(mix(g_seed, 0));
    std::vector<int> writers, readers;
    int recorder = spawn(false, 0, true);
    for (double until = mono_s() + 10; sessions[0].state.load() != 1 && mono_s() < until;)
        sleep_us(1000);
    for (int i = 0; i < kWriters; ++i)
        writers.push_back(spawn(true, 0));
    for (int i = 0; i < kReaders; ++i)
        readers.push_back(spawn(false, i));

    auto died = [&](std::uint32_t p, int st) {
        failures.push_back(std::string(procs[p].writer ? "writer " : "reader ") + std::to_string(p) + " " +
                           describe_status(st) + " during the run");
    };
    std::uint64_t writer_kills = 0, reader_kills = 0;
    const double run_until = mono_s() + seconds;
    for (int iter = 0; iter < 1000000 && mono_s() < run_until && !S->full.load(); ++iter) {
        sleep_us(2000 + long(rng() % 28000));
        /* A child that ended by itself died: a crash (SIGSEGV reading the ring) or an exception. */
        int st;
        for (int pid; (pid = waitpid(-1, &st, WNOHANG)) > 0;) {
            for (std::uint32_t p = 0; p < n_procs; ++p) {
                if (procs[p].pid != pid)
                    continue;
                died(p, st);
                procs[p].kill_next.store(bus.stats().next_seq);
                for (auto *list : {&writers, &readers})
                    for (int &q : *list)
                        if (q == int(p))
                            q = spawn(procs[p].writer, procs[p].slot);
            }
        }
        int r = int(rng() % 100);
        if (r < 30) {
            int &w = writers[rng() % writers.size()];
            kill(procs[w].pid, SIGKILL);
            if (waitpid(procs[w].pid, &st, 0) == procs[w].pid && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
                died(std::uint32_t(w), st);
            procs[w].kill_next.store(bus.stats().next_seq);
            w = spawn(true, 0);
            ++writer_kills;
        } else if (r < 60) {
            int &q = readers[rng() % readers.size()];
            kill(procs[q].pid, SIGKILL);
            if (waitpid(procs[q].pid, &st, 0) == procs[q].pid && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
                died(std::uint32_t(q), st);
            q = spawn(false, procs[q].slot);
            ++reader_kills;
        }
    }
    if (S->full.load())
        std::printf("bus-stress: the logs are full, the run stopped early\n");

    S->stop_writers.store(1);
    for (int w : writers) {
        int st = wait_bounded(procs[w].pid, 30);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failures.push_back("writer " + std::to_string(w) + " did not stop: " +
                               (st == -1 ? std::string("hung") : describe_status(st)));
    }
    S->final_next.store(bus.stats().next_seq);
    S->drain.store(1);
    bus.wake_all();
    readers.push_back(recorder);
    for (int q : readers) {
        int st = wait_bounded(procs[q].pid, 30);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failures.push_back("reader " + std::to_string(q) + " did not drain: " +
                               (st == -1 ? std::string("hung") : describe_status(st)));
    }
    std::printf("bus-stress: %llu writers and %llu readers killed, %llu lock recoveries seen by writers\n",
                (unsigned long long)writer_kills, (unsigned long long)reader_kills,
                (unsigned long long)S->recoveries_seen.load());

    Checker ck;
    ck.run();
    for (const auto &f : failures)
        ck.violation("child", f);
    if (ck.counts.empty()) {
        std::printf("bus-stress: PASS (seed %llu)\n", (unsigned long long)g_seed);
        return 0;
    }
    std::printf("bus-stress: FAIL (seed %llu; STRESS_SEED=%llu replays the same choices)\n",
                (unsigned long long)g_seed, (unsigned long long)g_seed);
    for (const auto &kv : ck.counts)
        std::printf("  %llu x %s\n", (unsigned long long)kv.second, kv.first.c_str());
    for (const auto &v : ck.violations)
        std::printf("  %s\n", v.c_str());
    return 1;
}
