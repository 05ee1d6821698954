/* server.c - the process around the handlers: one h2o event loop per
 * thread, each accepting on its own SO_REUSEPORT socket; pool jobs coming
 * back to the loop that started them; signals and a bounded, graceful stop.
 *
 * Signals are taken by sigwait() on the main thread rather than handlers,
 * so no async-signal-safety rules reach into the loops. */
#define _GNU_SOURCE   /* pthread_setname_np */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "config.h"
#include "h2_reply.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "proxies.h"
#include "rpc.h"
#include "server.h"
#include "tls.h"
#include <h2o/http1.h>   /* after h2o.h (server.h): the accepts after a PROXY header */
#include <h2o/http2.h>

#define STOP_GRACE_MS 10000
#define STOP_FLUSH_MS 1000        /* after the last answer, for its bytes to go out */
/* h2o's own cap on a request body: past our --max-body (413 with the
 * envelope) it still buffers up to this many times max-body, at least 1 MiB. */
#define BODY_CAP_FACTOR 16
#define BODY_CAP_MIN (1u << 20)

/* Bodies over max_body get our 413 with a JSON envelope. h2o buffers a
 * body before the handler sees it and refuses one only beyond this hard
 * cap (an HTTP/1.1 413 of its own, an HTTP/2 REFUSED_STREAM). */
static size_t body_cap(size_t max_body)
{
    return max_body * BODY_CAP_FACTOR > BODY_CAP_MIN ? max_body * BODY_CAP_FACTOR : BODY_CAP_MIN;
}
#define PURGE_BATCH 1000          /* expired sessions removed per write transaction */

/* One event-loop thread. Only this file sees inside: the rest of tokend
 * knows it as the rpc_loop of the calls it takes. */
typedef struct server_loop {
    h2o_context_t h2o;                  /* first: req->conn->ctx points here */
    rpc_loop rpc;                       /* what calls see: post, enter, leave */
    h2o_multithread_receiver_t jobs;    /* pool jobs coming back to this loop */
    h2o_multithread_receiver_t wakeup;  /* shutdown */
    h2o_accept_ctx_t accept;
    h2o_socket_t *listener;
    int fd;                             /* the listener, opened before the thread */
    unsigned inflight;                  /* calls answered not yet: shutdown waits */
    unsigned conns;                     /* open connections on this loop */
    metrics_loop *metrics;              /* this loop's counters and access log ring */
    h2o_accept_ctx_t metrics_accept;    /* loop 0, with --metrics-listen */
    h2o_socket_t *metrics_listener;
    int metrics_fd;                     /* -1: none on this loop */
    pthread_t tid;
    struct server *server;
} server_loop;

typedef struct server {
    tokend_ctx *ctx;
    pthread_t purger;
    pthread_mutex_t purge_lock;
    pthread_cond_t purge_wake;
    h2o_globalconf_t h2o;
    h2o_globalconf_t metrics_conf;  /* the --metrics-listen port's one path */
    metrics_registry registry;
    SSL_CTX *ssl;              /* the newest TLS context; swapped by reload_tls */
    SSL_CTX **retired;         /* the ones it replaced, freed at the end */
    unsigned nretired;
    struct addrinfo *addr;
    atomic_int stopping;            /* set once by server_run; read by every loop */
    atomic_uint conns;              /* open client connections, all loops */
    unsigned max_conns;
    pthread_barrier_t ready;        /* every loop set up: signals may reach them */
    unsigned nthreads;
    server_loop *threads;
    h2_paths *paths;                /* the router's, for h2_reply_serve */
} server;

typedef struct {
    h2o_multithread_message_t super;
    pool_job *job;
} job_message;

static server_loop *loop_of(rpc_loop *rl)
{
    return H2O_STRUCT_FROM_MEMBER(server_loop, rpc, rl);
}

rpc_loop *server_loop_of(h2o_req_t *req)
{
    return &((server_loop *)req->conn->ctx)->rpc;
}

/* Any thread: the job is handed to the loop through h2o's message queue. */
static void loop_post(rpc_loop *rl, pool_job *job)
{
    server_loop *t = loop_of(rl);
    job_message *m = malloc(sizeof *m);
    if (!m)
        abort();  /* a lost job would leave its call unanswered forever */
    memset(&m->super, 0, sizeof m->super);
    m->job = job;
    h2o_multithread_send_message(&t->jobs, &m->super);
}

