/* sse::send_last(): the count it returns is what the socket took, a part included (the
 * hub adds it to the stream's SSE_BYTES and %B). Sizes are not assumed: the test fills a
 * socket pair until the kernel refuses, frees some room, and compares with what the peer
 * reads. */
#include "unit.h"

#include "sse/send_last.h"

#include <cerrno>
#include <fcntl.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace {

struct Pair {
    int w = -1, r = -1;
    Pair()
    {
        int fds[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
        w = fds[0];
        r = fds[1];
        ck_assert_int_eq(fcntl(r, F_SETFL, fcntl(r, F_GETFL) | O_NONBLOCK), 0);
    }
    ~Pair()
    {
        close(w);
        close(r);
    }
    /* Writes until the socket takes no more; returns the bytes written. */
    std::size_t fill() const
    {
        const std::string chunk(4096, 'f');
        std::size_t total = 0;
        for (;;) {
            ssize_t n = send(w, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
                return total;
            }
            total += static_cast<std::size_t>(n);
        }
    }
    /* Reads up to `most` bytes now; returns how many. */
    std::size_t drain(std::size_t most) const
    {
        char buf[4096];
        std::size_t total = 0;
        while (total < most) {
            ssize_t n = read(r, buf, std::min(sizeof buf, most - total));
            if (n <= 0)
                break;
            total += static_cast<std::size_t>(n);
        }
        return total;
    }
};

START_TEST(all_of_it_when_there_is_room)
{
    Pair p;
    const std::string last = "retry: 2000\n\n";
    ck_assert_uint_eq(sse::send_last(p.w, last), last.size());
    ck_assert_uint_eq(p.drain(1 << 20), last.size());
}
END_TEST

START_TEST(nothing_to_a_full_socket_an_empty_piece_or_no_socket)
{
    Pair p;
    p.fill();
    ck_assert_uint_eq(sse::send_last(p.w, "retry: 2000\n\n"), 0);
    ck_assert_uint_eq(sse::send_last(p.w, ""), 0);
    ck_assert_uint_eq(sse::send_last(-1, "retry: 2000\n\n"), 0);
}
END_TEST

START_TEST(a_partial_send_counts_what_was_taken)
{
    Pair p;
    const std::size_t filled = p.fill();
    /* Room for part of a piece larger than the whole socket buffer (what fill() wrote). */
    const std::size_t freed = p.drain(filled / 2);
    ck_assert_uint_gt(freed, 0);
    const std::string last(2 * filled + 1, 'x');
    const std::size_t sent = sse::send_last(p.w, last);
    ck_assert_uint_gt(sent, 0);
    ck_assert_uint_lt(sent, last.size());
    close(p.w);
    p.w = -1;
    /* Reading the rest of the fill, then exactly what send_last() said it wrote. */
    ck_assert_uint_eq(p.drain(filled * 4 + last.size()), filled - freed + sent);
}
END_TEST

} // namespace

Suite *send_last_suite()
{
    Suite *s = suite_create("send_last");
    TCase *tc = tcase_create("counts");
    tcase_add_test(tc, all_of_it_when_there_is_room);
    tcase_add_test(tc, nothing_to_a_full_socket_an_empty_piece_or_no_socket);
    tcase_add_test(tc, a_partial_send_counts_what_was_taken);
    suite_add_tcase(s, tc);
    return s;
}
