/* log.h - the server's log: one structured line per request (the access
 * log) and server events (start, reload, drain, map growth, disk full,
 * purge) at levels, as JSON lines or text.
 *
 * Nothing here blocks an event loop. Each loop writes its access lines
 * into a ring of its own (one producer, one consumer: no lock); a writer
 * thread drains the rings and the event queue every few milliseconds and
 * does the write(2)s. A line that finds its ring full is dropped and
 * counted (tokend_log_lines_dropped_total). Events come from any thread
 * and are rare: they go through a small queue under a mutex.
 *
 * Before log_start (the CLI, start-up errors) events are written at once
 * to stderr as "tokend: message", as they always were.
 *
 * No secret is ever given to this module: request lines carry the path
 * without its query string, ids, sizes and statuses, never a header or a
 * body. */
#ifndef TOKEND_LOG_H
#define TOKEND_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;
typedef enum { LOG_FORMAT_JSON, LOG_FORMAT_TEXT } log_format;

/* `access`: "off", "stderr" or a file path (opened for appending, made
 * 0640 if missing). Starts the writer thread. 0, or -1 with err. */
int log_start(log_format format, const char *access, char *err, size_t errlen);
/* Flushes what is buffered and stops the writer thread. */
void log_stop(void);
/* Reopens the access log file (SIGHUP, after logrotate moved it). */
void log_reopen(void);
/* 1 when request lines are written at all (not --access-log off). */
int log_access_enabled(void);

void log_event(log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One event loop's ring. Made before log_start or after: registered with
 * the writer either way; freed by log_stop. */
typedef struct log_ring log_ring;
log_ring *log_ring_new(void);

/* One request's line. Strings may be NULL (left out). What came from the
 * client (id, method, path) is escaped; names of ours are copied as they
 * are. */
typedef struct {
    uint64_t time_ms;          /* wall clock, ms since the epoch */
    const char *request_id;
    const char *method;
    const char *path;          /* without the query string */
    size_t request_id_len, method_len, path_len;
    const char *rpc;           /* "tokend.v1.Tokend/Verify", or NULL */
    const char *protocol;      /* json, protobuf, grpc, grpc-web */
    int status;                /* HTTP status */
    const char *code;          /* gRPC status name */
    uint64_t duration_ns;
    uint64_t bytes_in, bytes_out;
    const char *client;        /* peer address */
    uint64_t app_id, user_id;  /* 0: not known */
    /* The lengths of rpc, protocol, code and client when the caller knows
     * them (a strnlen apiece is a few percent of the line); 0: measured. */
    size_t rpc_len, protocol_len, code_len, client_len;
} log_request;

/* Queues the line on the loop's ring; returns 0, or -1 when it was dropped
 * (the caller counts it). */
int log_access(log_ring *ring, const log_request *r);

#endif
