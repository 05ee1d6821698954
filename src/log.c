/* log.c - the access log rings, the event queue and the writer thread.
 *
 * The process has one log, as it has one stderr: its state is this file's
 * (set up by log_start before the loops run, torn down by log_stop after). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

#define RING_BYTES (256u << 10)     /* per loop: ~1000 lines */
#define EVENTS_BYTES (64u << 10)
#define LINE_MAX_BYTES 2048
#define FLUSH_EVERY_MS 20
#define RINGS_MAX 300

struct log_ring {
    _Atomic size_t head;            /* written by the loop */
    _Atomic size_t tail;            /* written by the writer */
    char buf[RING_BYTES];
};

static struct {
    pthread_mutex_t lock;           /* events, rings[], the access fd on reopen */
    pthread_cond_t wake;
    pthread_t writer;
    int running, stopping;
    log_format format;
    int access_fd;                  /* -1: off */
    const char *access_path;        /* NULL: stderr */
    int reopen;
    log_ring *rings[RINGS_MAX];
    size_t nrings;
    char events[EVENTS_BYTES];
    size_t events_len;
} L = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, .access_fd = 2};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* --- formatting ------------------------------------------------------------ */

typedef struct {
    char *p, *end;
} out;

static void put_n(out *o, const char *s, size_t n)
{
    if ((size_t)(o->end - o->p) < n)
        n = (size_t)(o->end - o->p);
    memcpy(o->p, s, n);
    o->p += n;
}

static void put_s(out *o, const char *s)
{
    put_n(o, s, strlen(s));
}

static void put_u(out *o, uint64_t v)
{
    char b[24];
    int i = sizeof b;
    do
        b[--i] = (char)('0' + v % 10);
    while (v /= 10);
    put_n(o, b + i, sizeof b - (size_t)i);
}

/* A JSON string's contents: quotes, backslashes, controls and bytes past
 * ASCII escaped (a path may hold any bytes; the line stays valid JSON). */
static void put_esc(out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n && o->p < o->end; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t j = i;   /* a run of bytes that need no escape: one copy */
        while (j < n && s[j] != '"' && s[j] != '\\' && (unsigned char)s[j] >= 0x20 &&
               (unsigned char)s[j] < 0x7f)
            j++;
        if (j > i) {
            put_n(o, s + i, j - i);
            i = j - 1;
            continue;
        }
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put_n(o, e, 2);
        } else if (c < 0x20 || c >= 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put_n(o, e, 6);
        } else {
            *o->p++ = (char)c;
        }
    }
}

/* 2026-11-25T13:12:00.123Z. The seconds are formatted once a second per
 * thread (strftime is a tenth of a Verify); the milliseconds by hand. */
static void put_time(out *o)
{
    static __thread time_t sec = -1;
    static __thread char b[32];
    static __thread size_t n;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        n = strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
        sec = ts.tv_sec;
    }
    unsigned ms = (unsigned)(ts.tv_nsec / 1000000);
    char f[5] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                 'Z'};
    put_n(o, b, n);
    put_n(o, f, sizeof f);
}

/* ms with 3 decimals, as "%.3f" of ns / 1e6 writes it (no snprintf). */
static void put_ms3(out *o, uint64_t ns)
{
    uint64_t us = (ns + 500) / 1000;
    unsigned frac = (unsigned)(us % 1000);
    char f[4] = {'.', (char)('0' + frac / 100), (char)('0' + frac / 10 % 10),
                 (char)('0' + frac % 10)};
    put_u(o, us / 1000);
    put_n(o, f, sizeof f);
}

static void put_field(out *o, const char *name, const char *v, size_t n, int *first)
{
    put_n(o, *first ? "{\"" : ",\"", 2);
    *first = 0;
    put_s(o, name);
    put_n(o, "\":\"", 3);
    put_esc(o, v, n);
    put_n(o, "\"", 1);
}

static void put_num(out *o, const char *name, uint64_t v)
{
    put_s(o, ",\"");
    put_s(o, name);
    put_s(o, "\":");
    put_u(o, v);
}

