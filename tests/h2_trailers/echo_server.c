/* echo_server.c - a tiny libh2o (evloop) server proving src/h2_reply.c.
 *
 *   echo_server PORT [CERT KEY]      (with CERT/KEY: TLS, ALPN h2)
 *
 * Paths (gRPC unary methods, raw gRPC framing, no protobuf):
 *   /echo.Echo/Echo         echoes the request message, grpc-status 0
 *   /echo.Echo/Unauth       Trailers-Only, grpc-status 16, percent-encoded
 *                           grpc-message with spaces and non-ASCII
 *   /echo.Echo/Big          a message of N bytes (N = request message as a
 *                           decimal string, default 200000), grpc-status 0
 *   /echo.Echo/FailAfterMsg one message, then grpc-status 9 in trailers
 *   /echo.Echo/LongTrailer  echo + a 40000-byte trailer (CONTINUATION frames)
 *   /echo.Echo/BigHeaders   echo (Trailers-Only for an empty message) with a
 *                           5000-byte response header: h2o's encoder's block
 *   /echo.Echo/BadValue     echo with a response header whose value holds
 *                           CR, LF and NUL (sent as spaces)
 *   /echo.Echo/Deferred     echo, answered 20 ms later from a timer (as a
 *                           reply coming back from a worker would be); a
 *                           pool-disposal guard cancels it if the stream dies
 *   /plain                  h2o_send_inline("hello\n") - baseline for h2load
 *   /inline-grpc-error      what plain h2o does for an error with no body:
 *                           grpc-status in the headers, h2o_send_inline("")
 * A request the shim refuses (HTTP/1.x) gets a 505 from the fallback.
 */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <h2o.h>
#include <h2o/http2.h>

#include "h2_reply.h"

static h2o_globalconf_t config;
static h2o_context_t ctx;
static h2o_accept_ctx_t accept_ctx;
static h2o_timeout_t defer_timeout;

/* percent-encoding as the gRPC spec asks for grpc-message */
static h2o_iovec_t grpc_percent_encode(h2o_mem_pool_t *pool, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = h2o_mem_alloc_pool(pool, n * 3 + 1), *p = out;
    for (size_t i = 0; i != n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '%') {
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p = '\0';
    return h2o_iovec_init(out, (size_t)(p - out));
}

static h2o_iovec_t grpc_frame(h2o_mem_pool_t *pool, const char *msg, size_t len)
{
    char *b = h2o_mem_alloc_pool(pool, len + 5);
    b[0] = 0;
    b[1] = (char)(len >> 24);
    b[2] = (char)(len >> 16);
    b[3] = (char)(len >> 8);
    b[4] = (char)len;
    if (len != 0)
        memcpy(b + 5, msg, len);
    return h2o_iovec_init(b, len + 5);
}

/* the single request message, or {NULL,0} if the framing is wrong */
static h2o_iovec_t grpc_unframe(h2o_iovec_t entity)
{
    if (entity.base == NULL || entity.len < 5 || entity.base[0] != 0)
        return h2o_iovec_init(NULL, 0);
    const unsigned char *u = (const unsigned char *)entity.base;
    size_t len = (size_t)u[1] << 24 | (size_t)u[2] << 16 | (size_t)u[3] << 8 | u[4];
    if (len != entity.len - 5)
        return h2o_iovec_init(NULL, 0);
    return h2o_iovec_init(entity.base + 5, len);
}

static int respond(h2o_req_t *req, h2o_iovec_t body, h2o_header_t *trailers, size_t n)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/grpc"));
    if (h2_reply_send(req, body, trailers, n) != 0) {
        req->res.headers = (h2o_headers_t){NULL};
        h2o_send_error_generic(req, 505, "HTTP Version Not Supported", "gRPC needs HTTP/2\n", 0);
    }
    return 0;
}

static int respond_status(h2o_req_t *req, h2o_iovec_t body, const char *code, const char *message)
{
    static h2o_iovec_t n_status = {H2O_STRLIT("grpc-status")}, n_message = {H2O_STRLIT("grpc-message")};
    h2o_header_t t[2] = {{&n_status, NULL, h2o_iovec_init(code, strlen(code))},
                         {&n_message, NULL, grpc_percent_encode(&req->pool, message)}};
    return respond(req, body, t, *message != '\0' ? 2 : 1);
}

struct deferred {
    h2o_timeout_entry_t te;
    h2o_req_t *req;
};

static void on_deferred_dispose(void *p)
{
    struct deferred *d = p;
    if (h2o_timeout_is_linked(&d->te))
        h2o_timeout_unlink(&d->te);
}

static void on_deferred(h2o_timeout_entry_t *te)
{
    struct deferred *d = H2O_STRUCT_FROM_MEMBER(struct deferred, te, te);
    h2o_iovec_t msg = grpc_unframe(d->req->entity);
    respond_status(d->req, grpc_frame(&d->req->pool, msg.base, msg.len), "0", "");
}

