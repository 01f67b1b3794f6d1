/* Client ids and audiences, targeted and control records on the bus, and the registry:
 * counts, duplicate policies, reaping dead processes, the channel table's limits. */
#include "unit.h"

#include "sse/bus.h"
#include "sse/registry.h"
#include "sse/stream_open.h"

#include <csignal>
#include <set>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace sse;

namespace {

constexpr std::int64_t kT0 = 1700000000LL * 1000000;

struct Shared {
    void *mem = nullptr;
    std::size_t size = 0;
    explicit Shared(std::size_t n) : size(n)
    {
        mem = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        ck_assert(mem != MAP_FAILED);
    }
    ~Shared() { munmap(mem, size); }
};

Bus make_bus(Shared &m)
{
    ck_assert(Bus::format(m.mem, m.size, kT0).empty());
    std::string err;
    Bus b = Bus::attach(m.mem, m.size, &err);
    ck_assert_msg(b.valid(), "%s", err.c_str());
    return b;
}

Registry make_registry(Shared &m, std::uint32_t subs, std::uint32_t chans)
{
    ck_assert(Registry::format(m.mem, m.size, subs, chans).empty());
    std::string err;
    Registry r = Registry::attach(m.mem, m.size, &err);
    ck_assert_msg(r.valid(), "%s", err.c_str());
    return r;
}

EventFields data_event(const std::string &data)
{
    EventFields ev;
    ev.has_data = true;
    ev.data = data;
    return ev;
}

std::vector<std::string> datas(BusReader &r)
{
    std::vector<std::string> out;
    BusEvent e;
    while (r.next(&e) != BusReader::Next::None) {
        if (e.kind != RecordKind::Event) {
            out.push_back(e.kind == RecordKind::CloseChannels ? "<close>"
                          : e.kind == RecordKind::Gap           ? "<gap>"
                                                                : "<end>");
            continue;
        }
        std::size_t p = e.wire.find("data: ");
        out.push_back(e.wire.substr(p + 6, e.wire.find('\n', p) - p - 6));
    }
    return out;
}

std::string joined(const std::vector<std::string> &v)
{
    std::string s;
    for (const auto &x : v)
        s += (s.empty() ? "" : ",") + x;
    return s;
}

/* Names whose index home is the same cell (16 cells: max_channels up to 8). */
std::vector<std::string> colliding(std::size_t n)
{
    std::vector<std::string> out;
    const std::uint32_t home = ChannelSet::hash("n0") & 15;
    for (int i = 0; out.size() < n; ++i) {
        std::string name = "n" + std::to_string(i);
        if ((ChannelSet::hash(name) & 15) == home)
            out.push_back(name);
    }
    return out;
}

void die_at_slot_committed(RegistryPoint at)
{
    if (at == RegistryPoint::SlotCommitted)
        raise(SIGKILL);
}

void die_at_entry_written(RegistryPoint at)
{
    if (at == RegistryPoint::EntryWritten)
        raise(SIGKILL);
}

void die_at_join_locked(RegistryPoint at)
{
    if (at == RegistryPoint::JoinLocked)
        raise(SIGKILL);
}

void stop_at_join_locked(RegistryPoint at)
{
    if (at == RegistryPoint::JoinLocked)
        raise(SIGSTOP);
}

/* Runs `fn` in a child process, waits for it to end (killed or not), returns its pid. */
template <typename Fn> pid_t in_child(Fn fn)
{
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    ck_assert(waitpid(pid, nullptr, 0) == pid);
    return pid;
}

/* The bus and channel the hooks below publish to (a hook is a plain function). */
Bus *hook_bus = nullptr;
std::string hook_channel = "news";

/* A DELETE whose registry mark came just after the view read the channel open. */
void delete_after_view(RegistryPoint at)
{
    if (at == RegistryPoint::ViewRead)
        hook_bus->publish_control(RecordKind::CloseChannels, {hook_channel}, {}, "closed", kT0);
}

/* A join of the same client id (Replace) right after this join: it frees the slot just
 * committed (the first serial of a fresh registry) and publishes the EndStream. */
void replace_after_commit(RegistryPoint at)
{
    if (at != RegistryPoint::SlotCommitted)
        return;
    Audience target;
    target.only = {stream_target(1)};
    hook_bus->publish_control(RecordKind::EndStream, {"news"}, target, "replaced", kT0);
}

} // namespace

