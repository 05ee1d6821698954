/* log_line.c - request and event lines, JSON or text. */
#include <string.h>
#include <time.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include "log_line.h"

/* Each field is cut to these, so that no line passes LOG_LINE_MAX even
 * with every byte of the client's fields escaped to 6. */
#define ID_MAX 64
#define METHOD_MAX 16
#define PATH_MAX_LOGGED 256
#define NAME_MAX_LOGGED 128        /* rpc, protocol, code, client, event name */
#define MSG_MAX 1024
_Static_assert(LOG_LINE_MAX >= 6 * (ID_MAX + METHOD_MAX + PATH_MAX_LOGGED) + 4 * NAME_MAX_LOGGED +
                                   512,  /* the names, time, numbers and punctuation */
               "a request line fits LOG_LINE_MAX");
_Static_assert(LOG_EVENT_MAX >= 6 * (MSG_MAX + NAME_MAX_LOGGED) + 512, "an event line fits");

/* A literal: its length is known when compiled. */
#define LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static char *put_n(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* A name of ours (rpc, protocol, code, client): copied as it is, cut at max. */
static char *put_s(char *p, const char *s, size_t max)
{
    return put_n(p, s, strnlen(s, max));
}

/* A name of ours, n up to NAME_MAX_LOGGED: short, and its length known
 * only now, which makes memcpy a call or a rep movsb. Copied in two words
 * that overlap as much as n needs. */
static inline __attribute__((always_inline)) char *put_short(char *p, const char *s, size_t n)
{
    if (n >= 16) {
        if (n > 32)
            return put_n(p, s, n);
        char a[16], b[16];
        memcpy(a, s, 16), memcpy(b, s + n - 16, 16);
        memcpy(p, a, 16), memcpy(p + n - 16, b, 16);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8), memcpy(&b, s + n - 8, 8);
        memcpy(p, &a, 8), memcpy(p + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4), memcpy(&b, s + n - 4, 4);
        memcpy(p, &a, 4), memcpy(p + n - 4, &b, 4);
    } else if (n) {
        char a = s[0], b = s[n / 2], c = s[n - 1];
        p[0] = a, p[n / 2] = b, p[n - 1] = c;
    }
    return p + n;
}

/* The same, for a name whose length the caller may know (len; 0: not). */
static inline __attribute__((always_inline)) char *put_name(char *p, const char *s, size_t len)
{
    return len ? put_short(p, s, len < NAME_MAX_LOGGED ? len : NAME_MAX_LOGGED)
               : put_s(p, s, NAME_MAX_LOGGED);
}

/* 16 bytes at a time, in GCC's vectors (SSE2 here, NEON on arm64). */
typedef signed char bytes16 __attribute__((vector_size(16)));
typedef unsigned char ubytes16 __attribute__((vector_size(16)));
typedef uint64_t words2 __attribute__((vector_size(16)));

/* Nonzero when a byte of w needs an escape in a JSON string: '"', '\\',
 * controls, DEL and bytes past ASCII (a path may hold any byte; the line
 * stays valid JSON and plain ASCII). The last three in one compare: one
 * added (wrapping), they and only they are below 0x21, signed. */
static inline int escapes16(words2 w)
{
    bytes16 v = (bytes16)w, next = (bytes16)((ubytes16)w + 1);
    bytes16 bad = (next < 0x21) | (v == '"') | (v == '\\');
#ifdef __SSE2__
    return _mm_movemask_epi8((__m128i)bad);
#else
    words2 b = (words2)bad;
    return (b[0] | b[1]) != 0;
#endif
}

/* From i on, byte by byte (what came before i was copied as it is). */
static __attribute__((noinline)) char *put_esc_bytes(char *p, const char *s, size_t n, size_t i)
{
    static const char hex[] = "0123456789abcdef";
    p += i;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            p[0] = '\\', p[1] = (char)c, p += 2;
        } else if (c >= 0x20 && c < 0x7f) {
            *p++ = (char)c;
        } else {
            p = LIT(p, "\\u00");
            p[0] = hex[c >> 4], p[1] = hex[c & 15], p += 2;
        }
    }
    return p;
}

/* Clean blocks (the most of a path or an id) are copied whole: of 16, the
 * last one overlapping the one before; below 16, two overlapping halves
 * make the one block. From a block that is not clean on, byte by byte.
 * Inlined: the clean way is a few instructions, less than a call's. */
