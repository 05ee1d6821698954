/* log.c - the access log rings, the event queue and the writer thread.
 *
 * The process has one log, as it has one stderr: its state is this file's
 * (set up by log_start before the loops run, torn down by log_stop after). */
#define _GNU_SOURCE   /* pthread_setname_np */
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
#include "log_line.h"

#define RING_BYTES (256u << 10)     /* per loop: ~1000 lines */
#define EVENTS_BYTES (64u << 10)
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

/* --- producers -------------------------------------------------------------- */

void log_event(log_level level, const char *event, const char *fmt, ...)
{
    char msg[1024], line[LOG_EVENT_MAX];
    struct timespec ts;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    pthread_mutex_lock(&L.lock);
    size_t n = log_line_event(line, L.format, L.running, ms, level, event, msg);
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

/* The ring has no LOG_LINE_MAX of room in one piece (it is nearly full, or
 * its end is near): the line is made aside, and then it fits or is dropped. */
static __attribute__((noinline)) size_t access_aside(log_ring *ring, const log_request *req,
                                                     size_t head, size_t room)
{
    char line[LOG_LINE_MAX];
    size_t n = log_line_request(line, L.format, req);
    if (room < n)
        return 0;
    size_t at = head % RING_BYTES, first = RING_BYTES - at < n ? RING_BYTES - at : n;
    memcpy(ring->buf + at, line, first);
    memcpy(ring->buf, line + first, n - first);
    return n;
}

int log_access(log_ring *ring, const log_request *req)
{
    if (!ring)
        return -1;
    size_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
    size_t room = RING_BYTES - (head - tail), at = head % RING_BYTES, n;
    /* Past head is the loop's until it moves head: the writer reads below it. */
    if (room >= LOG_LINE_MAX && RING_BYTES - at >= LOG_LINE_MAX)
        n = log_line_request(ring->buf + at, L.format, req);
    else if (!(n = access_aside(ring, req, head, room)))
        return -1;
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
    pthread_setname_np(L.writer, "tokend-log");
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