static void loop_enter(rpc_loop *rl)
{
    loop_of(rl)->inflight++;
    METRIC_ADD(loop_of(rl)->metrics->calls, 1);
}

static void loop_leave(rpc_loop *rl)
{
    loop_of(rl)->inflight--;
    METRIC_ADD(loop_of(rl)->metrics->calls, -1);
}

static void on_jobs(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        job_message *m = H2O_STRUCT_FROM_MEMBER(job_message, super.link, messages->next);
        h2o_linklist_unlink(&m->super.link);
        pool_job *job = m->job;
        free(m);
        rpc_job_returned(job);
    }
}

static void on_wakeup(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
}

static void on_conn_close(void *data)
{
    server_loop *t = data;
    t->conns--;
    atomic_fetch_sub(&t->server->conns, 1);
    METRIC_ADD(t->metrics->conns, -1);
}

/* With --proxy-protocol, a balancer among --trusted-proxies may open a
 * connection with a PROXY header naming the client, which is then the
 * connection's peer (without one, the balancer itself is the peer: its own
 * health checks); anyone else's first bytes are HTTP, a PROXY header a bad
 * request. */
static int proxied(server_loop *t, h2o_socket_t *sock)
{
    const tokend_config *cfg = t->server->ctx->config;
    struct sockaddr_storage sa;
    return cfg->proxy_protocol && h2o_socket_getpeername(sock, (struct sockaddr *)&sa) &&
           proxies_trusts(&cfg->trusted_proxies, (struct sockaddr *)&sa);
}

/* A balancer's connection until its header has been read (and, on a TLS
 * port, the handshake after it is done). The header is read here, not by
 * h2o's accept, because h2o 2.2 reads v1 lines only: AWS's and Google's
 * balancers send v2. Bounded in time by h2o's handshake timeout, as h2o's
 * own accept is. */
typedef struct {
    h2o_accept_ctx_t *accept;
    h2o_socket_t *sock;
    h2o_timeout_entry_t timeout;
    struct timeval connected_at;
} proxied_conn;

static void proxied_free(proxied_conn *c)
{
    h2o_timeout_unlink(&c->timeout);
    free(c);
}

static void on_proxied_timeout(h2o_timeout_entry_t *entry)
{
    proxied_conn *c = H2O_STRUCT_FROM_MEMBER(proxied_conn, timeout, entry);
    h2o_socket_t *sock = c->sock;
    sock->data = NULL;
    proxied_free(c);
    h2o_socket_close(sock);
}

static void on_proxied_handshake(h2o_socket_t *sock, const char *err)
{
    proxied_conn *c = sock->data;
    h2o_accept_ctx_t *accept = c->accept;
    struct timeval at = c->connected_at;
    sock->data = NULL;
    proxied_free(c);
    if (err) {
        h2o_socket_close(sock);
        return;
    }
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    for (const h2o_iovec_t *id = h2o_http2_alpn_protocols; id->len; id++) {
        if (proto.len == id->len && memcmp(proto.base, id->base, id->len) == 0) {
            h2o_http2_accept(accept, sock, at);
            return;
        }
    }
    h2o_http1_accept(accept, sock, at);
}

static void on_proxy_header(h2o_socket_t *sock, const char *err)
{
    proxied_conn *c = sock->data;
    if (err) {
        sock->data = NULL;
        proxied_free(c);
        h2o_socket_close(sock);
        return;
    }
    struct sockaddr_storage peer;
    socklen_t peerlen = 0;
    int n = proxies_header((const uint8_t *)sock->input->bytes, sock->input->size, &peer, &peerlen);
    if (n == 0)
        return;   /* more bytes to come */
    if (n > 0) {
        h2o_buffer_consume(&sock->input, (size_t)n);
        if (peerlen)
            h2o_socket_setpeername(sock, (struct sockaddr *)&peer, peerlen);
    }
    if (c->accept->ssl_ctx) {
        h2o_socket_ssl_handshake(sock, c->accept->ssl_ctx, NULL, on_proxied_handshake);
        return;
    }
    h2o_accept_ctx_t *accept = c->accept;
    struct timeval at = c->connected_at;
    sock->data = NULL;
    proxied_free(c);
    h2o_http1_accept(accept, sock, at);
}