static inline __attribute__((always_inline)) char *put_esc(char *p, const char *s, size_t n)
{
    size_t i = 0;
    if (n >= 16) {
        for (;;) {
            words2 w;
            memcpy(&w, s + i, 16);
            if (escapes16(w))
                break;
            memcpy(p + i, &w, 16);
            if (i + 16 == n)
                return p + n;
            i = i + 32 <= n ? i + 16 : n - 16;
        }
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, s + n - 8, 8);
        if (!escapes16((words2){a, b})) {
            memcpy(p, &a, 8);
            memcpy(p + n - 8, &b, 8);
            return p + n;
        }
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        uint64_t ab = a | (uint64_t)b << 32;
        if (!escapes16((words2){ab, ab})) {
            memcpy(p, &a, 4);
            memcpy(p + n - 4, &b, 4);
            return p + n;
        }
    }
    return put_esc_bytes(p, s, n, i);
}

static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                            "25262728293031323334353637383940414243444546474849"
                            "50515253545556575859606162636465666768697071727374"
                            "75767778798081828384858687888990919293949596979899";

/* Three digits of v (below 1000), leading zeros too. */
static char *put_3(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 100);
    memcpy(p + 1, pairs + v % 100 * 2, 2);
    return p + 3;
}

/* From 1000 on. Ids are the most of these (apps are numbered from 1000,
 * users from 10000): below a million, two groups of three digits, the
 * first without its leading zeros; above, the digits counted, then written
 * two at a time from the last. */
static __attribute__((noinline)) char *put_u_long(char *p, uint64_t v)
{
    if (v < 1000000) {
        unsigned high = (unsigned)v / 1000;
        if (high < 10)
            *p++ = (char)('0' + high);
        else if (high < 100)
            memcpy(p, pairs + high * 2, 2), p += 2;
        else
            p = put_3(p, high);
        return put_3(p, (unsigned)v % 1000);
    }
    size_t n = 3;
    for (uint64_t t = v / 1000; t; t /= 10)
        n++;
    char *q = p + n;
    for (; v >= 100; v /= 100)
        memcpy(q -= 2, pairs + v % 100 * 2, 2);
    if (v >= 10)
        memcpy(q - 2, pairs + v * 2, 2);
    else
        q[-1] = (char)('0' + v);
    return p + n;
}

/* Most numbers here are below 1000 (statuses, sizes): written here,
 * inlined. */
static inline __attribute__((always_inline)) char *put_u(char *p, uint64_t v)
{
    if (v < 10) {
        *p = (char)('0' + v);
        return p + 1;
    }
    if (v < 100)
        return memcpy(p, pairs + v * 2, 2), p + 2;
    if (v < 1000)
        return put_3(p, (unsigned)v);
    return put_u_long(p, v);
}

/* 2026-11-25T13:12:00.123Z. The loops give their own clock, read once an
 * iteration, so most lines have the same ms as the one before; the date is
 * formatted once a second per thread (strftime is a tenth of a Verify). */
