/* trivial.c - the benchmark baseline: the smallest h2o server set up the
 * way tokend's src/server.c sets up its own, so that "tokend vs trivial"
 * measures what tokend adds on top of the library, not h2o itself.
 *
 * Same as tokend: libh2o-evloop, one h2o_globalconf with a "default" host
 * and one handler on "/" (h2o_config_register_path), cleartext HTTP/1.1 +
 * h2c, one event loop per thread, each with its own SO_REUSEPORT listener
 * (SO_REUSEADDR, TCP_NODELAY, SOMAXCONN), SIGPIPE ignored, signals taken
 * by sigwait() on the main thread. The handler answers every request with
 * 200 and a small fixed JSON body (h2o_send_inline), like tokend's JSON path.
 *
 * usage: trivial [--listen HOST:PORT] [--threads N]
 * build: gcc -O2 -DH2O_USE_LIBUV=0 trivial.c $(pkg-config --cflags --libs
 *        libh2o-evloop openssl) -lpthread -o trivial                       */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <h2o.h>

static const char body[] = "{\"user_id\":\"1\",\"app_id\":\"1\",\"device_guid\":\"\"}";

typedef struct {
    h2o_context_t h2o;
    h2o_accept_ctx_t accept;
    h2o_socket_t *listener;
    pthread_t tid;
} thread_t;

static h2o_globalconf_t config;
static struct addrinfo *addr;

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    h2o_send_inline(req, body, sizeof body - 1);
    return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    thread_t *t = listener->data;
    h2o_socket_t *sock;
    if (err || (sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    h2o_accept(&t->accept, sock);
}

static int open_listener(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol), on = 1;
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *run_thread(void *arg)
{
    thread_t *t = arg;
    for (;;)
        h2o_evloop_run(t->h2o.loop, INT32_MAX);
    return NULL;
}

static int start_thread(thread_t *t, h2o_hostconf_t *host)
{
    int fd = open_listener(addr);
    if (fd < 0)
        return -1;
    h2o_evloop_t *loop = h2o_evloop_create();
    h2o_context_init(&t->h2o, loop, &config);
    t->accept.ctx = &t->h2o;
    t->accept.hosts = config.hosts;
    t->listener = h2o_evloop_socket_create(loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    t->listener->data = t;
    h2o_socket_read_start(t->listener, on_accept);
    return pthread_create(&t->tid, NULL, run_thread, t) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *listen_on = "127.0.0.1:8090";
    unsigned nthreads = 1;
    char host[256];
    sigset_t sigs;
    int sig;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen_on = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            nthreads = (unsigned)atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: trivial [--listen HOST:PORT] [--threads N]\n");
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > 256) {
        fprintf(stderr, "trivial: --threads must be 1..256\n");
        return 2;
    }
    const char *colon = strrchr(listen_on, ':');
    if (!colon || (size_t)(colon - listen_on) >= sizeof host) {
        fprintf(stderr, "trivial: --listen wants HOST:PORT\n");
        return 2;
    }
    memcpy(host, listen_on, (size_t)(colon - listen_on));
    host[colon - listen_on] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int rc = getaddrinfo(*host ? host : NULL, colon + 1, &hints, &addr);
    if (rc != 0) {
        fprintf(stderr, "trivial: cannot resolve %s: %s\n", listen_on, gai_strerror(rc));
        return 1;
    }

    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    h2o_config_init(&config);
    config.server_name = h2o_iovec_init(H2O_STRLIT("trivial"));
    h2o_hostconf_t *hostconf =
        h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof *handler);
    handler->on_req = on_req;

    thread_t *threads = calloc(nthreads, sizeof *threads);
    for (unsigned i = 0; i < nthreads; i++)
        if (start_thread(&threads[i], hostconf) != 0) {
            fprintf(stderr, "trivial: cannot listen on %s: %s\n", listen_on, strerror(errno));
            return 1;
        }
    printf("trivial listening on %s (cleartext HTTP/1.1 + h2c, %u threads)\n", listen_on, nthreads);
    fflush(stdout);
    sigwait(&sigs, &sig);
    return 0;  /* the loops hold no state worth a graceful stop */
}
