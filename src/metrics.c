/* metrics.c - the Prometheus text exposition of tokend's counters.
 *
 * Nothing here runs on a request's path but the scrape's own: the loops'
 * counters are summed (relaxed loads of what each loop alone writes), the
 * pool is asked under its mutex, LMDB answers from its environment info
 * and reader table, and the per-app numbers come from counters the store's
 * writes keep (store_app_counts: a cursor over a few keys per app, no scan
 * of users or sessions). */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "metrics.h"
#include "router.h"

metrics_loop *metrics_loop_new(size_t nrpcs)
{
    metrics_loop *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nrpcs = nrpcs;
    m->requests = calloc(nrpcs + 1, sizeof *m->requests);
    m->latency = calloc(nrpcs + 1, sizeof *m->latency);
    if (!m->requests || !m->latency) {
        metrics_loop_free(m);
        return NULL;
    }
    return m;
}

void metrics_loop_free(metrics_loop *m)
{
    if (m) {
        free(m->requests);
        free(m->latency);
        free(m);
    }
}

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} out_buf;

static void put(out_buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out_buf *o, const char *fmt, ...)
{
    va_list ap;
    for (int tries = 0; tries < 2 && !o->failed; tries++) {
        va_start(ap, fmt);
        int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->buf ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if (o->buf && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap ? o->cap : 16384;
        while (cap <= o->len + (size_t)n)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->failed = 1;
            return;
        }
        o->buf = b, o->cap = cap;
    }
}

static void head(out_buf *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Each list once: the names, and their lengths for the access log line. */
#define FORM_NAMES(X) X("json") X("protobuf") X("grpc") X("grpc-web")
#define CODE_NAMES(X)                                                                            \
    X("OK") X("CANCELLED") X("UNKNOWN") X("INVALID_ARGUMENT") X("DEADLINE_EXCEEDED")             \
    X("NOT_FOUND") X("ALREADY_EXISTS") X("PERMISSION_DENIED") X("RESOURCE_EXHAUSTED")            \
    X("FAILED_PRECONDITION") X("ABORTED") X("OUT_OF_RANGE") X("UNIMPLEMENTED") X("INTERNAL")     \
    X("UNAVAILABLE") X("DATA_LOSS") X("UNAUTHENTICATED")
#define NAME_OF(s) s,
#define LEN_OF(s) sizeof(s) - 1,
const char *const metric_form_names[METRIC_FORMS] = {FORM_NAMES(NAME_OF)};
const unsigned char metric_form_name_lens[METRIC_FORMS] = {FORM_NAMES(LEN_OF)};
const char *const metric_code_names[METRIC_CODES] = {CODE_NAMES(NAME_OF)};
const unsigned char metric_code_name_lens[METRIC_CODES] = {CODE_NAMES(LEN_OF)};
static const double le_s[METRIC_BUCKETS] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            1, 5};

static const char *rpc_name(const metrics_registry *reg, size_t i)
{
    const router_rpc *r = router_at(reg->router, i);
    return r ? r->grpc_path + 1 : "none";
}

static void render_requests(const metrics_registry *reg, out_buf *o)
{
    size_t n = router_count(reg->router);
    head(o, "tokend_requests_total", "counter",
         "Requests answered, by RPC (none: no RPC took it), wire protocol and gRPC status code.");
    for (size_t r = 0; r <= n; r++)
        for (int f = 0; f < METRIC_FORMS; f++)
            for (int c = 0; c < METRIC_CODES; c++) {
                uint64_t sum = 0;
                for (size_t l = 0; l < reg->nloops; l++)
                    sum += METRIC_GET(reg->loops[l]->requests[r][f][c]);
                if (sum)
                    put(o, "tokend_requests_total{rpc=\"%s\",protocol=\"%s\",code=\"%s\"} %llu\n",
                        rpc_name(reg, r), metric_form_names[f], metric_code_names[c], (unsigned long long)sum);
            }
    head(o, "tokend_request_duration_seconds", "histogram",
         "Time from the request's arrival to its answer, by RPC.");
    for (size_t r = 0; r <= n; r++) {
        uint64_t b[METRIC_BUCKETS + 1] = {0}, sum_ns = 0, total = 0;
        for (size_t l = 0; l < reg->nloops; l++) {
            for (int i = 0; i <= METRIC_BUCKETS; i++)
                b[i] += METRIC_GET(reg->loops[l]->latency[r].count[i]);
            sum_ns += METRIC_GET(reg->loops[l]->latency[r].sum_ns);
        }
        for (int i = 0; i <= METRIC_BUCKETS; i++)
            total += b[i];
        if (!total)
            continue;
        uint64_t cum = 0;
        for (int i = 0; i < METRIC_BUCKETS; i++) {
            cum += b[i];
            put(o, "tokend_request_duration_seconds_bucket{rpc=\"%s\",le=\"%g\"} %llu\n",
                rpc_name(reg, r), le_s[i], (unsigned long long)cum);
        }
        put(o, "tokend_request_duration_seconds_bucket{rpc=\"%s\",le=\"+Inf\"} %llu\n",
            rpc_name(reg, r), (unsigned long long)total);
        put(o, "tokend_request_duration_seconds_sum{rpc=\"%s\"} %.9f\n", rpc_name(reg, r),
            (double)sum_ns / 1e9);
        put(o, "tokend_request_duration_seconds_count{rpc=\"%s\"} %llu\n", rpc_name(reg, r),
            (unsigned long long)total);
    }
}

