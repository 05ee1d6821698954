/* metrics.h - what /metrics reports, kept where it happens and summed when
 * scraped.
 *
 * Each event loop owns one metrics_loop and is the only thread that writes
 * it: a request adds to its loop's counters with a plain increment (no
 * lock, no atomic read-modify-write; METRIC_ADD is a relaxed load and a
 * relaxed store, which compile to an ordinary add). A scrape, on any loop,
 * reads every loop's counters with relaxed loads and sums them; the rest
 * (worker pool, LMDB, per-app counts, the process) is read at scrape time
 * from what already keeps it. metrics_render writes the Prometheus text
 * exposition format (version 0.0.4). */
#ifndef TOKEND_METRICS_H
#define TOKEND_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include "tokend.h"

struct router;

enum { METRIC_JSON, METRIC_PROTOBUF, METRIC_GRPC, METRIC_GRPC_WEB, METRIC_FORMS };
#define METRIC_CODES 17          /* gRPC status codes 0 .. 16 */
#define METRIC_BUCKETS 16        /* latency buckets, +Inf apart */

/* Label values: "json" ..., "OK" ... "UNAUTHENTICATED". */
extern const char *const metric_form_names[METRIC_FORMS];
extern const char *const metric_code_names[METRIC_CODES];
extern const unsigned char metric_form_name_lens[METRIC_FORMS]; /* strlen of each name */
extern const unsigned char metric_code_name_lens[METRIC_CODES];

#define METRIC_ADD(field, n) \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)
#define METRIC_GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

typedef struct {
    uint64_t count[METRIC_BUCKETS + 1];   /* per bucket, not cumulative; last: +Inf */
    uint64_t sum_ns;
} metric_latency;

/* One loop's counters. Per RPC arrays have router_count() + 1 rows: the
 * last is for requests no RPC took (unknown path, 415, /metrics ...). */
typedef struct metrics_loop {
    size_t nrpcs;
    uint64_t (*requests)[METRIC_FORMS][METRIC_CODES];
    metric_latency *latency;
    uint64_t logins_ok, logins_failed, logins_throttled;
    uint64_t conns;                  /* gauge: open connections of the loop */
    uint64_t calls;                  /* gauge: calls being answered (HTTP/2 streams, HTTP/1 requests) */
    uint64_t log_dropped;            /* access log lines dropped: the buffer was full */
    /* Not counters: the loop's other observation state. */
    struct log_ring *log;            /* the loop's access log ring (log.h), or NULL */
    uint64_t next_request_id;        /* request ids made by this loop */
    char request_id_prefix[24];      /* random per process, then the loop's number */
    size_t request_id_prefix_len;
} metrics_loop;

metrics_loop *metrics_loop_new(size_t nrpcs);
void metrics_loop_free(metrics_loop *m);

/* A finished request: its RPC (index, or nrpcs for none), wire form,
 * status and duration. On the loop's thread. */
static inline void metrics_request(metrics_loop *m, size_t rpc, int form, unsigned code,
                                   uint64_t ns)
{
    static const uint64_t le_ns[METRIC_BUCKETS] = {
        10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
        25000000, 50000000, 100000000, 250000000, 1000000000, 5000000000};
    unsigned b = 0;
    if (!m)
        return;
    if (rpc > m->nrpcs)
        rpc = m->nrpcs;
    METRIC_ADD(m->requests[rpc][form][code < METRIC_CODES ? code : 2], 1);
    while (b < METRIC_BUCKETS && ns > le_ns[b])
        b++;
    METRIC_ADD(m->latency[rpc].count[b], 1);
    METRIC_ADD(m->latency[rpc].sum_ns, ns);
}

/* Everything a scrape reads. The loops' array is fixed once serving starts. */
typedef struct {
    tokend_ctx *ctx;
    const struct router *router;
    metrics_loop **loops;
    size_t nloops;
    int64_t start_ms;                /* wall clock, for process_start_time_seconds */
} metrics_registry;

/* Who a scrape is for. The client port answers whoever reaches it: it
 * leaves out what one app's users must not learn of another's (the
 * per-app counts); --metrics-listen is the operator's port. */
enum { METRICS_CLIENT_PORT, METRICS_OPERATOR_PORT };

/* The whole exposition into a malloc'd buffer; returns its length, or 0
 * (and *out NULL) when out of memory. */
size_t metrics_render(const metrics_registry *reg, int port, char **out);

#endif
