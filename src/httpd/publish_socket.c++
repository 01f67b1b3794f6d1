/* The publish socket's listening end and the supervision of its daemon (see the header). */
#include "src/httpd/publish_socket.h"
#include "src/httpd/redis_cluster_state.h"

#include "ap_mpm.h"
#include "http_core.h"
#include "mpm_common.h"
#include "unixd.h"

#include "apr_strings.h"
#include "apr_thread_proc.h"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

APLOG_USE_MODULE(sse);

namespace sse::httpd {

namespace {

constexpr const char *kSocketUserdataKey = "mod_sse_publish_socket";

/* What the process pool keeps across generations: "<fd> <path>", a plain string so that a
 * newer module version can read what an older one left. */
struct KeptSocket {
    int fd = -1;
    std::string path;
};

KeptSocket kept_socket(server_rec *s)
{
    void *data = nullptr;
    apr_pool_userdata_get(&data, kSocketUserdataKey, s->process->pool);
    KeptSocket k;
    if (data) {
        const char *text = static_cast<const char *>(data);
        char *end = nullptr;
        k.fd = static_cast<int>(strtol(text, &end, 10));
        if (end && *end == ' ')
            k.path = end + 1;
        if (fcntl(k.fd, F_GETFD) < 0)
            k.fd = -1;
    }
    return k;
}

void forget_kept_socket(server_rec *s)
{
    apr_pool_userdata_set(nullptr, kSocketUserdataKey, apr_pool_cleanup_null, s->process->pool);
}

/* Registered on pconf, not on the process pool: the process pool outlives this module's code
 * (httpd unloads and reloads modules at every restart), pconf does not. At a restart the
 * socket stays open for the next generation; only when httpd exits is it closed and
 * unlinked. */
struct SocketAtExit {
    int fd;
    const char *path;
    pid_t owner;
};

apr_status_t close_socket_at_exit(void *data)
{
    auto *c = static_cast<SocketAtExit *>(data);
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_EXITING && getpid() == c->owner) {
        close(c->fd);
        unlink(c->path);
    }
    return APR_SUCCESS;
}

/* The socket's directory must not let anyone but root and httpd's own user replace the
 * socket: otherwise that user could swap it for a link between the parent's (root's) bind and
 * chown, or before a restart. Refused: a directory owned by another user, or writable by its
 * group (other than root's) or by others, without the sticky bit. */
apr_status_t check_socket_dir(apr_pool_t *p, server_rec *s, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dir = slash && slash != path ? apr_pstrmemdup(p, path, slash - path) : "/";
    struct stat st;
    if (stat(dir, &st) < 0) {
        apr_status_t rv = errno;
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "SSE0405: SSEPublishSocket %s: cannot stat its directory %s", path, dir);
        return rv;
    }
    const char *why = nullptr;
    if (st.st_uid != 0 && st.st_uid != geteuid())
        why = "is owned by another user";
    else if (!(st.st_mode & S_ISVTX) &&
             ((st.st_mode & S_IWOTH) || ((st.st_mode & S_IWGRP) && st.st_gid != 0)))
        why = "is writable by other users and has no sticky bit";
    if (!why)
        return APR_SUCCESS;
    ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                 "SSE0405: SSEPublishSocket %s: its directory %s %s, who could replace the "
                 "socket with a link to another file; use a directory only root (or the user "
                 "starting httpd) can write to, e.g. DefaultRuntimeDir",
                 path, dir, why);
    return APR_EACCES;
}

/* Mode and owner of the socket at `path`, never through a link: the path is opened with
 * O_PATH | O_NOFOLLOW, checked to be a socket, and changed through that descriptor, so a
 * path replaced by a symlink (or by anything but a socket) is refused, not followed. */
apr_status_t set_socket_mode_owner(server_rec *s, const char *path,
                                   const PublishSocketConfig *conf)
{
    int pfd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (pfd < 0 || fstat(pfd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        apr_status_t rv = pfd < 0 && errno != ELOOP ? errno : 0;
        if (pfd >= 0)
            close(pfd);
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "SSE0405: SSEPublishSocket %s is no longer the socket httpd made (it was "
                     "removed or replaced, e.g. by a symbolic link); its mode and owner are "
                     "not changed; stop httpd, remove what is there and start it again",
                     path);
        return APR_EEXIST;
    }
    /* chmod through the descriptor: /proc/self/fd/N names the very inode checked above. */
    char fd_path[64];
    snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", pfd);
    if (chmod(fd_path, conf->mode) < 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s,
                     "SSE0403: cannot chmod SSEPublishSocket %s", path);
    if (geteuid() == 0 &&
        fchownat(pfd, "", ap_unixd_config.user_id, conf->group_id, AT_EMPTY_PATH) < 0)
        ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s,
                     "SSE0403: cannot chown SSEPublishSocket %s", path);
    close(pfd);
    return APR_SUCCESS;
}