static void accept_proxied(server_loop *t, h2o_socket_t *sock)
{
    proxied_conn *c = malloc(sizeof *c);
    if (!c) {
        h2o_socket_close(sock);
        return;
    }
    *c = (proxied_conn){.accept = &t->accept, .sock = sock, .timeout = {.cb = on_proxied_timeout}};
    c->connected_at = *h2o_get_timestamp(&t->h2o, NULL, NULL);
    h2o_timeout_link(t->h2o.loop, &t->h2o.handshake_timeout, &c->timeout);
    sock->data = c;
    h2o_socket_read_start(sock, on_proxy_header);
}

/* Beyond max_conns a new connection is closed at once: a flood of idle
 * connections cannot starve the process of descriptors or memory. */
static void on_accept(h2o_socket_t *listener, const char *err)
{
    server_loop *t = listener->data;
    h2o_socket_t *sock;
    if (err || (sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    /* one count for all loops: the kernel picks the loop of a connection */
    if (atomic_fetch_add(&t->server->conns, 1) >= t->server->max_conns) {
        atomic_fetch_sub(&t->server->conns, 1);
        h2o_socket_close(sock);
        return;
    }
    t->conns++;
    METRIC_ADD(t->metrics->conns, 1);
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = t;
    if (t->accept.ssl_ctx)   /* the newest certificate (reload_tls) */
        t->accept.ssl_ctx = __atomic_load_n(&t->server->ssl, __ATOMIC_ACQUIRE);
    if (proxied(t, sock))
        accept_proxied(t, sock);
    else
        h2o_accept(&t->accept, sock);
}

/* The metrics port: few connections (a scraper), not counted as clients'. */
static void on_metrics_accept(h2o_socket_t *listener, const char *err)
{
    server_loop *t = listener->data;
    h2o_socket_t *sock;
    if (err || (sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    h2o_accept(&t->metrics_accept, sock);
}

/* A socket bound to the address: the loops' listeners share their port
 * (SO_REUSEPORT); a probe does not, so it fails on a port anyone holds. */
static int bound_socket(const struct addrinfo *ai, int shared)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol), on = 1;
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        (shared && (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0)) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

#define CLAIM_WAIT_MS 3000
#define CLAIM_HELD -2

/* Claims ai's port while this process checks that nothing holds the
 * address and binds its listeners to it: an abstract Unix socket named
 * "tokend-listen PORT", which one process at a time can bind and which the
 * kernel lets go when it is closed or its process ends. Another tokend
 * starting on the port waits for the claim (CLAIM_WAIT_MS at most). Without
 * it, two started at once (on one address, or on a wildcard and a specific
 * one) could both pass the check before either listened, and their
 * SO_REUSEPORT listeners would share the port: the kernel would split the
 * clients between two servers. Once one listens, the other's check fails.
 * The claim's fd, or -1 (errno), or CLAIM_HELD. */
static int claim_port(const struct addrinfo *ai)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        errno = EINVAL;
        return -1;
    }
    int n = snprintf(un.sun_path + 1, sizeof un.sun_path - 1, "tokend-listen %s", port);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    for (int waited = 0; bind(fd, (struct sockaddr *)&un, len) != 0; waited += 10) {
        int e = errno;
        if (e != EADDRINUSE || waited >= CLAIM_WAIT_MS) {
            close(fd);
            errno = e;
            return e == EADDRINUSE ? CLAIM_HELD : -1;
        }
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return fd;
}

/* Whether the address is free (no SO_REUSEPORT: it fails on a port anyone
 * holds). 0, or -1 (errno). */
static int port_free(const struct addrinfo *ai)
{
    int fd = bound_socket(ai, 0);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

static int open_listener(const struct addrinfo *ai)
{
    int fd = bound_socket(ai, 1);
    if (fd >= 0 && listen(fd, SOMAXCONN) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* n listeners of ai into fds under the port's claim, once the address is
 * found free. 0, or -1 with a line in stderr naming the address (`what`
 * says which option). */
static int listen_on(const struct addrinfo *ai, int *fds, unsigned n, const char *addr,
                     const char *what)
{
    unsigned opened = 0;
    int claim = claim_port(ai);
    if (claim == CLAIM_HELD) {
        fprintf(stderr, "tokend: cannot listen on %s%s: another process held the port's claim for "
                "%d s (another tokend starting on it?)\n", addr, what, CLAIM_WAIT_MS / 1000);
        return -1;
    }
    int ok = claim >= 0 && port_free(ai) == 0;
    for (; ok && opened < n; opened++)
        ok = (fds[opened] = open_listener(ai)) >= 0;
    if (!ok) {
        int e = errno;
        fprintf(stderr, "tokend: cannot listen on %s%s: %s\n", addr, what, strerror(e));
        while (opened--)
            if (fds[opened] >= 0)
                close(fds[opened]);
    }
    if (claim >= 0)
        close(claim);
    return ok ? 0 : -1;
}

/* h2o_context_init puts eight timeout lists on the loop, and every
 * iteration (each request's too) runs each one and asks it when to wake
 * (~25 instructions a list). Four stay empty while the loop serves, so
 * they come off it: two belong to handlers tokend never installs (the
 * proxy's I/O timeout, the response throttler's 100 ms tick) and two to
 * HTTP/2's graceful shutdown (the GOAWAY sent again after a second, then
 * the stragglers' timeout), which only h2o_context_request_shutdown
 * starts; h2o 2.2.5 links entries to them nowhere else. The shutdown's two
 * go back on before it is requested. (h2o_context_dispose would unlink
 * the other two again; the loops end without it.) */
static void timeouts_off(h2o_context_t *ctx)
{
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR == 2   /* what the above holds for */
    h2o_timeout_dispose(ctx->loop, &ctx->proxy.io_timeout);
    h2o_timeout_dispose(ctx->loop, &ctx->hundred_ms_timeout);
    h2o_timeout_dispose(ctx->loop, &ctx->one_sec_timeout);
    h2o_timeout_dispose(ctx->loop, &ctx->http2.graceful_shutdown_timeout);
#else
    (void)ctx;
#endif
}

static void shutdown_timeouts_on(h2o_context_t *ctx)
{
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR == 2
    h2o_timeout_init(ctx->loop, &ctx->one_sec_timeout, 1000);
    h2o_timeout_init(ctx->loop, &ctx->http2.graceful_shutdown_timeout,
                     ctx->globalconf->http2.graceful_shutdown_timeout);
#else
    (void)ctx;
#endif
}

/* Everything h2o of a loop is made on the loop's own thread: h2o keeps
 * per-thread state (the socket buffer prototype and its recycling list are
 * __thread), and a socket made on another thread would keep using that
 * thread's list from this one - a race that ends in a use-after-free. */
static void *run_thread(void *arg)
{
    server_loop *t = arg;
    server *s = t->server;
    h2o_evloop_t *loop = h2o_evloop_create();
    pool_watch(s->ctx->pool); /* hashing must not starve this loop (pool.h) */
    h2o_context_init(&t->h2o, loop, &s->h2o);
    timeouts_off(&t->h2o);
    h2_reply_serve(&t->h2o, s->paths);
    h2o_multithread_queue_t *q = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(q, &t->jobs, on_jobs);
    h2o_multithread_register_receiver(q, &t->wakeup, on_wakeup);
    t->accept.ctx = &t->h2o;
    t->accept.hosts = s->h2o.hosts;
    t->accept.ssl_ctx = s->ssl;
    t->listener = h2o_evloop_socket_create(loop, t->fd, H2O_SOCKET_FLAG_DONT_READ);
    t->listener->data = t;
    h2o_socket_read_start(t->listener, on_accept);
    if (t->metrics_fd >= 0) {
        /* The metrics port's paths live in a globalconf of their own. */
        for (h2o_hostconf_t **hc = s->metrics_conf.hosts; *hc; hc++) {
            for (size_t i = 0; i < (*hc)->paths.size; i++)
                h2o_context_init_pathconf_context(&t->h2o, &(*hc)->paths.entries[i]);
            h2o_context_init_pathconf_context(&t->h2o, &(*hc)->fallback_path);
        }
        t->metrics_accept.ctx = &t->h2o;
        t->metrics_accept.hosts = s->metrics_conf.hosts;
        t->metrics_listener = h2o_evloop_socket_create(loop, t->metrics_fd,
                                                       H2O_SOCKET_FLAG_DONT_READ);
        t->metrics_listener->data = t;
        h2o_socket_read_start(t->metrics_listener, on_metrics_accept);
    }
    pthread_barrier_wait(&s->ready);

    /* Reads keep their transaction open between calls; one older than the
     * newest commit ends within about two ticks, even on an idle loop. */
    store *st = s->ctx->store;
    store_reads_keep(1);
    uint64_t ticked = h2o_now(loop);
    while (!atomic_load(&s->stopping)) {
        int parked = store_reads_parked(st);
        if (parked && h2o_now(loop) - ticked >= STORE_READ_TICK_MS) {
            store_read_tick(st);
            ticked = h2o_now(loop);
            parked = store_reads_parked(st);
        }
        h2o_evloop_run(loop, parked ? STORE_READ_TICK_MS : INT32_MAX);
    }
    /* Stop taking connections; let calls in flight finish, within a bound. */
    h2o_socket_read_stop(t->listener);
    h2o_socket_close(t->listener);
    if (t->metrics_listener) {
        h2o_socket_read_stop(t->metrics_listener);
        h2o_socket_close(t->metrics_listener);
    }
    /* HTTP/2 connections get GOAWAY and close once their streams are done;
     * HTTP/1.1 ones lose keep-alive with their next reply. */
    shutdown_timeouts_on(&t->h2o);
    h2o_context_request_shutdown(&t->h2o);
    uint64_t start = h2o_now(loop);
    while (t->inflight && h2o_now(loop) - start < STOP_GRACE_MS)
        h2o_evloop_run(loop, 50);
    /* Answers still being written (a large one, a slow reader) go out as
     * their connections close; an idle keep-alive connection is not waited
     * for long. */
    uint64_t answered = h2o_now(loop);
    while (t->conns && h2o_now(loop) - answered < STOP_FLUSH_MS && h2o_now(loop) - start < STOP_GRACE_MS)
        h2o_evloop_run(loop, 50);
    return NULL;
}

/* Deletes expired sessions in batches of bounded write transactions, so
 * the store does not grow without limit and no writer waits long. Readers
 * (Verify) never wait for it: LMDB readers do not block on the writer. */
static void *run_purger(void *arg)
{
    server *s = arg;
    unsigned interval = s->ctx->config->purge_interval;
    pthread_mutex_lock(&s->purge_lock);
    while (!atomic_load(&s->stopping)) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);   /* purge_wake waits on this clock */
        until.tv_sec += interval;
        pthread_cond_timedwait(&s->purge_wake, &s->purge_lock, &until);
        if (atomic_load(&s->stopping))
            break;
        pthread_mutex_unlock(&s->purge_lock);
        size_t purged, total = 0;
        do {
            if (store_purge_expired(s->ctx->store, rpc_now_ms(), PURGE_BATCH, &purged) != STORE_OK)
                break;
            total += purged;
        } while (purged == PURGE_BATCH && !atomic_load(&s->stopping));
        if (total)
            log_event(LOG_INFO, "purge", "purged %zu expired sessions", total);
        crypto_area_trim(interval);   /* hash memory unused for as long */
        pthread_mutex_lock(&s->purge_lock);
    }
    pthread_mutex_unlock(&s->purge_lock);
    return NULL;
}

/* The purger's lock and wake-up, the latter on the monotonic clock. */
static int init_purge_wait(server *s)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        if (rc == 0)
            rc = pthread_cond_init(&s->purge_wake, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (rc == 0 && (rc = pthread_mutex_init(&s->purge_lock, NULL)) != 0)
        pthread_cond_destroy(&s->purge_wake);
    return rc == 0 ? 0 : -1;
}

/* SIGHUP: the certificate pair again from its files (renewed in place).
 * The loops take the new context for the connections they accept next;
 * the old one stays until the end, as a loop may be about to use it. */
static void reload_tls(server *s, const tokend_config *cfg)
{
    char err[512], valid[64];
    SSL_CTX *next = tls_context_new(cfg->tls_cert, cfg->tls_key, err, sizeof err);
    if (!next) {
        log_event(LOG_ERROR, "reload", "SIGHUP: %s; the running certificate stays", err);
        return;
    }
    SSL_CTX **r = realloc(s->retired, (s->nretired + 1) * sizeof *r);
    if (!r) {
        SSL_CTX_free(next);
        log_event(LOG_ERROR, "reload", "SIGHUP: out of memory; the running certificate stays");
        return;
    }
    s->retired = r;
    s->retired[s->nretired++] = __atomic_exchange_n(&s->ssl, next, __ATOMIC_ACQ_REL);
    tls_describe(next, valid, sizeof valid);
    log_event(LOG_INFO, "reload", "SIGHUP: TLS certificate %s reloaded (%s)", cfg->tls_cert, valid);
}

static int resolve(const char *listen, struct addrinfo **out, const char *option)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    if (!colon || (size_t)(colon - listen) >= sizeof host) {
        fprintf(stderr, "tokend: --%s wants HOST:PORT, got \"%s\"\n", option, listen);
        return -1;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    int rc = getaddrinfo(*host ? host : NULL, colon + 1, &hints, out);
    if (rc != 0) {
        fprintf(stderr, "tokend: cannot resolve %s: %s\n", listen, gai_strerror(rc));
        return -1;
    }
    return 0;
}

/* The paths of every route, for HTTP/2 requests that name them in Huffman
 * code (h2_path.h). */
static h2_paths *known_paths(const router *router)
{
    size_t n = router_paths(router, NULL, 0);
    const char **paths = calloc(n ? n : 1, sizeof *paths);
    if (paths == NULL)
        return NULL;
    router_paths(router, paths, n);
    h2_paths *ps = h2_paths_create(paths, n);
    free(paths);
    return ps;
}

static void stop_signals(sigset_t *sigs)
{
    sigemptyset(sigs);
    sigaddset(sigs, SIGTERM);
    sigaddset(sigs, SIGINT);
    sigaddset(sigs, SIGHUP);
}

/* Until it serves, a stop asked for ends the process at once: start-up
 * (a snapshot load, the decoys' hashes, a database that is slow to answer)
 * can take long, and nothing of it needs undoing (LMDB transactions are
 * atomic; a snapshot loads in one). The thread takes SIGTERM and SIGINT
 * only; a SIGHUP stays pending for server_run. */
static pthread_t start_up_watch;
static int start_up_watching;

static void *watch_start_up(void *arg)
{
    sigset_t stop;
    int sig;
    (void)arg;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    if (sigwait(&stop, &sig) == 0) {
        /* taken: no cancel may end this thread before it ends the process
         * (the signal is no longer pending for server_run) */
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        log_event(LOG_INFO, "stop", "%s: stopped while starting (before it served)",
                  sig == SIGINT ? "SIGINT" : "SIGTERM");
        log_stop();   /* the lines start-up queued, this one last */
        _exit(0);
    }
    return NULL;
}

/* server_run is about to serve: its own sigwait takes the signals from
 * now on (one that comes in between stays pending for it). */
static void end_start_up_watch(void)
{
    if (!start_up_watching)
        return;
    start_up_watching = 0;
    pthread_cancel(start_up_watch);   /* sigwait is a cancellation point */
    pthread_join(start_up_watch, NULL);
}

void server_block_signals(void)
{
    sigset_t sigs;
    stop_signals(&sigs);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (!start_up_watching && pthread_create(&start_up_watch, NULL, watch_start_up, NULL) == 0) {
        pthread_setname_np(start_up_watch, "tokend-start");
        start_up_watching = 1;
    }
}

static int serve(tokend_ctx *ctx, const router *router);

/* serve(), and the start-up watch ended whichever way it returns (a failed
 * start keeps its exit status). */
int server_run(tokend_ctx *ctx, const router *router)
{
    int rc = serve(ctx, router);
    end_start_up_watch();
    return rc;
}

static int serve(tokend_ctx *ctx, const router *router)
{
    tokend_config *cfg = ctx->config;
    server s = {.ctx = ctx};
    sigset_t sigs;
    int sig = 0, purging = 0;

    server_block_signals();
    stop_signals(&sigs);

    /* Every address is resolved before anything is made, so a refused
     * start has nothing to take apart. */
    struct addrinfo *maddr = NULL;
    if (resolve(cfg->listen, &s.addr, "listen") != 0)
        return 1;
    if (cfg->metrics_listen && resolve(cfg->metrics_listen, &maddr, "metrics-listen") != 0) {
        freeaddrinfo(s.addr);
        return 1;
    }
    if (cfg->tls_cert) {
        char err[512];
        if (!(s.ssl = tls_context_new(cfg->tls_cert, cfg->tls_key, err, sizeof err))) {
            fprintf(stderr, "tokend: %s\n", err);
            freeaddrinfo(s.addr);
            if (maddr)
                freeaddrinfo(maddr);
            return 2;   /* a configuration error: a restart will not mend it */
        }
    }
    h2o_config_init(&s.h2o);
    s.h2o.server_name = h2o_iovec_init(H2O_STRLIT("tokend"));
    s.h2o.max_request_entity_size = body_cap(cfg->max_body);
    /* A request must arrive whole within this, however slowly it drips
     * (slowloris); an idle HTTP/2 connection is closed after it. */
    s.h2o.http1.req_timeout = (uint64_t)cfg->request_timeout * 1000;
    s.h2o.http2.idle_timeout = (uint64_t)cfg->request_timeout * 1000;
    s.h2o.http2.max_concurrent_requests_per_connection = cfg->max_streams;
    h2o_hostconf_t *host = h2o_config_register_host(&s.h2o, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    s.nthreads = cfg->threads ? cfg->threads : 1;
    s.max_conns = cfg->max_connections;
    s.registry = (metrics_registry){ctx, router, NULL, s.nthreads, rpc_now_ms()};
    if (!(s.threads = calloc(s.nthreads, sizeof *s.threads)) ||
        !(s.registry.loops = calloc(s.nthreads, sizeof *s.registry.loops)) ||
        init_purge_wait(&s) != 0) {
        fprintf(stderr, "tokend: cannot set up the event loops (out of memory)\n");
        free(s.threads);
        free(s.registry.loops);
        freeaddrinfo(s.addr);
        return 1;
    }
    /* Each loop's counters, access log ring and request-id prefix (random
     * per process, then the loop's number: ids stay unique across restarts). */
    uint8_t rnd[4];
    crypto_random(rnd, sizeof rnd);
    for (unsigned i = 0; i < s.nthreads; i++) {
        metrics_loop *m = metrics_loop_new(router_count(router));
        if (!m) {
            fprintf(stderr, "tokend: cannot set up the event loops (out of memory)\n");
            abort();
        }
        m->log = log_access_enabled() ? log_ring_new() : NULL;
        snprintf(m->request_id_prefix, sizeof m->request_id_prefix, "%02x%02x%02x%02x-%u-", rnd[0],
                 rnd[1], rnd[2], rnd[3], i);
        m->request_id_prefix_len = strlen(m->request_id_prefix);
        s.threads[i].metrics = m;
        s.threads[i].metrics_fd = -1;
        s.registry.loops[i] = m;
    }
    s.paths = known_paths(router); /* NULL (out of memory) only costs the shortcut */
    http_register(h2o_config_register_path(host, "/", 0), ctx, router,
                  cfg->metrics_listen ? NULL : &s.registry);
    if (cfg->metrics_listen) {
        h2o_config_init(&s.metrics_conf);
        s.metrics_conf.server_name = s.h2o.server_name;
        s.metrics_conf.http1.req_timeout = s.h2o.http1.req_timeout;
        s.metrics_conf.http2.idle_timeout = s.h2o.http2.idle_timeout;
        h2o_hostconf_t *mhost = h2o_config_register_host(
            &s.metrics_conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
        http_register_metrics(h2o_config_register_path(mhost, "/", 0), ctx, router, &s.registry);
        int rc = listen_on(maddr, &s.threads[0].metrics_fd, 1, cfg->metrics_listen,
                           " (--metrics-listen)");
        freeaddrinfo(maddr);
        if (rc != 0)
            return 1;
    }
    /* Every listener first, so a port in use fails before any thread runs. */
    unsigned opened = 0;
    int *fds = calloc(s.nthreads, sizeof *fds);
    if (!fds || listen_on(s.addr, fds, s.nthreads, cfg->listen, "") != 0) {
        free(fds);
        goto fail;
    }
    for (; opened < s.nthreads; opened++) {
        server_loop *t = &s.threads[opened];
        t->fd = fds[opened];
        t->server = &s;
        t->rpc = (rpc_loop){loop_post, loop_enter, loop_leave, t->metrics};
    }
    free(fds);
    /* The loops are about to serve: a stop from now on is a graceful one
     * (the sigwait below; one that comes before it waits there, pending). */
    end_start_up_watch();
    if (pthread_barrier_init(&s.ready, NULL, s.nthreads + 1) != 0) {
        fprintf(stderr, "tokend: cannot set up the event loops (pthread_barrier_init)\n");
        goto fail;
    }
    for (unsigned i = 0; i < s.nthreads; i++) {
        char name[16];
        if (pthread_create(&s.threads[i].tid, NULL, run_thread, &s.threads[i]) != 0) {
            fprintf(stderr, "tokend: cannot start an event-loop thread\n");
            abort();  /* the others wait at the barrier for it */
        }
        snprintf(name, sizeof name, "tokend-loop%u", i % 1000);   /* for top -H, ps -L, gdb */
        pthread_setname_np(s.threads[i].tid, name);
    }
    pthread_barrier_wait(&s.ready);
    pthread_barrier_destroy(&s.ready);
    if (pthread_create(&s.purger, NULL, run_purger, &s) != 0) {
        fprintf(stderr, "tokend: cannot start the purge thread\n");
        sig = -1;
    } else {
        pthread_setname_np(s.purger, "tokend-purge");
        purging = 1;
    }
    if (sig == 0 && s.ssl) {
        char valid[64];
        tls_describe(s.ssl, valid, sizeof valid);
        log_event(LOG_INFO, "tls", "certificate %s (%s)", cfg->tls_cert, valid);
        if (tls_key_exposed(cfg->tls_key))
            log_event(LOG_WARN, "tls", "the key %s may be read by group or others: chmod 600 it",
                      cfg->tls_key);
    }
    if (sig == 0) {
        printf("tokend %s listening on %s (%s, %u threads, %u workers)\n", TOKEND_VERSION,
               cfg->listen, s.ssl ? "TLS" : "cleartext HTTP/1.1 + h2c", s.nthreads, cfg->workers);
        fflush(stdout);
        log_event(LOG_INFO, "start", "tokend %s serving %s on %s%s%s (%u threads, %u workers)",
                  TOKEND_VERSION, cfg->data_dir, cfg->listen,
                  cfg->metrics_listen ? ", metrics on " : "",
                  cfg->metrics_listen ? cfg->metrics_listen : "", s.nthreads, cfg->workers);
        while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP) {
            char err[256];
            log_reopen();
            if (s.ssl)
                reload_tls(&s, cfg);
            if (config_reload(ctx, err, sizeof err) != 0)
                log_event(LOG_ERROR, "reload", "SIGHUP: %s; the running configuration stays", err);
            else   /* h2o reads it per request */
                __atomic_store_n(&s.h2o.max_request_entity_size, body_cap(config_max_body(cfg)),
                                 __ATOMIC_RELAXED);
        }
        log_event(LOG_INFO, "drain",
                  "%s: no new connections; finishing the calls in flight (at most %d s)",
                  sig == SIGINT ? "SIGINT" : "SIGTERM", STOP_GRACE_MS / 1000);
    }
    /* Before the loops go: a parked read is posted to its loop when the feed
     * stops, and a worker stuck on a frozen database is cut off soon. */
    store_cluster_stop(ctx->store);
    pthread_mutex_lock(&s.purge_lock);
    atomic_store(&s.stopping, 1);
    pthread_cond_signal(&s.purge_wake);
    pthread_mutex_unlock(&s.purge_lock);
    if (purging)
        pthread_join(s.purger, NULL);
    for (unsigned i = 0; i < s.nthreads; i++)
        h2o_multithread_send_message(&s.threads[i].wakeup, NULL);
    for (unsigned i = 0; i < s.nthreads; i++)
        pthread_join(s.threads[i].tid, NULL);
    pthread_cond_destroy(&s.purge_wake);
    pthread_mutex_destroy(&s.purge_lock);
    unsigned left = 0;
    for (unsigned i = 0; i < s.nthreads; i++)
        left += s.threads[i].inflight;
    log_event(left ? LOG_WARN : LOG_INFO, "stop", "stopped%s", left ? " with calls unanswered after the grace time" : "");
    for (unsigned i = 0; i < s.nthreads; i++)
        metrics_loop_free(s.threads[i].metrics);
    free(s.registry.loops);
    free(s.threads);
    h2_paths_free(s.paths);
    freeaddrinfo(s.addr);
    while (s.nretired)
        SSL_CTX_free(s.retired[--s.nretired]);
    free(s.retired);
    SSL_CTX_free(s.ssl);
    return sig < 0 ? 1 : 0;
fail:
    while (opened--)
        close(s.threads[opened].fd);
    if (s.threads[0].metrics_fd >= 0)
        close(s.threads[0].metrics_fd);
    pthread_cond_destroy(&s.purge_wake);
    pthread_mutex_destroy(&s.purge_lock);
    freeaddrinfo(s.addr);
    free(s.threads);
    h2_paths_free(s.paths);
    SSL_CTX_free(s.ssl);
    return 1;
}