START_TEST(registry_join_keeps_the_entries_it_creates)
{
    /* bus.md 2: a full table, join([b, c]) of two new channels. Making room for c must not
     * drop b, which the slot being built already points at. */
    Shared m(Registry::bytes_needed(8, 2));
    Registry reg = make_registry(m, 8, 2);
    const int me = getpid();
    reg.note_publish({"a"}, -1, kT0);
    auto x = reg.join(me, "", "", {"x"}, DuplicatePolicy::Allow, kT0 + 1);
    auto j = reg.join(me, "", "", {"b", "c"}, DuplicatePolicy::Allow, kT0 + 2);
    ChannelInfo ci;
    if (j.outcome == Registry::Join::Outcome::Joined) {
        /* Every channel of a joined stream has an entry that counts it. */
        ck_assert_msg(reg.channel("b", &ci) && ci.subscribers == 1, "b: no entry counting it");
        ck_assert_msg(reg.channel("c", &ci) && ci.subscribers == 1, "c: no entry counting it");
    }
    ck_assert(j.outcome == Registry::Join::Outcome::TooManyChannels);
    ck_assert(reg.channel("x", &ci) && ci.subscribers == 1);
    ck_assert(reg.channel("a", &ci));
    ck_assert_int_eq(reg.totals().channels, 2);
    ck_assert_int_eq(reg.totals().subscribers, 1);
    /* Once x has no subscriber, both entries make room; the counts follow through churn. */
    ck_assert(reg.leave(x.slot, x.serial));
    j = reg.join(me, "", "", {"b", "c"}, DuplicatePolicy::Allow, kT0 + 3);
    ck_assert(j.outcome == Registry::Join::Outcome::Joined);
    for (int i = 0; i < 10; ++i) {
        auto k = reg.join(me, "", "", {"t" + std::to_string(i)}, DuplicatePolicy::Allow, kT0 + 4);
        ck_assert(k.outcome == Registry::Join::Outcome::TooManyChannels);
        reg.note_publish({"p" + std::to_string(i)}, -1, kT0 + 5);
    }
    ck_assert(reg.channel("b", &ci) && ci.subscribers == 1);
    ck_assert(reg.channel("c", &ci) && ci.subscribers == 1);
    ck_assert(reg.leave(j.slot, j.serial));
    ck_assert(reg.channel("b", &ci) && ci.subscribers == 0);
    ck_assert(reg.channel("c", &ci) && ci.subscribers == 0);
    ck_assert_int_eq(reg.totals().subscribers, 0);
}
END_TEST

START_TEST(registry_failed_replace_frees_nothing)
{
    /* bus.md 3: under Replace, a join that then fails for want of channel entries must leave
     * the older stream with its slot (it is never told to end). */
    Shared m(Registry::bytes_needed(8, 2));
    Registry reg = make_registry(m, 8, 2);
    const int me = getpid();
    auto bob = reg.join(me, "bob", "", {"x"}, DuplicatePolicy::Allow, kT0);
    auto carol = reg.join(me, "carol", "", {"a"}, DuplicatePolicy::Allow, kT0);
    auto alice = reg.join(me, "alice", "", {"a"}, DuplicatePolicy::Allow, kT0 + 1);
    auto again = reg.join(me, "alice", "", {"c"}, DuplicatePolicy::Replace, kT0 + 2);
    ck_assert(again.outcome == Registry::Join::Outcome::TooManyChannels);
    ck_assert_int_eq(again.replaced.size(), 0);
    ChannelInfo ci;
    ck_assert(reg.channel("a", &ci) && ci.subscribers == 2);
    ck_assert_int_eq(reg.totals().subscribers, 3);
    ck_assert(reg.join(me, "alice", "", {"a"}, DuplicatePolicy::Reject, kT0 + 3).outcome ==
              Registry::Join::Outcome::Duplicate);
    ck_assert(reg.leave(carol.slot, carol.serial));
    /* The entry the replaced stream leaves makes room: counted before anything is freed. */
    auto moved = reg.join(me, "alice", "", {"b"}, DuplicatePolicy::Replace, kT0 + 4);
    ck_assert(moved.outcome == Registry::Join::Outcome::Joined);
    ck_assert_int_eq(moved.replaced.size(), 1);
    ck_assert_uint_eq(moved.replaced[0].serial, alice.serial);
    ck_assert(!reg.channel("a", &ci));
    ck_assert(reg.channel("b", &ci) && ci.subscribers == 1);
    ck_assert(reg.leave(moved.slot, moved.serial) && reg.leave(bob.slot, bob.serial));
}
END_TEST

