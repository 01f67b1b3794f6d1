/* The last bytes of an ending stream (see sse/send_last.h). */
#include "sse/send_last.h"

#include <sys/socket.h>

namespace sse {

std::size_t send_last(int fd, const std::string &bytes)
{
    if (fd < 0 || bytes.empty())
        return 0;
    const ssize_t w = send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    return w > 0 ? static_cast<std::size_t>(w) : 0;
}

} // namespace sse
