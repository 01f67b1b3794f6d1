/* sse/send_last.h — the last bytes of a stream that is ending, written to its socket without
 * waiting (the async hub's end_with(): a `retry:` at a restart, before the descriptor is
 * closed or the connection ended). */
#ifndef SSE_SEND_LAST_H
#define SSE_SEND_LAST_H

#include <cstddef>
#include <string>

namespace sse {

/* One send() of `bytes` to the socket `fd`, without waiting and without SIGPIPE. Returns the
 * bytes the socket took: all of them, part (a socket with less room: the rest is dropped,
 * and a client that reads an unfinished event before EOF discards it), or 0 (nothing taken:
 * a full socket, a failed connection, fd < 0, `bytes` empty). Nothing is retried: the
 * caller ends the stream next. */
std::size_t send_last(int fd, const std::string &bytes);

} // namespace sse

#endif