static size_t format_request(char *buf, size_t len, const log_request *r)
{
    out o = {buf, buf + len - 1};
    if (L.format == LOG_FORMAT_JSON) {
        int first = 1;
        char t[40];
        out to = {t, t + sizeof t};
        put_time(&to);
        put_field(&o, "time", t, (size_t)(to.p - t), &first);
        put_s(&o, ",\"type\":\"request\"");
        if (r->request_id)
            put_field(&o, "request_id", r->request_id, strlen(r->request_id), &first);
        if (r->method)
            put_field(&o, "method", r->method, strlen(r->method), &first);
        if (r->path)
            put_field(&o, "path", r->path, r->path_len, &first);
        if (r->rpc)
            put_field(&o, "rpc", r->rpc, strlen(r->rpc), &first);
        put_field(&o, "protocol", r->protocol, strlen(r->protocol), &first);
        put_num(&o, "status", (uint64_t)r->status);
        if (r->code)
            put_field(&o, "code", r->code, strlen(r->code), &first);
        put_s(&o, ",\"duration_ms\":");
        put_ms3(&o, r->duration_ns);
        put_num(&o, "bytes_in", r->bytes_in);
        put_num(&o, "bytes_out", r->bytes_out);
        if (r->client && *r->client)
            put_field(&o, "client", r->client, strlen(r->client), &first);
        if (r->app_id)
            put_num(&o, "app_id", r->app_id);
        if (r->user_id)
            put_num(&o, "user_id", r->user_id);
        put_s(&o, "}");
    } else {
        put_time(&o);
        put_s(&o, " request ");
        put_s(&o, r->request_id ? r->request_id : "-");
        put_s(&o, " ");
        put_s(&o, r->client && *r->client ? r->client : "-");
        put_s(&o, " \"");
        if (r->method)
            put_esc(&o, r->method, strlen(r->method));
        put_s(&o, " ");
        if (r->path)
            put_esc(&o, r->path, r->path_len);
        put_s(&o, "\" ");
        put_s(&o, r->rpc ? r->rpc : "-");
        put_s(&o, " ");
        put_s(&o, r->protocol);
        put_s(&o, " ");
        put_u(&o, (uint64_t)r->status);
        put_s(&o, " ");
        put_s(&o, r->code ? r->code : "-");
        put_s(&o, " ");
        put_ms3(&o, r->duration_ns);
        put_s(&o, "ms in=");
        put_u(&o, r->bytes_in);
        put_s(&o, " out=");
        put_u(&o, r->bytes_out);
        put_s(&o, " app=");
        put_u(&o, r->app_id);
        put_s(&o, " user=");
        put_u(&o, r->user_id);
    }
    *o.p++ = '\n';
    return (size_t)(o.p - buf);
}

static size_t format_event(char *buf, size_t len, log_level level, const char *event,
                           const char *msg)
{
    out o = {buf, buf + len - 1};
    if (!L.running) {
        put_s(&o, "tokend: ");
        put_s(&o, msg);
    } else if (L.format == LOG_FORMAT_JSON) {
        int first = 1;
        char t[40];
        out to = {t, t + sizeof t};
        put_time(&to);
        put_field(&o, "time", t, (size_t)(to.p - t), &first);
        put_s(&o, ",\"type\":\"event\"");
        put_field(&o, "level", level_names[level], strlen(level_names[level]), &first);
        put_field(&o, "event", event, strlen(event), &first);
        put_field(&o, "msg", msg, strlen(msg), &first);
        put_s(&o, "}");
    } else {
        put_time(&o);
        put_s(&o, " ");
        put_s(&o, level_names[level]);
        put_s(&o, " ");
        put_s(&o, event);
        put_s(&o, ": tokend: ");
        put_s(&o, msg);
    }
    *o.p++ = '\n';
    return (size_t)(o.p - buf);
}

/* --- producers -------------------------------------------------------------- */

void log_event(log_level level, const char *event, const char *fmt, ...)
{
    char msg[1024], line[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&L.lock);
    size_t n = format_event(line, sizeof line, level, event, msg);
    if (!L.running) {
        pthread_mutex_unlock(&L.lock);
        fwrite(line, 1, n, stderr);
        fflush(stderr);
        return;
    }
    if (L.events_len + n <= sizeof L.events) {
        memcpy(L.events + L.events_len, line, n);
        L.events_len += n;
    }
    pthread_cond_signal(&L.wake);
    pthread_mutex_unlock(&L.lock);
}