START_TEST(registry_killed_after_commit_keeps_the_slot_visible)
{
    /* bus.md 7: a joiner killed right after its slot went live: the slot must still be seen
     * (counted, reaped), whatever else it had not finished. */
    Shared m(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(m, 8, 4);
    pid_t child = in_child([&] {
        set_registry_test_hook(die_at_slot_committed);
        reg.join(getpid(), "k", "", {"room"}, DuplicatePolicy::Allow, kT0);
    });
    RegistryTotals t = reg.totals();
    ck_assert_int_eq(t.subscribers, 1);
    ck_assert_int_eq(t.processes.size(), 1);
    ck_assert_int_eq(t.processes[0].pid, child);
    reg.note_gone(child);
    auto freed = reg.reap_noted();
    ck_assert_int_eq(freed.size(), 1);
    assert_str(freed[0].client_id, "k");
    ChannelInfo ci;
    ck_assert(reg.channel("room", &ci) && ci.subscribers == 0);
}
END_TEST

START_TEST(registry_killed_while_writing_an_entry_keeps_probe_chains)
{
    /* bus.md 7: a locker killed while it reuses the place of a dropped entry at the head of
     * a probe chain must not cut the chain (the entries behind it would be lost, then
     * created twice). The hash index has no tombstones now: the next locker rebuilds it
     * from the entries (test_channel_table.c++ kills a holder at every kind of point). */
    Shared m(Registry::bytes_needed(8, 2));
    Registry reg = make_registry(m, 8, 2);
    const std::vector<std::string> n = colliding(3);
    const int me = getpid();
    reg.note_publish({n[0]}, -1, kT0);                                           /* home */
    auto b = reg.join(me, "", "", {n[1]}, DuplicatePolicy::Allow, kT0 + 1); /* behind it */
    in_child([&] {
        set_registry_test_hook(die_at_entry_written);
        reg.note_publish({n[2]}, -1, kT0 + 2); /* drops n0, reuses its place */
    });
    ChannelInfo ci;
    ck_assert_msg(reg.channel(n[1], &ci) && ci.subscribers == 1,
                  "the entry behind the reused place is lost");
    ck_assert(!reg.channel(n[0], &ci) && !reg.channel(n[2], &ci));
    ck_assert_int_eq(reg.totals().channels, 1);
    auto b2 = reg.join(me, "", "", {n[1]}, DuplicatePolicy::Allow, kT0 + 3);
    ck_assert(reg.channel(n[1], &ci) && ci.subscribers == 2);
    ck_assert_int_eq(reg.channels().size(), 1);
    reg.note_publish({n[2]}, -1, kT0 + 4);
    ck_assert(reg.channel(n[2], &ci) && ci.published == 1);
    ck_assert(reg.leave(b.slot, b.serial) && reg.leave(b2.slot, b2.serial));
}
END_TEST

START_TEST(registry_lock_of_a_killed_holder_is_recovered)
{
    /* A process killed while it holds the registry lock (SIGKILL inside join(), before it
     * changed anything): the next locker, in another process, gets the lock (it is robust;
     * without recovery this join would wait for ever: Check's timeout) and finds the counts
     * as they were, every time it happens. */
    Shared m(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(m, 8, 4);
    const int me = getpid();
    auto a = reg.join(me, "a", "", {"room"}, DuplicatePolicy::Allow, kT0);
    ck_assert(a.outcome == Registry::Join::Outcome::Joined);
    for (int round = 0; round < 3; ++round) {
        /* The killed holder might have been a replacing join: the recovery counts slots
         * taken, so that every stream's slot is looked at again. */
        const std::uint64_t taken = reg.slots_taken();
        int st = 0;
        pid_t child = fork();
        ck_assert(child >= 0);
        if (child == 0) {
            set_registry_test_hook(die_at_join_locked);
            reg.join(getpid(), "k", "", {"room"}, DuplicatePolicy::Allow, kT0 + 1);
            _exit(0); /* not reached: killed holding the lock */
        }
        ck_assert(waitpid(child, &st, 0) == child);
        ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the child was not killed in join()");
        auto b = reg.join(me, "b" + std::to_string(round), "", {"room"}, DuplicatePolicy::Allow,
                          kT0 + 2);
        ck_assert(b.outcome == Registry::Join::Outcome::Joined);
        ck_assert(reg.slots_taken() != taken);
        ChannelInfo ci;
        ck_assert(reg.channel("room", &ci) && ci.subscribers == 2);
        ck_assert_int_eq(reg.totals().subscribers, 2);
        ck_assert(reg.leave(b.slot, b.serial));
    }
    ck_assert(reg.leave(a.slot, a.serial));
    ck_assert_int_eq(reg.totals().subscribers, 0);
}
END_TEST

START_TEST(registry_parent_never_waits_for_a_stopped_holder)
{
    /* bus.md 8: the parent reports a dead child while another child, stopped (SIGSTOP), holds
     * the lock. The report must return (the old reap(pid) waited here for ever: Check's
     * timeout); the slots are freed once a locker gets through. */
    Shared m(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(m, 8, 4);
    pid_t dead = fork();
    if (dead == 0) {
        reg.join(getpid(), "d1", "", {"room"}, DuplicatePolicy::Allow, kT0);
        reg.join(getpid(), "d2", "", {"room"}, DuplicatePolicy::Allow, kT0);
        _exit(0);
    }
    ck_assert(waitpid(dead, nullptr, 0) == dead);
    pid_t holder = fork();
    if (holder == 0) {
        set_registry_test_hook(stop_at_join_locked);
        reg.join(getpid(), "h", "", {"room"}, DuplicatePolicy::Allow, kT0);
        _exit(0);
    }
    int st = 0;
    ck_assert(waitpid(holder, &st, WUNTRACED) == holder && WIFSTOPPED(st));
    reg.note_gone(dead); /* returns although the lock is held */
    /* A child's periodic reaping does not wait either: the note stays for later. */
    ck_assert_int_eq(reg.reap_noted().size(), 0);
    kill(holder, SIGCONT);
    ck_assert(waitpid(holder, &st, 0) == holder && WIFEXITED(st));
    /* The holder's join, once it went on, freed the dead child's two slots. */
    RegistryTotals t = reg.totals();
    ck_assert_int_eq(t.subscribers, 1);
    ck_assert_int_eq(t.processes[0].pid, holder);
    reg.note_gone(holder);
    auto freed = reg.reap_noted();
    ck_assert_int_eq(freed.size(), 1);
    assert_str(freed[0].client_id, "h");
    ck_assert_int_eq(reg.totals().subscribers, 0);
    ck_assert_int_eq(reg.reap_noted().size(), 0);
}
END_TEST

START_TEST(registry_noted_pids_spare_a_later_process)
{
    /* A pid noted gone and used again by a new process: its new streams stay. */
    Shared m(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(m, 8, 4);
    const int me = getpid();
    auto old = reg.join(me, "", "", {"a"}, DuplicatePolicy::Allow, kT0);
    reg.note_gone(me);
    auto later = reg.join(me, "", "", {"a"}, DuplicatePolicy::Allow, kT0 + 1);
    ck_assert_int_eq(later.reaped.size(), 1); /* a join drains the notes */
    ck_assert_uint_eq(later.reaped[0].serial, old.serial);
    ck_assert_int_eq(reg.totals().subscribers, 1);
    /* More notes than cells: the rest is reaped by looking for dead processes. */
    pid_t gone = fork();
    if (gone == 0) {
        reg.join(getpid(), "", "", {"a"}, DuplicatePolicy::Allow, kT0);
        _exit(0);
    }
    ck_assert(waitpid(gone, nullptr, 0) == gone);
    for (int i = 0; i < 64; ++i)
        reg.note_gone(1); /* holds no stream */
    reg.note_gone(gone);
    auto freed = reg.reap_noted();
    ck_assert_int_eq(freed.size(), 1);
    ck_assert_int_eq(freed[0].pid, gone);
    ck_assert(reg.leave(later.slot, later.serial));
}
END_TEST

START_TEST(audience_rules_and_client_ids)
{
    Audience a;
    ck_assert(a.everyone() && a.admits("") && a.admits("x"));
    Audience::append_list("alice, bob,,alice", a.only);
    assert_str(joined(a.only), "alice,bob");
    ck_assert(a.admits("alice") && a.admits("bob"));
    ck_assert(!a.admits("carol") && !a.admits(""));
    a.except.push_back("bob");
    ck_assert(a.admits("alice") && !a.admits("bob"));
    Audience e;
    e.except = {"alice"};
    ck_assert(!e.admits("alice") && e.admits("bob") && e.admits(""));
    ck_assert(validate_client_id("user@example.org").empty());
    ck_assert(!validate_client_id("").empty());
    ck_assert(!validate_client_id("a,b").empty());
    ck_assert(!validate_client_id("a b").empty());
    ck_assert(!validate_client_id(std::string(129, 'x')).empty());
    ck_assert(!validate_client_id("\xff").empty());
    Audience big;
    for (int i = 0; i < 1001; ++i)
        big.only.push_back("c" + std::to_string(i));
    ck_assert(!big.validate().empty());
    /* The indexed matcher agrees with admits() on small and large lists. */
    big.except = {"c7", "zed"};
    for (const Audience *aud : {&a, &e, &big}) {
        AudienceMatcher m(*aud);
        for (const char *id : {"", "alice", "bob", "carol", "c7", "c8", "c1000", "zed", "c1001"})
            ck_assert_msg(m.admits(id) == aud->admits(id), "matcher differs for \"%s\"", id);
    }
}
END_TEST

START_TEST(targeted_events_live_and_in_replay)
{
    Shared m(1 << 20);
    Bus bus = make_bus(m);
    BusReader alice(bus, ChannelSet({"room"}), "alice");
    BusReader bob(bus, ChannelSet({"room"}), "bob");
    BusReader anon(bus, ChannelSet({"room"}));
    alice.start_live();
    bob.start_live();
    anon.start_live();
    Audience only_alice, not_alice;
    only_alice.only = {"alice"};
    not_alice.except = {"alice"};
    auto first = bus.publish({"room"}, data_event("all"), kT0);
    bus.publish({"room"}, data_event("for-alice"), kT0, only_alice);
    bus.publish({"room"}, data_event("not-alice"), kT0, not_alice);
    assert_str(joined(datas(alice)), "all,for-alice");
    assert_str(joined(datas(bob)), "all,not-alice");
    assert_str(joined(datas(anon)), "all,not-alice");
    /* Replay keeps the audience: bob resuming after the first event gets only his. */
    BusReader bob2(bus, ChannelSet({"room"}), "bob");
    ck_assert(bob2.start_after(first.id, HistoryLimits(), kT0));
    assert_str(joined(datas(bob2)), "not-alice");
    /* A targeted event's id is a position for everyone: alice's id resumes bob too. */
    BusReader bob3(bus, ChannelSet({"room"}), "bob");
    ck_assert(bob3.start_after(std::to_string(first.seq + 1), HistoryLimits(), kT0));
    assert_str(joined(datas(bob3)), "not-alice");
}
END_TEST

START_TEST(closing_a_channel_drops_its_history)
{
    Shared m(1 << 20);
    Bus bus = make_bus(m);
    BusReader live(bus, ChannelSet({"a"}));
    live.start_live();
    auto first = bus.publish({"a"}, data_event("a1"), kT0);
    bus.publish({"a", "b"}, data_event("ab"), kT0);
    bus.publish({"b"}, data_event("b1"), kT0);
    bus.publish_control(RecordKind::CloseChannels, {"a"}, {}, "event: sse-close\ndata: {}\n\n", kT0);
    bus.publish({"a"}, data_event("a2"), kT0);
    assert_str(joined(datas(live)), "a1,ab,<close>,a2");
    /* Replay: a's events before the close are gone; b keeps the shared event. */
    BusReader ra(bus, ChannelSet({"a"}));
    ck_assert(ra.start_after(first.id, HistoryLimits(), kT0));
    assert_str(joined(datas(ra)), "a2");
    BusReader rb(bus, ChannelSet({"b"}));
    ck_assert(!rb.start_after("unknown", HistoryLimits(), kT0));
    assert_str(joined(datas(rb)), "ab,b1");
    Bus::ChannelHistory ha = bus.channel_history("a");
    ck_assert_int_eq(ha.retained, 1);
    Bus::ChannelHistory hb = bus.channel_history("b");
    ck_assert_int_eq(hb.retained, 2);
    ck_assert_int_eq(bus.channel_history("none").retained, 0);
    /* EndStream records reach the readers of their channels and carry their targets. */
    Audience who;
    who.only = {"17"};
    bus.publish_control(RecordKind::EndStream, {"a"}, who, "bye", kT0);
    BusEvent e;
    ck_assert(live.next(&e) == BusReader::Next::Event);
    ck_assert(e.kind == RecordKind::EndStream);
    assert_str(joined(e.audience.only), "17");
    assert_str(e.wire, "bye");
}
END_TEST

START_TEST(registry_counts_and_duplicates)
{
    Shared m(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(m, 8, 4);
    const int me = getpid();
    auto j1 = reg.join(me, "alice", "10.0.0.1", {"a", "b"}, DuplicatePolicy::Allow, kT0);
    auto j2 = reg.join(me, "alice", "10.0.0.2", {"a"}, DuplicatePolicy::Allow, kT0);
    ck_assert(j1.outcome == Registry::Join::Outcome::Joined);
    ck_assert(j2.outcome == Registry::Join::Outcome::Joined);
    ck_assert(j1.serial != j2.serial);
    ChannelInfo ci;
    ck_assert(reg.channel("a", &ci) && ci.subscribers == 2);
    ck_assert(reg.channel("b", &ci) && ci.subscribers == 1);
    ck_assert(!reg.channel("c", &ci));
    auto dup = reg.join(me, "alice", "x", {"a"}, DuplicatePolicy::Reject, kT0);
    ck_assert(dup.outcome == Registry::Join::Outcome::Duplicate);
    /* Joins that take no live slot leave the count of slots taken as it was. */
    const std::uint64_t taken = reg.slots_taken();
    auto rep = reg.join(me, "alice", "x", {"a"}, DuplicatePolicy::Replace, kT0);
    ck_assert(rep.outcome == Registry::Join::Outcome::Joined);
    ck_assert_int_eq(rep.replaced.size(), 2);
    ck_assert(reg.slots_taken() != taken);
    const std::uint64_t after_replace = reg.slots_taken();
    auto first = reg.join(me, "bob", "x", {"a"}, DuplicatePolicy::Replace, kT0);
    ck_assert(first.outcome == Registry::Join::Outcome::Joined && first.replaced.empty());
    ck_assert(reg.leave(first.slot, first.serial));
    ck_assert_int_eq(reg.slots_taken(), after_replace);
    ck_assert(reg.channel("a", &ci) && ci.subscribers == 1);
    ck_assert(reg.channel("b", &ci) && ci.subscribers == 0);
    /* Leaving a replaced stream is a no-op; leaving the live one frees it once. */
    ck_assert(!reg.leave(j1.slot, j1.serial));
    SubscriberInfo gone;
    ck_assert(reg.leave(rep.slot, rep.serial, &gone));
    assert_str(gone.client_id, "alice");
    assert_str(joined(gone.channels), "a");
    ck_assert(!reg.leave(rep.slot, rep.serial));
    ck_assert_int_eq(reg.totals().subscribers, 0);
    /* Full. */
    for (int i = 0; i < 8; ++i)
        ck_assert(reg.join(me, "", "", {"a"}, DuplicatePolicy::Allow, kT0).outcome ==
                  Registry::Join::Outcome::Joined);
    ck_assert(reg.join(me, "", "", {"a"}, DuplicatePolicy::Allow, kT0).outcome ==
              Registry::Join::Outcome::Full);
    RegistryTotals t = reg.totals();
    ck_assert_int_eq(t.subscribers, 8);
    ck_assert_int_eq(t.processes.size(), 1);
    ck_assert_int_eq(t.processes[0].pid, me);
    reg.note_gone(me);
    ck_assert_int_eq(reg.reap_noted().size(), 8);
    ck_assert(reg.channel("a", &ci) && ci.subscribers == 0);
}
END_TEST

START_TEST(registry_channel_table_and_publish_state)
{
    Shared m(Registry::bytes_needed(8, 2));
    Registry reg = make_registry(m, 8, 2);
    reg.note_publish({"a"}, -1, kT0);
    reg.note_publish({"a"}, 3000, kT0 + 1);
    ChannelInfo ci;
    ck_assert(reg.channel("a", &ci) && ci.published == 2 && ci.retry_ms == 3000);
    bool closed;
    std::int64_t retry;
    reg.subscribe_view({"a", "x"}, &closed, &retry);
    ck_assert(!closed && retry == 3000);
    ck_assert_int_eq(reg.close_channels({"a", "never"}, kT0 + 2).size(), 1);
    reg.subscribe_view({"a"}, &closed, &retry);
    ck_assert(closed && retry == -1);
    reg.note_publish({"a"}, -1, kT0 + 3);
    reg.subscribe_view({"a"}, &closed, &retry);
    ck_assert(!closed);
    /* Two channels fit; a third drops the least recently used one without subscribers. */
    auto j = reg.join(getpid(), "", "", {"a"}, DuplicatePolicy::Allow, kT0 + 4);
    reg.note_publish({"b"}, -1, kT0 + 5);
    reg.note_publish({"c"}, -1, kT0 + 6);
    ck_assert(reg.channel("a", &ci) && ci.subscribers == 1);
    ck_assert(!reg.channel("b", &ci));
    ck_assert(reg.channel("c", &ci));
    /* Both entries in use by subscribers: a new channel has no room. */
    auto j2 = reg.join(getpid(), "", "", {"c"}, DuplicatePolicy::Allow, kT0 + 7);
    ck_assert(reg.join(getpid(), "", "", {"d"}, DuplicatePolicy::Allow, kT0 + 8).outcome ==
              Registry::Join::Outcome::TooManyChannels);
    ck_assert_int_eq(reg.totals().dropped_channels, 1);
    ck_assert(reg.leave(j.slot, j.serial) && reg.leave(j2.slot, j2.serial));
}
END_TEST

/* Slots come from the free stack (freed ones) or, when it is empty, from above the high-water
 * mark (never used, zero as format() left them): each live stream has its own, and the
 * registry is full only when both are exhausted. */
START_TEST(registry_slots_taken_lazily_are_distinct)
{
    Shared m(Registry::bytes_needed(6, 4));
    Registry reg = make_registry(m, 6, 4);
    const int me = getpid();
    std::vector<Registry::Join> live;
    for (int i = 0; i < 4; ++i)
        live.push_back(reg.join(me, "", "", {"a"}, DuplicatePolicy::Allow, kT0));
    ck_assert(reg.leave(live[1].slot, live[1].serial));
    ck_assert(reg.leave(live[2].slot, live[2].serial));
    live.erase(live.begin() + 1, live.begin() + 3);
    for (int i = 0; i < 4; ++i) { /* 2 freed ones, then the 2 never used */
        Registry::Join j = reg.join(me, "", "", {"a"}, DuplicatePolicy::Allow, kT0);
        ck_assert(j.outcome == Registry::Join::Outcome::Joined);
        live.push_back(j);
    }
    std::set<std::uint32_t> slots;
    for (const auto &j : live)
        slots.insert(j.slot);
    ck_assert_int_eq(slots.size(), 6);
    ck_assert(*slots.rbegin() == 5);
    ck_assert(reg.join(me, "", "", {"a"}, DuplicatePolicy::Allow, kT0).outcome ==
              Registry::Join::Outcome::Full);
    ck_assert_int_eq(reg.totals().subscribers, 6);
    for (const auto &j : live)
        ck_assert(reg.leave(j.slot, j.serial));
    ck_assert_int_eq(reg.totals().subscribers, 0);
}
END_TEST

START_TEST(registry_reaps_a_killed_process)
{
    Shared m(Registry::bytes_needed(64, 8));
    Registry reg = make_registry(m, 64, 8);
    int ready[2];
    ck_assert(pipe(ready) == 0);
    pid_t child = fork();
    if (child == 0) {
        for (int i = 0; i < 5; ++i)
            reg.join(getpid(), "c" + std::to_string(i), "127.0.0.1", {"room"},
                     DuplicatePolicy::Reject, kT0);
        (void)!write(ready[1], "x", 1);
        pause();
        _exit(0);
    }
    char c;
    ck_assert(read(ready[0], &c, 1) == 1);
    auto mine = reg.join(getpid(), "parent", "", {"room"}, DuplicatePolicy::Allow, kT0);
    ChannelInfo ci;
    ck_assert(reg.channel("room", &ci) && ci.subscribers == 6);
    /* While the child lives its ids are taken. */
    ck_assert(reg.join(getpid(), "c0", "", {"room"}, DuplicatePolicy::Reject, kT0).outcome ==
              Registry::Join::Outcome::Duplicate);
    ck_assert_int_eq(reg.reap_dead().size(), 0);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    /* A reject-policy join finds the dead holder and frees it on the way. */
    auto again = reg.join(getpid(), "c0", "", {"room"}, DuplicatePolicy::Reject, kT0);
    ck_assert(again.outcome == Registry::Join::Outcome::Joined);
    ck_assert_int_eq(again.reaped.size(), 1);
    auto reaped = reg.reap_dead();
    ck_assert_int_eq(reaped.size(), 4);
    ck_assert_int_eq(reaped[0].pid, child);
    assert_str(joined(reaped[0].channels), "room");
    ck_assert(reg.channel("room", &ci) && ci.subscribers == 2);
    ck_assert(reg.leave(mine.slot, mine.serial) && reg.leave(again.slot, again.serial));
    ck_assert_int_eq(reg.totals().subscribers, 0);
    close(ready[0]);
    close(ready[1]);
}
END_TEST

START_TEST(registry_notes_are_kept_listed_and_given_back)
{
    /* A slot's note (sse/registry.h): listed by noted() in every process while the stream
     * lives, given back by leave(), by a replacing join and by the reap of a dead process;
     * a note over kMaxSlotNoteBytes is refused before anything changes. */
    Shared m(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(m, 8, 4);
    const std::string longest(kMaxSlotNoteBytes, 'n');
    auto a = reg.join(getpid(), "", "", {"x"}, DuplicatePolicy::Allow, kT0, "note a");
    auto plain = reg.join(getpid(), "", "", {"x"}, DuplicatePolicy::Allow, kT0);
    auto b = reg.join(getpid(), "b", "", {"x"}, DuplicatePolicy::Replace, kT0, longest);
    try {
        reg.join(getpid(), "", "", {"x"}, DuplicatePolicy::Allow, kT0, longest + "n");
        ck_abort_msg("a note over kMaxSlotNoteBytes was taken");
    } catch (const std::invalid_argument &) {
    }
    ck_assert_int_eq(reg.totals().subscribers, 3);
    auto listed = reg.noted();
    ck_assert_int_eq(listed.size(), 2);
    assert_str(listed[0].note, "note a");
    assert_str(listed[1].note, longest);
    SubscriberInfo out;
    ck_assert(reg.leave(a.slot, a.serial, &out));
    assert_str(out.note, "note a");
    /* A freed slot taken again without a note has none. */
    auto c = reg.join(getpid(), "", "", {"x"}, DuplicatePolicy::Allow, kT0);
    ck_assert_int_eq(c.slot, a.slot);
    ck_assert_int_eq(reg.noted().size(), 1);
    auto b2 = reg.join(getpid(), "b", "", {"x"}, DuplicatePolicy::Replace, kT0, "b again");
    ck_assert_int_eq(b2.replaced.size(), 1);
    assert_str(b2.replaced[0].note, longest);
    /* Another process's notes are listed, and given back when it dies. */
    int ready[2];
    ck_assert(pipe(ready) == 0);
    pid_t child = fork();
    if (child == 0) {
        reg.join(getpid(), "", "", {"x"}, DuplicatePolicy::Allow, kT0, "child's");
        (void)!write(ready[1], "x", 1);
        pause();
        _exit(0);
    }
    char ch;
    ck_assert(read(ready[0], &ch, 1) == 1);
    listed = reg.noted();
    ck_assert_int_eq(listed.size(), 2);
    ck_assert(listed[0].note == "child's" || listed[1].note == "child's");
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    auto reaped = reg.reap_dead();
    ck_assert_int_eq(reaped.size(), 1);
    assert_str(reaped[0].note, "child's");
    listed = reg.noted();
    ck_assert_int_eq(listed.size(), 1);
    assert_str(listed[0].note, "b again");
    ck_assert(reg.leave(plain.slot, plain.serial) && reg.leave(c.slot, c.serial) &&
              reg.leave(b2.slot, b2.serial));
    ck_assert(!reg.leave(b.slot, b.serial));
    close(ready[0]);
    close(ready[1]);
}
END_TEST

START_TEST(open_stream_sees_a_delete_after_its_view)
{
    /* bus.md 4: a DELETE that the registry view missed must reach the stream on the bus,
     * live or resuming, with a slot (HTTP) or without (socket subscriber). */
    Shared mb(1 << 20);
    Bus bus = make_bus(mb);
    Shared mr(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(mr, 8, 4);
    hook_bus = &bus;
    set_registry_test_hook(delete_after_view);
    for (bool join : {false, true}) {
        for (bool resume : {false, true}) {
            hook_channel = "news" + std::to_string(join) + std::to_string(resume);
            auto first = bus.publish({hook_channel}, data_event("e1"), kT0);
            bus.publish({hook_channel}, data_event("e2"), kT0);
            StreamRequest req;
            req.channels = {hook_channel};
            req.join = join;
            req.pid = getpid();
            req.resume_id = resume ? first.id : "";
            OpenedStream o = open_stream(bus, reg, req, HistoryLimits(), kT0);
            ck_assert(o.outcome == OpenedStream::Outcome::Open && o.resume_found);
            const std::string got = joined(datas(o.reader));
            ck_assert_msg(got == (resume ? "e2,<close>" : "<close>"),
                          "join %d, resume %d: got \"%s\"", join, resume, got.c_str());
        }
    }
    set_registry_test_hook(nullptr);
    ck_assert_int_eq(reg.totals().subscribers, 2);
}
END_TEST

START_TEST(open_stream_on_a_closed_channel_takes_no_slot)
{
    /* A subscribe to a channel closed by DELETE is answered 204: it must not take (or seem to
     * take) a slot, or its caller would announce a connect with no disconnect to follow. */
    Shared mb(1 << 20);
    Bus bus = make_bus(mb);
    Shared mr(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(mr, 8, 4);
    reg.note_publish({"doomed"}, -1, kT0);
    ck_assert_int_eq(reg.close_channels({"doomed"}, kT0).size(), 1);
    StreamRequest req;
    req.channels = {"doomed"};
    req.client_id = "zed";
    req.pid = getpid();
    OpenedStream o = open_stream(bus, reg, req, HistoryLimits(), kT0);
    ck_assert(o.outcome == OpenedStream::Outcome::Closed);
    ck_assert_msg(!o.join.has_value(), "a closed channel's subscribe reports a join");
    ck_assert_int_eq(reg.totals().subscribers, 0);
}
END_TEST

START_TEST(open_stream_resume_from_before_a_gap_is_told_missed)
{
    /* A Redis reader's gap (a Gap record: entries lost or trimmed unread) between the resumed
     * event and the position: the held events after the event, and the missed notice, and
     * the Gap record is not read again live (one notice); from an event after it, as usual.
     * Publisher ids and bus ids alike. */
    Shared mb(1 << 20);
    Bus bus = make_bus(mb);
    Shared mr(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(mr, 8, 4);
    EventFields given = data_event("e1");
    given.id = "given-1";
    bus.publish({"news"}, given, kT0);
    auto before = bus.publish({"news"}, data_event("e2"), kT0);
    bus.publish_gap("gap notice", kT0);
    auto after = bus.publish({"news"}, data_event("e3"), kT0);
    bus.publish({"news"}, data_event("e4"), kT0);
    StreamRequest req;
    req.channels = {"news"};
    req.join = false;
    struct Case { std::string id; bool found; const char *got; };
    for (const Case &c : {Case{"given-1", false, "e2,e3,e4"}, Case{before.id, false, "e3,e4"},
                          Case{after.id, true, "e4"}}) {
        req.resume_id = c.id;
        OpenedStream o = open_stream(bus, reg, req, HistoryLimits(), kT0);
        ck_assert_msg(o.resume_found == c.found, "resume from %s", c.id.c_str());
        assert_str(joined(datas(o.reader)), c.got);
    }
    /* A gap after the position comes live, after what was queued, once. */
    req.resume_id = after.id;
    OpenedStream open = open_stream(bus, reg, req, HistoryLimits(), kT0);
    ck_assert(open.resume_found);
    bus.publish_gap("gap notice", kT0);
    bus.publish({"news"}, data_event("e5"), kT0);
    assert_str(joined(datas(open.reader)), "e4,<gap>,e5");
}
END_TEST

START_TEST(a_replacer_killed_before_its_endstream_leaves_the_old_slot_not_held)
{
    /* A replacing process killed between its join (the older stream's slot freed) and the
     * EndStream publish: no record ever tells the older stream, so the stream learns it from
     * holds() on its tick (found by review: before holds() it streamed on without a slot, and
     * a later Reject join of the same id was accepted beside it). */
    Shared mb(1 << 20);
    Bus bus = make_bus(mb);
    Shared mr(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(mr, 8, 4);
    StreamRequest req;
    req.channels = {"news"};
    req.client_id = "X";
    req.policy = DuplicatePolicy::Replace;
    req.pid = getpid();
    OpenedStream old = open_stream(bus, reg, req, HistoryLimits(), kT0);
    ck_assert(old.outcome == OpenedStream::Outcome::Open);
    ck_assert(reg.holds(old.join->slot, old.join->serial));
    ck_assert(!reg.holds(old.join->slot, old.join->serial + 1));
    ck_assert(!reg.holds(1000, old.join->serial));

    const std::uint64_t taken = reg.slots_taken();
    pid_t replacer = in_child([&] {
        set_registry_test_hook(die_at_slot_committed);
        StreamRequest again = req;
        again.pid = getpid();
        open_stream(bus, reg, again, HistoryLimits(), kT0);
    });
    BusEvent e;
    ck_assert(old.reader.next(&e) == BusReader::Next::None); /* no EndStream came */
    ck_assert_msg(!reg.holds(old.join->slot, old.join->serial),
                  "the replaced stream still seems to hold its slot");
    ck_assert(reg.slots_taken() != taken); /* what makes a hub look at its streams' slots */
    reg.note_gone(replacer);
    reg.reap_noted();
    ck_assert(!reg.holds(old.join->slot, old.join->serial));
}
END_TEST

START_TEST(open_stream_sees_a_replace_after_its_join)
{
    /* bus.md 4: the EndStream of a join that replaced this stream right after its own join
     * must reach it. */
    Shared mb(1 << 20);
    Bus bus = make_bus(mb);
    Shared mr(Registry::bytes_needed(8, 4));
    Registry reg = make_registry(mr, 8, 4);
    StreamRequest req;
    req.channels = {"news"};
    req.client_id = "alice";
    req.policy = DuplicatePolicy::Replace;
    req.pid = getpid();
    hook_bus = &bus;
    set_registry_test_hook(replace_after_commit);
    OpenedStream o = open_stream(bus, reg, req, HistoryLimits(), kT0);
    set_registry_test_hook(nullptr);
    ck_assert(o.outcome == OpenedStream::Outcome::Open);
    ck_assert_uint_eq(o.join->serial, 1);
    BusEvent e;
    ck_assert(o.reader.next(&e) == BusReader::Next::Event);
    ck_assert(e.kind == RecordKind::EndStream && names_stream(e, o.join->serial));
    /* The real thing: a second stream of alice replaces the first and tells it. */
    OpenedStream o2 = open_stream(bus, reg, req, HistoryLimits(), kT0);
    ck_assert(o2.outcome == OpenedStream::Outcome::Open);
    ck_assert_int_eq(o2.join->replaced.size(), 1);
    ck_assert(o.reader.next(&e) == BusReader::Next::Event);
    ck_assert(e.kind == RecordKind::EndStream && names_stream(e, o.join->serial));
    ck_assert(o2.reader.next(&e) == BusReader::Next::Event && !names_stream(e, o2.join->serial));
    /* A replace that fails (no channel entry) frees nothing and tells nobody. */
    req.channels = {"n1", "n2", "n3", "n4", "n5"};
    const std::uint64_t published = bus.stats().published;
    OpenedStream o3 = open_stream(bus, reg, req, HistoryLimits(), kT0);
    ck_assert(o3.outcome == OpenedStream::Outcome::TooManyChannels);
    ck_assert_uint_eq(bus.stats().published, published);
    ck_assert_int_eq(reg.totals().subscribers, 1);
}
END_TEST

Suite *registry_suite()
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, audience_rules_and_client_ids);
    tcase_add_test(tc, targeted_events_live_and_in_replay);
    tcase_add_test(tc, closing_a_channel_drops_its_history);
    tcase_add_test(tc, registry_counts_and_duplicates);
    tcase_add_test(tc, registry_channel_table_and_publish_state);
    tcase_add_test(tc, registry_reaps_a_killed_process);
    tcase_add_test(tc, registry_slots_taken_lazily_are_distinct);
    tcase_add_test(tc, registry_join_keeps_the_entries_it_creates);
    tcase_add_test(tc, registry_failed_replace_frees_nothing);
    tcase_add_test(tc, registry_killed_after_commit_keeps_the_slot_visible);
    tcase_add_test(tc, registry_killed_while_writing_an_entry_keeps_probe_chains);
    tcase_add_test(tc, registry_lock_of_a_killed_holder_is_recovered);
    tcase_add_test(tc, registry_parent_never_waits_for_a_stopped_holder);
    tcase_add_test(tc, registry_noted_pids_spare_a_later_process);
    tcase_add_test(tc, registry_notes_are_kept_listed_and_given_back);
    tcase_add_test(tc, open_stream_sees_a_delete_after_its_view);
    tcase_add_test(tc, open_stream_sees_a_replace_after_its_join);
    tcase_add_test(tc, open_stream_on_a_closed_channel_takes_no_slot);
    tcase_add_test(tc, open_stream_resume_from_before_a_gap_is_told_missed);
    tcase_add_test(tc, a_replacer_killed_before_its_endstream_leaves_the_old_slot_not_held);
    suite_add_tcase(s, tc);
    return s;
}