#define TIME_LEN 24
static char *put_time(char *p, uint64_t ms)
{
    static __thread uint64_t last = UINT64_MAX;
    static __thread char b[32];
    if (ms != last) {
        if (ms / 1000 != last / 1000) {
            time_t t = (time_t)(ms / 1000);
            struct tm tm;
            gmtime_r(&t, &tm);
            if (strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S.000Z", &tm) != TIME_LEN)
                memcpy(b, "0000-00-00T00:00:00.000Z", TIME_LEN);  /* a clock gone wild */
        }
        unsigned f = (unsigned)(ms % 1000);
        b[20] = (char)('0' + f / 100), b[21] = (char)('0' + f / 10 % 10);
        b[22] = (char)('0' + f % 10);
        last = ms;
    }
    memcpy(p, b, TIME_LEN);
    return p + TIME_LEN;
}

/* ms with 3 decimals, as "%.3f" of ns / 1e6 writes it (no snprintf). */
static inline __attribute__((always_inline)) char *put_ms3(char *p, uint64_t ns)
{
    uint64_t us = (ns + 500) / 1000;
    p = put_u(p, us / 1000);
    *p = '.';
    return put_3(p + 1, (unsigned)(us % 1000));
}

static size_t min(size_t a, size_t b)
{
    return a < b ? a : b;
}

static char *json_request(char *p, const log_request *r)
{
    p = LIT(p, "{\"time\":\"");
    p = put_time(p, r->time_ms);
    p = LIT(p, "\",\"type\":\"request\"");
    if (r->request_id) {
        p = LIT(p, ",\"request_id\":\"");
        p = put_esc(p, r->request_id, min(r->request_id_len, ID_MAX));
        *p++ = '"';
    }
    if (r->method) {
        p = LIT(p, ",\"method\":\"");
        p = put_esc(p, r->method, min(r->method_len, METHOD_MAX));
        *p++ = '"';
    }
    if (r->path) {
        p = LIT(p, ",\"path\":\"");
        p = put_esc(p, r->path, min(r->path_len, PATH_MAX_LOGGED));
        *p++ = '"';
    }
    if (r->rpc) {
        p = LIT(p, ",\"rpc\":\"");
        p = put_name(p, r->rpc, r->rpc_len);
        *p++ = '"';
    }
    p = LIT(p, ",\"protocol\":\"");
    p = put_name(p, r->protocol, r->protocol_len);
    p = LIT(p, "\",\"status\":");
    p = put_u(p, (uint64_t)r->status);
    if (r->code) {
        p = LIT(p, ",\"code\":\"");
        p = put_name(p, r->code, r->code_len);
        *p++ = '"';
    }
    p = LIT(p, ",\"duration_ms\":");
    p = put_ms3(p, r->duration_ns);
    p = LIT(p, ",\"bytes_in\":");
    p = put_u(p, r->bytes_in);
    p = LIT(p, ",\"bytes_out\":");
    p = put_u(p, r->bytes_out);
    if (r->client && *r->client) {
        p = LIT(p, ",\"client\":\"");
        p = put_name(p, r->client, r->client_len);
        *p++ = '"';
    }
    if (r->app_id) {
        p = LIT(p, ",\"app_id\":");
        p = put_u(p, r->app_id);
    }
    if (r->user_id) {
        p = LIT(p, ",\"user_id\":");
        p = put_u(p, r->user_id);
    }
    *p++ = '}';
    return p;
}

/* TIME request ID CLIENT "METHOD PATH" RPC PROTOCOL STATUS CODE DURATIONms in= out= app= user= */
static char *text_request(char *p, const log_request *r)
{
    p = put_time(p, r->time_ms);
    p = LIT(p, " request ");
    p = r->request_id ? put_esc(p, r->request_id, min(r->request_id_len, ID_MAX)) : LIT(p, "-");
    *p++ = ' ';
    p = r->client && *r->client ? put_name(p, r->client, r->client_len) : LIT(p, "-");
    p = LIT(p, " \"");
    if (r->method)
        p = put_esc(p, r->method, min(r->method_len, METHOD_MAX));
    *p++ = ' ';
    if (r->path)
        p = put_esc(p, r->path, min(r->path_len, PATH_MAX_LOGGED));
    p = LIT(p, "\" ");
    p = r->rpc ? put_name(p, r->rpc, r->rpc_len) : LIT(p, "-");
    *p++ = ' ';
    p = put_name(p, r->protocol, r->protocol_len);
    *p++ = ' ';
    p = put_u(p, (uint64_t)r->status);
    *p++ = ' ';
    p = r->code ? put_name(p, r->code, r->code_len) : LIT(p, "-");
    *p++ = ' ';
    p = put_ms3(p, r->duration_ns);
    p = LIT(p, "ms in=");
    p = put_u(p, r->bytes_in);
    p = LIT(p, " out=");
    p = put_u(p, r->bytes_out);
    p = LIT(p, " app=");
    p = put_u(p, r->app_id);
    p = LIT(p, " user=");
    p = put_u(p, r->user_id);
    return p;
}

size_t log_line_request(char *buf, log_format format, const log_request *r)
{
    char *p = format == LOG_FORMAT_JSON ? json_request(buf, r) : text_request(buf, r);
    *p++ = '\n';
    return (size_t)(p - buf);
}

size_t log_line_event(char *buf, log_format format, int started, uint64_t time_ms,
                      log_level level, const char *event, const char *msg)
{
    char *p = buf;
    size_t msg_len = strnlen(msg, MSG_MAX), event_len = strnlen(event, NAME_MAX_LOGGED);
    if (!started) {
        p = LIT(p, "tokend: ");
        p = put_n(p, msg, msg_len);
    } else if (format == LOG_FORMAT_JSON) {
        p = LIT(p, "{\"time\":\"");
        p = put_time(p, time_ms);
        p = LIT(p, "\",\"type\":\"event\",\"level\":\"");
        p = put_s(p, level_names[level], NAME_MAX_LOGGED);
        p = LIT(p, "\",\"event\":\"");
        p = put_esc(p, event, event_len);
        p = LIT(p, "\",\"msg\":\"");
        p = put_esc(p, msg, msg_len);
        p = LIT(p, "\"}");
    } else {
        p = put_time(p, time_ms);
        *p++ = ' ';
        p = put_s(p, level_names[level], NAME_MAX_LOGGED);
        *p++ = ' ';
        p = put_n(p, event, event_len);
        p = LIT(p, ": tokend: ");
        p = put_n(p, msg, msg_len);
    }
    *p++ = '\n';
    return (size_t)(p - buf);
}