apr_status_t open_listening_socket(apr_pool_t *pconf, server_rec *s,
                                   const PublishSocketConfig *conf, int *fd_out)
{
    const char *path = conf->path;
    if (apr_status_t rv = check_socket_dir(pconf, s, path))
        return rv;
    KeptSocket kept = kept_socket(s);
    bool reuse = kept.fd >= 0 && kept.path == path;
    struct stat at_path;
    if (reuse && lstat(path, &at_path) < 0 && errno == ENOENT) {
        /* Removed while httpd ran: nobody can reach the kept socket any more, so a new one is
         * made at the same path (what a stop and start would do). */
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                     "SSE0403: SSEPublishSocket %s was removed while httpd ran; making it anew",
                     path);
        retire_publish_socket(s);
        reuse = false;
    }
    if (reuse) {
        *fd_out = kept.fd;
    } else {
        struct stat st;
        if (lstat(path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                             "SSE0401: SSEPublishSocket %s exists and is not a socket; "
                             "refusing to replace it",
                             path);
                return APR_EEXIST;
            }
            unlink(path); /* left by a server that did not stop cleanly */
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return errno;
        struct sockaddr_un addr;
        memset(&addr, 0, sizeof addr);
        addr.sun_family = AF_UNIX;
        apr_cpystrn(addr.sun_path, path, sizeof addr.sun_path);
        mode_t old_mask = umask(0077); /* nobody else may connect before chmod */
        int rc = bind(fd, reinterpret_cast<struct sockaddr *>(&addr), sizeof addr);
        int bind_errno = errno;
        umask(old_mask);
        if (rc < 0 || listen(fd, 128) < 0) {
            apr_status_t rv = rc < 0 ? bind_errno : errno;
            close(fd);
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                         "SSE0401: cannot listen on SSEPublishSocket %s", path);
            return rv;
        }
        retire_publish_socket(s); /* the path changed: the old socket goes */
        apr_pool_userdata_set(apr_psprintf(s->process->pool, "%d %s", fd, path),
                              kSocketUserdataKey, apr_pool_cleanup_null, s->process->pool);
        *fd_out = fd;
    }
    auto *at_exit = static_cast<SocketAtExit *>(apr_palloc(pconf, sizeof(SocketAtExit)));
    *at_exit = {*fd_out, apr_pstrdup(pconf, path), getpid()};
    apr_pool_cleanup_register(pconf, at_exit, close_socket_at_exit, apr_pool_cleanup_null);

    /* Mode and owner follow the configuration at every (re)start. At a restart, a path that is
     * no longer the kept socket (replaced, e.g. by a link) is logged and left alone, and the
     * server goes on with the kept socket: refusing would stop every process of a running
     * server. At the first start it is refused. */
    apr_status_t rv = set_socket_mode_owner(s, path, conf);
    return reuse ? APR_SUCCESS : rv;
}

/* One daemon of one generation, allocated in that generation's pconf. */
struct Daemon {
    apr_pool_t *pconf;
    server_rec *s;
    ModuleState *state;
    int listen_fd;
    int max_clients;
    apr_size_t max_event_bytes;
    apr_proc_t proc;
};

void fork_daemon(Daemon *d);
void maintain_daemon_now(int reason, Daemon *d, apr_wait_t status);

void maintain_daemon(int reason, void *data, apr_wait_t status)
{
    guarded(static_cast<Daemon *>(data)->s, "the publish socket daemon's supervision",
            [&] { maintain_daemon_now(reason, static_cast<Daemon *>(data), status); });
}

/* status: what the MPM got from waitpid() for the daemon, the exit code or the number of the
 * signal that ended it (httpd passes only that number; for a signal other than KILL, TERM or HUP
 * it has already logged AH00052 "exit signal ..." naming it). Logged, so that a daemon that
 * crashed or exited on an error is told from one that was killed. */
void maintain_daemon_now(int reason, Daemon *d, apr_wait_t status)
{
    int mpm_state = AP_MPMQ_STOPPING;
    switch (reason) {
    case APR_OC_REASON_DEATH:
    case APR_OC_REASON_LOST:
        apr_proc_other_child_unregister(d);
        if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) == APR_SUCCESS &&
            mpm_state != AP_MPMQ_STOPPING) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, d->s,
                         "SSE0402: the publish socket daemon (pid %" APR_PID_T_FMT
                         ") died (exit code or signal %d); starting a new one",
                         d->proc.pid, status);
            fork_daemon(d);
        }
        break;
    case APR_OC_REASON_RESTART:
        apr_proc_other_child_unregister(d);
        break;
    default: /* UNREGISTER: pconf is going away; apr_pool_note_subprocess stops it */
        break;
    }
}