#define UNAUTH_MESSAGE "token expired: caf\xc3\xa9 \xe2\x98\x95 100% sure"

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    h2o_iovec_t path = req->path_normalized;

    if (h2o_memis(path.base, path.len, H2O_STRLIT("/plain"))) {
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain"));
        h2o_send_inline(req, H2O_STRLIT("hello\n"));
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/inline-grpc-error"))) {
        req->res.status = 200;
        req->res.reason = "OK";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/grpc"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("grpc-status"), 0, NULL, H2O_STRLIT("16"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("grpc-message"), 0, NULL, H2O_STRLIT("inline"));
        h2o_send_inline(req, "", 0);
        return 0;
    }

    h2o_iovec_t msg = grpc_unframe(req->entity);
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/Unauth")))
        return respond_status(req, h2o_iovec_init(NULL, 0), "16", UNAUTH_MESSAGE);
    if (msg.base == NULL)
        return respond_status(req, h2o_iovec_init(NULL, 0), "13", "bad gRPC framing");
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/Echo")))
        return respond_status(req, grpc_frame(&req->pool, msg.base, msg.len), "0", "");
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/Deferred"))) {
        struct deferred *d = h2o_mem_alloc_shared(&req->pool, sizeof(*d), on_deferred_dispose);
        memset(d, 0, sizeof(*d));
        d->te.cb = on_deferred;
        d->req = req;
        h2o_timeout_link(ctx.loop, &defer_timeout, &d->te);
        return 0;
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/FailAfterMsg")))
        return respond_status(req, grpc_frame(&req->pool, msg.base, msg.len), "9", "failed after a message");
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/Big"))) {
        size_t n = 200000;
        if (msg.len != 0 && msg.len < 16) {
            char tmp[16];
            memcpy(tmp, msg.base, msg.len);
            tmp[msg.len] = '\0';
            n = strtoul(tmp, NULL, 10);
        }
        char *big = h2o_mem_alloc_pool(&req->pool, n + 1);
        for (size_t i = 0; i != n; ++i)
            big[i] = (char)(i * 7 % 251);
        return respond_status(req, grpc_frame(&req->pool, big, n), "0", "");
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/LongTrailer"))) {
        char *pad = h2o_mem_alloc_pool(&req->pool, 40001);
        memset(pad, 'p', 40000);
        pad[40000] = '\0';
        static h2o_iovec_t n_status = {H2O_STRLIT("grpc-status")}, n_pad = {H2O_STRLIT("x-pad")};  /* names go out as given: lower case, as HTTP/2 asks */
        h2o_header_t t[2] = {{&n_pad, NULL, h2o_iovec_init(pad, 40000)}, {&n_status, NULL, h2o_iovec_init(H2O_STRLIT("0"))}};
        return respond(req, grpc_frame(&req->pool, msg.base, msg.len), t, 2);
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/BigHeaders"))) {
        char *big = h2o_mem_alloc_pool(&req->pool, 5000);
        memset(big, 'b', 5000);
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-big"), 0, NULL, big, 5000);
        if (msg.len == 0)
            return respond_status(req, h2o_iovec_init(NULL, 0), "5", "not found");
        return respond_status(req, grpc_frame(&req->pool, msg.base, msg.len), "0", "");
    }
    if (h2o_memis(path.base, path.len, H2O_STRLIT("/echo.Echo/BadValue"))) {
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-bad"), 0, NULL, H2O_STRLIT("a\r\nb\0c\td"));
        return respond_status(req, grpc_frame(&req->pool, msg.base, msg.len), "0", "");
    }
    return respond_status(req, h2o_iovec_init(NULL, 0), "12", "unknown method");
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    if ((sock = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    h2o_accept(&accept_ctx, sock);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 4) {
        fprintf(stderr, "usage: %s PORT [CERT KEY]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    h2o_config_init(&config);
    h2o_hostconf_t *host = h2o_config_register_host(&config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(pathconf, sizeof(*handler));
    handler->on_req = on_req;

    h2o_context_init(&ctx, h2o_evloop_create(), &config);
    accept_ctx.ctx = &ctx;
    accept_ctx.hosts = config.hosts;
    h2o_timeout_init(ctx.loop, &defer_timeout, 20);

    if (argc == 4) {
        SSL_load_error_strings();
        SSL_library_init();
        accept_ctx.ssl_ctx = SSL_CTX_new(TLS_server_method());
        SSL_CTX_set_min_proto_version(accept_ctx.ssl_ctx, TLS1_2_VERSION);
        if (SSL_CTX_use_certificate_chain_file(accept_ctx.ssl_ctx, argv[2]) != 1 ||
            SSL_CTX_use_PrivateKey_file(accept_ctx.ssl_ctx, argv[3], SSL_FILETYPE_PEM) != 1) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
        h2o_ssl_register_alpn_protocols(accept_ctx.ssl_ctx, h2o_http2_alpn_protocols);
    }

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 || listen(fd, SOMAXCONN) != 0) {
        perror("listen");
        return 1;
    }
    h2o_socket_read_start(h2o_evloop_socket_create(ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ), on_accept);
    printf("listening on 127.0.0.1:%s%s\n", argv[1], argc == 4 ? " (TLS)" : "");

    while (h2o_evloop_run(ctx.loop, INT32_MAX) == 0)
        ;
    return 1;
}