static uint64_t loops_sum(const metrics_registry *reg, size_t offset)
{
    uint64_t sum = 0;
    for (size_t l = 0; l < reg->nloops; l++)
        sum += __atomic_load_n((uint64_t *)((char *)reg->loops[l] + offset), __ATOMIC_RELAXED);
    return sum;
}

#define SUM(field) loops_sum(reg, offsetof(metrics_loop, field))

typedef struct {
    uint64_t (*rows)[4];        /* app_id, users, sessions, admin tokens */
    size_t n, cap;
} app_rows;

static void collect_app(uint64_t app_id, uint64_t users, uint64_t sessions, uint64_t admin,
                        void *arg)
{
    app_rows *a = arg;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        uint64_t (*rows)[4] = realloc(a->rows, cap * sizeof *rows);
        if (!rows)
            return;
        a->rows = rows, a->cap = cap;
    }
    a->rows[a->n][0] = app_id, a->rows[a->n][1] = users, a->rows[a->n][2] = sessions;
    a->rows[a->n++][3] = admin;
}

static void render_apps(const metrics_registry *reg, out_buf *o)
{
    static const char *const names[3] = {"tokend_app_users", "tokend_app_sessions",
                                         "tokend_app_admin_tokens"};
    static const char *const helps[3] = {
        "Users of each app (counted by the store's writes, not scanned).",
        "Sessions of each app, expired ones included until the purge removes them.",
        "Admin tokens of each app."};
    app_rows a = {0};
    store_app_counts(reg->ctx->store, collect_app, &a);
    for (int k = 0; k < 3; k++) {
        head(o, names[k], "gauge", helps[k]);
        for (size_t i = 0; i < a.n; i++)
            put(o, "%s{app_id=\"%llu\"} %llu\n", names[k], (unsigned long long)a.rows[i][0],
                (unsigned long long)a.rows[i][k + 1]);
    }
    free(a.rows);
}