void fork_daemon(Daemon *d)
{
    /* SIGTERM stays blocked in the child until run_socket_daemon() has its handler: a stop
     * right after the fork is not lost (it would be SIGKILLed 3 s later). */
    sigset_t term, old;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, &old);
    pid_t pid = fork();
    if (pid != 0)
        sigprocmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, errno, d->s,
                     "SSE0402: cannot fork the publish socket daemon");
        return;
    }
    if (pid == 0) {
        apr_pool_t *pool;
        apr_pool_create(&pool, d->pconf);
        run_socket_daemon(d->s, pool, d->listen_fd, d->state, d->max_clients,
                          d->max_event_bytes);
    }
    d->proc.pid = pid;
    d->proc.in = d->proc.out = d->proc.err = nullptr;
    /* At the end of the generation: SIGTERM, and SIGKILL if it is still there 3 s later. */
    apr_pool_note_subprocess(d->pconf, &d->proc, APR_KILL_AFTER_TIMEOUT);
    apr_proc_other_child_register(&d->proc, maintain_daemon, d, nullptr, d->pconf);
}

} // namespace

void retire_publish_socket(server_rec *s)
{
    KeptSocket kept = kept_socket(s);
    if (kept.fd >= 0) {
        close(kept.fd);
        unlink(kept.path.c_str());
    }
    forget_kept_socket(s);
}

const char *parse_publish_socket(apr_pool_t *p, const char *path, const char *mode,
                                 const char *group, PublishSocketConfig *out)
{
    out->path = path;
    out->mode = 0660;
    if (mode) {
        char *end = nullptr;
        long m = strtol(mode, &end, 8);
        if (!*mode || *end || m < 0 || m > 0777)
            return apr_psprintf(p, "SSEPublishSocket: mode \"%s\" must be octal, 0 to 0777 "
                                   "(e.g. 0660)", mode);
        out->mode = static_cast<apr_fileperms_t>(m);
    }
    out->group_name = group;
    if (group) {
        struct group *g = getgrnam(group);
        if (!g)
            return apr_psprintf(p, "SSEPublishSocket: unknown group \"%s\"", group);
        out->group_id = g->gr_gid;
    }
    return nullptr;
}

const char *check_publish_socket(apr_pool_t *p, PublishSocketConfig *conf)
{
    if (!conf->path)
        return nullptr;
    const char *full = ap_runtime_dir_relative(p, conf->path);
    if (!full)
        return apr_psprintf(p, "SSEPublishSocket: invalid path \"%s\"", conf->path);
    struct sockaddr_un addr;
    if (strlen(full) >= sizeof addr.sun_path)
        return apr_psprintf(p,
                            "SSEPublishSocket: \"%s\" is %" APR_SIZE_T_FMT
                            " bytes long; a Unix socket path holds at most %" APR_SIZE_T_FMT,
                            full, strlen(full), sizeof addr.sun_path - 1);
    conf->path = full;
    if (!conf->group_name)
        conf->group_id = ap_unixd_config.group_id;
    return nullptr;
}

namespace {

void start_daemon(apr_pool_t *pconf, server_rec *s, ModuleState *state, int listen_fd,
                  int max_clients, apr_size_t max_event_bytes)
{
    auto *d = static_cast<Daemon *>(apr_pcalloc(pconf, sizeof(Daemon)));
    d->pconf = pconf;
    d->s = s;
    d->state = state;
    d->listen_fd = listen_fd;
    d->max_clients = max_clients;
    d->max_event_bytes = max_event_bytes;
    cluster_start_token(s); /* made here, in the parent, so that every process shares it */
    fork_daemon(d);
}

} // namespace

apr_status_t start_publish_socket(apr_pool_t *pconf, server_rec *s,
                                  const PublishSocketConfig *conf, ModuleState *state,
                                  apr_size_t max_event_bytes)
{
    int fd = -1;
    apr_status_t rv = open_listening_socket(pconf, s, conf, &fd);
    if (rv != APR_SUCCESS)
        return rv;
    state->publish_socket_fd = fd;
    start_daemon(pconf, s, state, fd, conf->max_clients, max_event_bytes);
    return APR_SUCCESS;
}

void start_socketless_daemon(apr_pool_t *pconf, server_rec *s, ModuleState *state)
{
    start_daemon(pconf, s, state, -1, 0, 0);
}

} // namespace sse::httpd