log_ring *log_ring_new(void)
{
    log_ring *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_lock(&L.lock);
    if (L.nrings == RINGS_MAX) {
        pthread_mutex_unlock(&L.lock);
        free(r);
        return NULL;
    }
    L.rings[L.nrings++] = r;
    pthread_mutex_unlock(&L.lock);
    return r;
}

int log_access_enabled(void)
{
    return L.running && L.access_fd >= 0;
}

int log_access(log_ring *ring, const log_request *req)
{
    char line[LINE_MAX_BYTES];
    if (!ring)
        return -1;
    size_t n = format_request(line, sizeof line, req);
    size_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
    if (RING_BYTES - (head - tail) < n)
        return -1;
    size_t at = head % RING_BYTES, first = RING_BYTES - at < n ? RING_BYTES - at : n;
    memcpy(ring->buf + at, line, first);
    memcpy(ring->buf, line + first, n - first);
    atomic_store_explicit(&ring->head, head + n, memory_order_release);
    return 0;
}

/* --- the writer ---------------------------------------------------------------- */

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;  /* a log that cannot be written is lost, not retried forever */
        p += w, n -= (size_t)w;
    }
}

static int open_access(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/* Writes what the rings and the event queue hold. The lock is held. */
static void drain(void)
{
    static char events[EVENTS_BYTES];
    size_t ne = L.events_len;
    memcpy(events, L.events, ne);
    L.events_len = 0;
    if (L.reopen && L.access_path) {
        int fd = open_access(L.access_path);
        if (fd >= 0) {
            close(L.access_fd);
            L.access_fd = fd;
        }
    }
    L.reopen = 0;
    size_t nrings = L.nrings;
    int fd = L.access_fd;
    pthread_mutex_unlock(&L.lock);
    if (ne)
        write_all(2, events, ne);
    for (size_t i = 0; i < nrings; i++) {
        log_ring *r = L.rings[i];
        size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        if (head == tail)
            continue;
        size_t at = tail % RING_BYTES, n = head - tail;
        size_t first = RING_BYTES - at < n ? RING_BYTES - at : n;
        if (fd >= 0) {
            write_all(fd, r->buf + at, first);
            write_all(fd, r->buf, n - first);
        }
        atomic_store_explicit(&r->tail, head, memory_order_release);
    }
    pthread_mutex_lock(&L.lock);
}

static void *writer(void *arg)
{
    pthread_mutex_lock(&L.lock);
    while (!L.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += FLUSH_EVERY_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L)
            until.tv_sec++, until.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&L.wake, &L.lock, &until);
        drain();
    }
    drain();
    pthread_mutex_unlock(&L.lock);
    return NULL;
}

int log_start(log_format format, const char *access, char *err, size_t errlen)
{
    int fd = 2;
    if (strcmp(access, "off") == 0)
        fd = -1;
    else if (strcmp(access, "stderr") != 0 && (fd = open_access(access)) < 0) {
        snprintf(err, errlen, "cannot open the access log %s: %s", access, strerror(errno));
        return -1;
    }
    pthread_mutex_lock(&L.lock);
    L.format = format;
    L.access_fd = fd;
    L.access_path = fd > 2 ? access : NULL;
    L.stopping = 0;
    if (pthread_create(&L.writer, NULL, writer, NULL) != 0) {
        pthread_mutex_unlock(&L.lock);
        if (fd > 2)
            close(fd);
        snprintf(err, errlen, "cannot start the log writer thread");
        return -1;
    }
    L.running = 1;
    pthread_mutex_unlock(&L.lock);
    return 0;
}

void log_reopen(void)
{
    pthread_mutex_lock(&L.lock);
    L.reopen = 1;
    pthread_mutex_unlock(&L.lock);
}

void log_stop(void)
{
    pthread_mutex_lock(&L.lock);
    if (!L.running) {
        pthread_mutex_unlock(&L.lock);
        return;
    }
    L.stopping = 1;
    pthread_cond_signal(&L.wake);
    pthread_mutex_unlock(&L.lock);
    pthread_join(L.writer, NULL);
    pthread_mutex_lock(&L.lock);
    L.running = 0;
    if (L.access_fd > 2)
        close(L.access_fd);
    L.access_fd = 2;
    for (size_t i = 0; i < L.nrings; i++)
        free(L.rings[i]);
    L.nrings = 0;
    pthread_mutex_unlock(&L.lock);
}