static void render_process(const metrics_registry *reg, out_buf *o)
{
    long page = sysconf(_SC_PAGESIZE);
    unsigned long long vm = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vm, &rss) != 2)
            vm = rss = 0;
        fclose(f);
    }
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
              ru.ru_stime.tv_usec / 1e6;
    unsigned fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *e; (e = readdir(d));)
            fds += e->d_name[0] != '.';
        closedir(d);
        fds--;  /* the directory's own */
    }
    head(o, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
    put(o, "process_cpu_seconds_total %.3f\n", cpu);
    head(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
    head(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    put(o, "process_virtual_memory_bytes %llu\n", vm * (unsigned long long)page);
    head(o, "process_open_fds", "gauge", "Open file descriptors.");
    put(o, "process_open_fds %u\n", fds);
    head(o, "process_start_time_seconds", "gauge", "Start time of the process, Unix seconds.");
    put(o, "process_start_time_seconds %.3f\n", (double)reg->start_ms / 1000);
}

size_t metrics_render(const metrics_registry *reg, int port, char **out)
{
    out_buf o = {0};
    tokend_ctx *ctx = reg->ctx;

    head(&o, "tokend_build_info", "gauge", "The running version.");
    put(&o, "tokend_build_info{version=\"%s\"} 1\n", TOKEND_VERSION);
    render_requests(reg, &o);

    head(&o, "tokend_logins_total", "counter",
         "Password logins by result: success, failure (unknown user, wrong password, refused), "
         "throttled (429 before any hash).");
    put(&o, "tokend_logins_total{result=\"success\"} %llu\n", (unsigned long long)SUM(logins_ok));
    put(&o, "tokend_logins_total{result=\"failure\"} %llu\n",
        (unsigned long long)SUM(logins_failed));
    put(&o, "tokend_logins_total{result=\"throttled\"} %llu\n",
        (unsigned long long)SUM(logins_throttled));
    head(&o, "tokend_password_hash_work_total", "counter",
         "Argon2id work of password checks, in KiB-passes (t x m): unknown names and wrong "
         "passwords of real accounts cost the same per attempt.");
    put(&o, "tokend_password_hash_work_total %llu\n", crypto_password_work());

    pool_counts pc = {0};
    pool_stats(ctx->pool, &pc);
    head(&o, "tokend_pool_workers", "gauge", "Worker threads (Argon2id, writes).");
    put(&o, "tokend_pool_workers %u\n", ctx->config->workers);
    head(&o, "tokend_pool_queue_depth", "gauge", "Jobs waiting for a worker.");
    put(&o, "tokend_pool_queue_depth %u\n", pc.queued);
    head(&o, "tokend_pool_running", "gauge", "Jobs being run by a worker.");
    put(&o, "tokend_pool_running %u\n", pc.running);
    head(&o, "tokend_pool_rejected_total", "counter", "Jobs refused by a full pool (503).");
    put(&o, "tokend_pool_rejected_total %llu\n", pc.rejected);
    head(&o, "tokend_password_checks_total", "counter",
         "Logins' password checks the workers ran (slow jobs: the hash, the session's write).");
    put(&o, "tokend_password_checks_total %llu\n", pc.slow_jobs);
    head(&o, "tokend_password_check_seconds_total", "counter",
         "Time the password checks took: wall clock, and the workers' CPU. Wall above CPU: "
         "they shared a CPU; CPU per check above an idle machine's: caches and memory contended.");
    put(&o, "tokend_password_check_seconds_total{clock=\"wall\"} %.6f\n", pc.slow_wall_ns / 1e9);
    put(&o, "tokend_password_check_seconds_total{clock=\"cpu\"} %.6f\n", pc.slow_cpu_ns / 1e9);
    head(&o, "tokend_password_memory_bytes", "gauge",
         "Argon2id memory kept for the next hashes: an area per hash run at once, unmapped "
         "after a purge interval unused.");
    put(&o, "tokend_password_memory_bytes %zu\n", crypto_area_bytes());
    head(&o, "tokend_pool_rests_total", "counter",
         "Rests a worker took because its hash took CPU from a busy event loop (logins refused "
         "meanwhile).");
    put(&o, "tokend_pool_rests_total %llu\n", pc.rests);

    head(&o, "tokend_connections_open", "gauge", "Open client connections.");
    put(&o, "tokend_connections_open %llu\n", (unsigned long long)SUM(conns));
    head(&o, "tokend_streams_open", "gauge",
         "Requests being answered: open HTTP/2 streams and HTTP/1.1 requests in progress.");
    put(&o, "tokend_streams_open %llu\n", (unsigned long long)SUM(calls));
    head(&o, "tokend_log_lines_dropped_total", "counter",
         "Access log lines dropped because the log buffer was full.");
    put(&o, "tokend_log_lines_dropped_total %llu\n", (unsigned long long)SUM(log_dropped));

    store_stats st;
    if (store_stats_get(ctx->store, &st) == STORE_OK) {
        head(&o, "tokend_lmdb_map_size_bytes", "gauge", "Size of the LMDB map.");
        put(&o, "tokend_lmdb_map_size_bytes %zu\n", st.map_size);
        head(&o, "tokend_lmdb_map_used_bytes", "gauge", "Bytes of the map in use (last page).");
        put(&o, "tokend_lmdb_map_used_bytes %zu\n", st.map_used);
        head(&o, "tokend_lmdb_map_resident_bytes", "gauge",
             "Bytes of the map kept in memory (lock-memory on; else 0).");
        put(&o, "tokend_lmdb_map_resident_bytes %zu\n", st.map_resident);
        head(&o, "tokend_lmdb_readers_used", "gauge", "LMDB reader slots in use (all processes).");
        put(&o, "tokend_lmdb_readers_used %u\n", st.readers_used);
        head(&o, "tokend_lmdb_readers_max", "gauge", "LMDB reader slots.");
        put(&o, "tokend_lmdb_readers_max %u\n", st.readers_max);
    }
    store_keys_refresh(ctx->store);
    head(&o, "tokend_token_hash_keys", "gauge",
         "Token-hash keys in the ring: the newest and the older ones sessions still use.");
    put(&o, "tokend_token_hash_keys %zu\n", store_keys(ctx->store)->n);
    if (port == METRICS_OPERATOR_PORT)
        render_apps(reg, &o);
    else
        put(&o, "# tokend_app_users, tokend_app_sessions, tokend_app_admin_tokens: "
                "on the --metrics-listen port only\n");
    render_process(reg, &o);

    if (o.failed) {
        free(o.buf);
        *out = NULL;
        return 0;
    }
    *out = o.buf;
    return o.len;
}
