/* cluster.c - PostgreSQL through libpq: the schema and its migrations, the
 * write transaction of every change, the snapshot a new node starts from,
 * the feed thread that keeps the local replica current, and the throttle
 * buckets every node shares. The only file that calls libpq (cluster.h
 * says why and from which threads).
 *
 * Connections: the write path and the command line take one from a small
 * pool (one per worker at most: a worker holds one for a whole write
 * transaction); the feed thread has its own, which LISTENs. A connection
 * that broke is dropped and made again on the next use, so PostgreSQL
 * coming back needs no restart of tokend. */
#define _GNU_SOURCE   /* pthread_setname_np */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <libpq-fe.h>
#include "cluster.h"

#define SCHEMA_VERSION 2
#define LOCK_WRITE 7385001       /* pg_advisory_xact_lock key: one writer in the cluster */
#define LOCK_MIGRATE 7385002
#define FEED_BATCH CLUSTER_BATCH /* changes per poll (and per local transaction) */
#define FEED_POLL_MS 1000        /* poll at least this often, NOTIFY or not */
#define RECONNECT_MS 500        /* the feed's retries while the database is away */
#define WAIT_MS 1000             /* a parked read waits at most this */
#define PRUNE_EVERY_MS 60000
/* A connection held longer than this (one write, one poll) is cut by the
 * watch thread: PostgreSQL frozen, or a network that drops packets, would
 * otherwise hold a worker or the feed for ever (the server-side timeouts
 * cannot fire on a server that does not run). Past the 10 s statement and
 * lock timeouts, which answer first when PostgreSQL runs. */
#define HOLD_MS 15000
/* Once the database has not answered the feed for STALE_MS (see silent()),
 * bounded work is refused at once and what holds a connection is cut past
 * this: a login on a frozen database answers 503 in seconds, not after
 * HOLD_MS. */
#define SILENT_HOLD_MS STALE_MS
#define STOP_HOLD_MS 2000        /* the same bound once the server is stopping */
#define STALE_MS 3000            /* no poll ended well for this long: the database is not up */
/* A change is pruned once it is older than KEEP_S and not among the
 * newest KEEP_ROWS: a node down for longer than that bootstraps from a
 * snapshot instead. For tests only, the environment variable
 * TOKEND_CLUSTER_KEEP="rows,seconds[,every_ms]" sets both bounds and how
 * often the feed prunes (every_ms, also the delay of the first prune);
 * it is read when a node starts and is not an option on purpose. */
#define KEEP_ROWS 10000
#define KEEP_S (24 * 3600)

struct cluster_conn {
    PGconn *pg;
    cluster *c;
    cluster_conn *next;          /* in idle, or in busy */
    int64_t since_ms;            /* busy: taken at (0: no bound, a snapshot or init's copy) */
    uint64_t locked_seq;         /* a write's: the newest change when it took the lock */
    int backend_pid;             /* a write's: its backend (libpq says 0 once it broke) */
};

typedef struct waiter {
    pool_job *job;
    uint64_t need;               /* released once poll number `need` has ended */
    int64_t deadline_ms;
    struct waiter *next;
} waiter;

struct cluster {
    char *url;
    pthread_mutex_t lock;        /* the pool, the feed's state, the waiters */
    cluster_conn *idle, *busy;
    /* the feed */
    pthread_t feed, watch;
    int feed_running, feed_started, watching, stopping, closing, wake_fd;
    PGconn *feed_pg;             /* the feed's connection, for the watch thread */
    int64_t feed_since_ms;       /* its query under way since (0: none, or a snapshot) */
    int64_t poll_ok_ms;          /* the last poll that ended well */
    int64_t heard_ms;            /* the database last answered (see silent()) */
    int loading;                 /* the feed loads a snapshot: as long as it takes */
    cluster_feed_hooks hooks;
    cluster_snapshot_hooks snap;
    uint64_t poll_started, poll_done;
    waiter *waiters;
    uint64_t sync_need;          /* the latest poll a cluster_fresh_wait needs */
    pthread_cond_t polled;       /* a poll ended, or the database or the feed went */
    int up;
    uint64_t applied, latest;
    int64_t behind_since_ms;
    uint64_t polls, wait_polls, waits, bootstraps;
    long keep_rows, keep_s, prune_every_ms;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void quiet(void *arg, const char *message)
{
}

static PGconn *connect_pg(const char *url, char *err, size_t errlen)
{
    /* The URL's own settings win over these defaults (they come after). */
    /* Keepalives and tcp_user_timeout: a peer gone from the network is
     * noticed in seconds, not after the kernel's two hours. */
    const char *keys[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                          "dbname", NULL};
    const char *vals[] = {"3", "tokend", "1", "5", "2", "3", "10000", url, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        if (err) {
            const char *m = pg ? PQerrorMessage(pg) : "out of memory";
            snprintf(err, errlen, "cannot connect to the cluster database: %.*s",
                     (int)strcspn(m, "\n"), m);
        }
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, quiet, NULL);
    /* A write holds the cluster's lock: no statement may hang forever. */
    PGresult *r = PQexec(pg, "SET statement_timeout = '10s'; SET lock_timeout = '10s'");
    PQclear(r);
    return pg;
}

static int ok(PGresult *r, ExecStatusType want)
{
    return r && PQresultStatus(r) == want;
}

static int exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    int good = ok(r, PGRES_COMMAND_OK) || ok(r, PGRES_TUPLES_OK);
    if (!good)
        fprintf(stderr, "tokend: cluster: %s", PQerrorMessage(pg));
    PQclear(r);
    return good;
}

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (uint8_t)p[i];
    return v;
}

void cluster_conninfo_masked(const char *conninfo, char *out, size_t outlen)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    size_t n = 0;
    PQfreemem(err);
    if (!opts) {
        snprintf(out, outlen, "(not a PostgreSQL connection string: not shown)");
        return;
    }
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword && n + 1 < outlen; o++) {
        if (!o->val)
            continue;
        /* libpq marks what it would not display: password, sslpassword. */
        const char *v = o->dispchar && o->dispchar[0] == '*' ? "****" : o->val;
        int quote = !*v || strpbrk(v, " \t\n'\\") != NULL;
        n += (size_t)snprintf(out + n, outlen - n, "%s%s=%s", n ? " " : "", o->keyword,
                              quote ? "'" : "");
        for (; *v && n + 2 < outlen; v++) {
            if (*v == '\'' || *v == '\\')
                out[n++] = '\\';
            out[n++] = *v;
        }
        if (n + 1 < outlen && quote)
            out[n++] = '\'';
        out[n < outlen ? n : outlen - 1] = '\0';
    }
    PQconninfoFree(opts);
}

/* --- the pool of connections ------------------------------------------------------- */

static void busy_add(cluster_conn *cc, int bounded)
{
    pthread_mutex_lock(&cc->c->lock);
    cc->since_ms = bounded ? mono_ms() : 0;
    cc->next = cc->c->busy;
    cc->c->busy = cc;
    pthread_mutex_unlock(&cc->c->lock);
}

static void busy_del(cluster_conn *cc)
{
    pthread_mutex_lock(&cc->c->lock);
    for (cluster_conn **p = &cc->c->busy; *p; p = &(*p)->next)
        if (*p == cc) {
            *p = cc->next;
            break;
        }
    cc->next = NULL;
    pthread_mutex_unlock(&cc->c->lock);
}

static cluster_conn *conn_take(cluster *c, int bounded);

static cluster_conn *conn_get(cluster *c)
{
    return conn_take(c, 1);
}

/* The database has answered nothing for STALE_MS, though the feed asks at
 * least every second (heard_ms: a connect, a poll's answer before its
 * local apply, a prune, a worker's statements): PostgreSQL frozen or gone,
 * or a network that drops packets. The server-side timeouts cannot fire then, so each
 * write would wait out HOLD_MS; it is refused at once instead (503, to be
 * retried). A snapshot load is not silence. Called with c->lock. */
static int silent(const cluster *c, int64_t now)
{
    return c->feed_running && !c->stopping && !c->loading && now - c->heard_ms > STALE_MS;
}

static cluster_conn *conn_take(cluster *c, int bounded)
{
    pthread_mutex_lock(&c->lock);
    if (bounded && silent(c, mono_ms())) {
        pthread_mutex_unlock(&c->lock);
        return NULL;
    }
    cluster_conn *cc = c->idle;
    if (cc)
        c->idle = cc->next;
    pthread_mutex_unlock(&c->lock);
    if (cc && PQstatus(cc->pg) != CONNECTION_OK)
        PQreset(cc->pg);
    if (cc && PQstatus(cc->pg) == CONNECTION_OK) {
        busy_add(cc, bounded);
        return cc;
    }
    if (cc) {
        PQfinish(cc->pg);
        free(cc);
    }
    PGconn *pg = connect_pg(c->url, NULL, 0);
    if (!pg)
        return NULL;
    if (!(cc = calloc(1, sizeof *cc))) {
        PQfinish(pg);
        return NULL;
    }
    cc->pg = pg;
    cc->c = c;
    busy_add(cc, bounded);
    return cc;
}

static void conn_put(cluster_conn *cc)
{
    cluster *c = cc->c;
    busy_del(cc);
    if (PQstatus(cc->pg) != CONNECTION_OK || PQtransactionStatus(cc->pg) != PQTRANS_IDLE) {
        PQfinish(cc->pg);
        free(cc);
        return;
    }
    pthread_mutex_lock(&c->lock);
    cc->next = c->idle;
    c->idle = cc;
    c->heard_ms = mono_ms();   /* its statements were answered: not silent */
    pthread_mutex_unlock(&c->lock);
}

int cluster_open(cluster **out, const char *url, char *err, size_t errlen)
{
    cluster *c = calloc(1, sizeof *c);
    if (!c || !(c->url = strdup(url))) {
        free(c);
        snprintf(err, errlen, "out of memory");
        return CLUSTER_DOWN;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);   /* cluster_fresh_wait's deadline */
    pthread_cond_init(&c->polled, &attr);
    pthread_condattr_destroy(&attr);
    c->wake_fd = -1;
    c->keep_rows = KEEP_ROWS;
    c->keep_s = KEEP_S;
    c->prune_every_ms = PRUNE_EVERY_MS;
    const char *keep = getenv("TOKEND_CLUSTER_KEEP");
    if (keep && *keep) {
        long rows = -1, secs = -1, every = -1;
        int n = sscanf(keep, "%ld,%ld,%ld", &rows, &secs, &every);
        if (n >= 2 && rows >= 0 && secs >= 0 && (n < 3 || every > 0)) {
            c->keep_rows = rows, c->keep_s = secs;
            if (n == 3)
                c->prune_every_ms = every;
        } else {
            fprintf(stderr, "tokend: cluster: ignoring TOKEND_CLUSTER_KEEP=\"%s\": give "
                            "rows,seconds[,every_ms]\n", keep);
        }
    }
    PGconn *pg = connect_pg(url, err, errlen);
    cluster_conn *cc = pg ? calloc(1, sizeof *cc) : NULL;
    if (!cc) {
        PQfinish(pg);
        cluster_close(c);
        return CLUSTER_DOWN;
    }
    cc->pg = pg;
    cc->c = c;
    conn_put(cc);
    *out = c;
    return CLUSTER_OK;
}

static void release_waiters(cluster *c, uint64_t done, int all);

/* The feed stops (cut off if its database hangs), and every parked read is
 * answered now, while the loops that wait for them still run; connections
 * still held are cut STOP_HOLD_MS after they were taken. */
void cluster_stop(cluster *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    int was = c->stopping;
    c->stopping = 1;
    if (c->feed_pg)
        shutdown(PQsocket(c->feed_pg), SHUT_RDWR);
    pthread_cond_broadcast(&c->polled);
    pthread_mutex_unlock(&c->lock);
    if (was)
        return;
    if (c->feed_started) {
        uint64_t one = 1;
        if (write(c->wake_fd, &one, sizeof one) < 0)
            perror("tokend: cluster: wake");
        pthread_join(c->feed, NULL);
        c->feed_started = 0;
    }
    release_waiters(c, 0, 1);
}

void cluster_close(cluster *c)
{
    if (!c)
        return;
    cluster_stop(c);
    if (c->watching) {
        pthread_mutex_lock(&c->lock);
        c->closing = 1;
        pthread_cond_broadcast(&c->polled);
        pthread_mutex_unlock(&c->lock);
        pthread_join(c->watch, NULL);
    }
    release_waiters(c, 0, 1);
    while (c->idle) {
        cluster_conn *cc = c->idle;
        c->idle = cc->next;
        PQfinish(cc->pg);
        free(cc);
    }
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->polled);
    free(c->url);
    free(c);
}

/* --- the schema -------------------------------------------------------------------- */

static const char *const migrations[SCHEMA_VERSION] = {
    /* 1: the replicated records, the change log, the cluster's identity. */
    "CREATE TABLE tokend.state (one boolean PRIMARY KEY DEFAULT true CHECK (one),"
    "  cluster_id text NOT NULL, last_seq bigint NOT NULL);"
    "INSERT INTO tokend.state (cluster_id, last_seq)"
    "  VALUES (md5(random()::text || clock_timestamp()::text), 0);"
    "CREATE TABLE tokend.kv (db smallint NOT NULL, key bytea NOT NULL, value bytea NOT NULL,"
    "  PRIMARY KEY (db, key));"
    "CREATE TABLE tokend.changes (seq bigint PRIMARY KEY,"
    "  at timestamptz NOT NULL DEFAULT clock_timestamp(), ops bytea NOT NULL);"
    /* Applies a write set (wset.h) to kv in order, appends it to the log
     * as the next change and wakes the feeds. The caller holds the lock. */
    "CREATE FUNCTION tokend.write(p_ops bytea) RETURNS bigint LANGUAGE plpgsql AS $f$\n"
    "DECLARE pos int := 0; n int := length(p_ops); op int; d int; kl int; vl int;\n"
    "  k bytea; v bytea; s bigint;\n"
    "BEGIN\n"
    "  WHILE pos < n LOOP\n"
    "    op := get_byte(p_ops, pos); d := get_byte(p_ops, pos + 1);\n"
    "    kl := get_byte(p_ops, pos + 2) * 256 + get_byte(p_ops, pos + 3);\n"
    "    k := substring(p_ops FROM pos + 5 FOR kl);\n"
    "    pos := pos + 4 + kl;\n"
    "    IF op = 0 THEN\n"
    "      DELETE FROM tokend.kv WHERE db = d AND key = k;\n"
    "    ELSE\n"
    "      vl := get_byte(p_ops, pos) * 16777216 + get_byte(p_ops, pos + 1) * 65536\n"
    "            + get_byte(p_ops, pos + 2) * 256 + get_byte(p_ops, pos + 3);\n"
    "      v := substring(p_ops FROM pos + 5 FOR vl);\n"
    "      pos := pos + 4 + vl;\n"
    "      IF op = 2 THEN\n"
    "        INSERT INTO tokend.kv VALUES (d, k, v);\n"
    "      ELSE\n"
    "        INSERT INTO tokend.kv VALUES (d, k, v)\n"
    "          ON CONFLICT (db, key) DO UPDATE SET value = EXCLUDED.value;\n"
    "      END IF;\n"
    "    END IF;\n"
    "  END LOOP;\n"
    "  UPDATE tokend.state SET last_seq = last_seq + 1 RETURNING last_seq INTO s;\n"
    "  INSERT INTO tokend.changes (seq, ops) VALUES (s, p_ops);\n"
    "  PERFORM pg_notify('tokend_changes', s::text);\n"
    "  RETURN s;\n"
    "END $f$;",
    /* 2: login throttling shared by every node. */
    "CREATE TABLE tokend.buckets (key bytea PRIMARY KEY, tokens double precision NOT NULL,"
    "  updated_ms bigint NOT NULL);"
    "CREATE TABLE tokend.places (key bytea PRIMARY KEY, seen_ms bigint NOT NULL);"
    /* Refills each bucket to now (a new one is full), then takes one from
     * every bucket if each holds one (give = 0), or gives one back to each
     * (give = 1, capped). Returns the levels before. Keys come sorted. */
    "CREATE FUNCTION tokend.take(p_keys bytea[], p_caps int[], p_window float8, p_give int)\n"
    "RETURNS float8[] LANGUAGE plpgsql AS $f$\n"
    "DECLARE now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;\n"
    "  levels float8[] := '{}'; t float8; low float8 := 1e18;\n"
    "BEGIN\n"
    "  INSERT INTO tokend.buckets (key, tokens, updated_ms)\n"
    "    SELECT k, c, now_ms FROM unnest(p_keys, p_caps) AS x(k, c) ORDER BY k\n"
    "    ON CONFLICT (key) DO NOTHING;\n"
    "  FOR i IN 1 .. array_length(p_keys, 1) LOOP\n"
    "    SELECT least(p_caps[i]::float8, tokens + (now_ms - updated_ms) * p_caps[i] / p_window)\n"
    "      INTO t FROM tokend.buckets WHERE key = p_keys[i] FOR UPDATE;\n"
    "    levels := levels || t; low := least(low, t);\n"
    "  END LOOP;\n"
    "  IF p_give = 1 OR low >= 1 THEN\n"
    "    UPDATE tokend.buckets b SET updated_ms = now_ms,\n"
    "      tokens = least(x.c::float8, least(x.c::float8, b.tokens + (now_ms - b.updated_ms)\n"
    "               * x.c / p_window) + CASE WHEN p_give = 1 THEN 1 ELSE -1 END)\n"
    "      FROM unnest(p_keys, p_caps) AS x(k, c) WHERE b.key = x.k;\n"
    "  END IF;\n"
    "  RETURN levels;\n"
    "END $f$;",
};

int cluster_migrate(cluster *c, int *from, int *to, char *err, size_t errlen)
{
    cluster_conn *cc = conn_get(c);
    char sql[128];
    int rc = CLUSTER_DOWN, v = -1;
    if (!cc) {
        snprintf(err, errlen, "cannot connect to the cluster database");
        return CLUSTER_DOWN;
    }
    snprintf(sql, sizeof sql, "BEGIN; SELECT pg_advisory_xact_lock(%d)", LOCK_MIGRATE);
    if (!exec_ok(cc->pg, sql) || !exec_ok(cc->pg, "CREATE SCHEMA IF NOT EXISTS tokend") ||
        !exec_ok(cc->pg, "CREATE TABLE IF NOT EXISTS tokend.schema_version (version int PRIMARY "
                         "KEY, applied_at timestamptz NOT NULL DEFAULT now())"))
        goto out;
    PGresult *r = PQexec(cc->pg, "SELECT coalesce(max(version), 0) FROM tokend.schema_version");
    if (ok(r, PGRES_TUPLES_OK))
        v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (v < 0)
        goto out;
    *from = v;
    if (v > SCHEMA_VERSION) {
        snprintf(err, errlen, "the cluster database has schema version %d, newer than this "
                 "tokend's %d: upgrade tokend", v, SCHEMA_VERSION);
        goto out;
    }
    for (; v < SCHEMA_VERSION; v++) {
        snprintf(sql, sizeof sql, "INSERT INTO tokend.schema_version (version) VALUES (%d)", v + 1);
        if (!exec_ok(cc->pg, migrations[v]) || !exec_ok(cc->pg, sql))
            goto out;
    }
    *to = v;
    if (exec_ok(cc->pg, "COMMIT"))
        rc = CLUSTER_OK;
out:
    if (rc != CLUSTER_OK && !*err) {
        const char *m = PQerrorMessage(cc->pg);
        snprintf(err, errlen, "cannot migrate the cluster database: %.*s", (int)strcspn(m, "\n"), m);
    }
    if (rc != CLUSTER_OK)
        exec_ok(cc->pg, "ROLLBACK");
    conn_put(cc);
    return rc;
}

int cluster_check(cluster *c, char *err, size_t errlen)
{
    cluster_conn *cc = conn_get(c);
    int v = -1;
    if (!cc) {
        snprintf(err, errlen, "cannot connect to the cluster database");
        return CLUSTER_DOWN;
    }
    PGresult *r = PQexec(cc->pg, "SELECT coalesce(max(version), 0) FROM tokend.schema_version");
    if (ok(r, PGRES_TUPLES_OK))
        v = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    conn_put(cc);
    if (v == SCHEMA_VERSION)
        return CLUSTER_OK;
    if (v > SCHEMA_VERSION)
        snprintf(err, errlen, "the cluster database has schema version %d, newer than this "
                 "tokend's %d: upgrade tokend", v, SCHEMA_VERSION);
    else
        snprintf(err, errlen, "the cluster database is not initialised (schema version %d of %d): "
                 "run `tokend cluster init`", v < 0 ? 0 : v, SCHEMA_VERSION);
    return CLUSTER_DOWN;
}

static int read_state(PGconn *pg, char *id, size_t idlen, uint64_t *last_seq, int *kv_empty)
{
    PGresult *r = PQexec(pg, "SELECT cluster_id, last_seq, NOT EXISTS (SELECT 1 FROM tokend.kv) "
                             "FROM tokend.state");
    int rc = CLUSTER_DOWN;
    if (ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1) {
        snprintf(id, idlen, "%s", PQgetvalue(r, 0, 0));
        *last_seq = strtoull(PQgetvalue(r, 0, 1), NULL, 10);
        if (kv_empty)
            *kv_empty = PQgetvalue(r, 0, 2)[0] == 't';
        rc = CLUSTER_OK;
    }
    PQclear(r);
    return rc;
}

int cluster_state(cluster *c, char *id, size_t idlen, uint64_t *last_seq, int *kv_empty)
{
    cluster_conn *cc = conn_get(c);
    if (!cc)
        return CLUSTER_DOWN;
    int rc = read_state(cc->pg, id, idlen, last_seq, kv_empty);
    conn_put(cc);
    return rc;
}

/* --- snapshot and init ------------------------------------------------------------- */

static int snapshot_on(PGconn *pg, const cluster_snapshot_hooks *h)
{
    char id[64];
    uint64_t seq;
    int rc = CLUSTER_DOWN, began = 0;
    /* A snapshot of millions of records takes longer than any bound fit
     * for a write: it holds no lock of the cluster, so it has none. */
    if (!exec_ok(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                     "SET LOCAL statement_timeout = 0") ||
        read_state(pg, id, sizeof id, &seq, NULL) != CLUSTER_OK)
        goto out;
    if (h->begin(h->arg, id, seq) != 0)
        goto out;
    began = 1;
    if (!PQsendQueryParams(pg, "SELECT db, key, value FROM tokend.kv", 0, NULL, NULL, NULL, NULL,
                           1) ||
        !PQsetSingleRowMode(pg))
        goto out;
    PGresult *r;
    int failed = 0;
    while ((r = PQgetResult(pg)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE && !failed) {
            const char *db = PQgetvalue(r, 0, 0);
            int d = (uint8_t)db[0] << 8 | (uint8_t)db[1];
            if (h->row(h->arg, d, (const uint8_t *)PQgetvalue(r, 0, 1), (size_t)PQgetlength(r, 0, 1),
                       (const uint8_t *)PQgetvalue(r, 0, 2), (size_t)PQgetlength(r, 0, 2)) != 0)
                failed = 1;
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK) {
            failed = 1;
        }
        PQclear(r);
    }
    if (!failed && exec_ok(pg, "COMMIT"))
        rc = CLUSTER_OK;
out:
    if (PQtransactionStatus(pg) != PQTRANS_IDLE)
        exec_ok(pg, "ROLLBACK");
    if (began && h->end(h->arg, rc == CLUSTER_OK) != 0)
        rc = CLUSTER_DOWN;
    return rc;
}

int cluster_snapshot(cluster *c, const cluster_snapshot_hooks *h)
{
    cluster_conn *cc = conn_take(c, 0);
    if (!cc)
        return CLUSTER_DOWN;
    int rc = snapshot_on(cc->pg, h);
    conn_put(cc);
    return rc;
}

static void hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
}

int cluster_push(cluster *c, cluster_row_fn next, void *arg, char *err, size_t errlen)
{
    cluster_conn *cc = conn_take(c, 0);
    char sql[128];
    int rc = CLUSTER_DOWN;
    if (!cc) {
        snprintf(err, errlen, "cannot connect to the cluster database");
        return CLUSTER_DOWN;
    }
    /* The copy of a large directory takes as long as it takes; no node
     * writes to a cluster this empty, so its lock stops nobody. */
    snprintf(sql, sizeof sql, "BEGIN; SELECT pg_advisory_xact_lock(%d); "
             "SET LOCAL statement_timeout = 0", LOCK_WRITE);
    if (!exec_ok(cc->pg, sql))
        goto out;
    PGresult *r = PQexec(cc->pg, "SELECT EXISTS (SELECT 1 FROM tokend.kv)");
    int full = ok(r, PGRES_TUPLES_OK) ? PQgetvalue(r, 0, 0)[0] == 't' : -1;
    PQclear(r);
    if (full) {
        if (full > 0)
            rc = CLUSTER_EXISTS;
        goto out;
    }
    r = PQexec(cc->pg, "COPY tokend.kv (db, key, value) FROM STDIN");
    int copying = ok(r, PGRES_COPY_IN);
    PQclear(r);
    if (!copying)
        goto out;
    char *line = NULL;
    size_t cap = 0;
    int db, more, sent = 1;
    const uint8_t *k, *v;
    size_t kl, vl;
    while (sent && (more = next(arg, &db, &k, &kl, &v, &vl)) > 0) {
        size_t need = 16 + 2 * kl + 2 * vl + 16;
        if (need > cap) {
            char *l = realloc(line, need);
            if (!l) {
                more = -1;
                break;
            }
            line = l, cap = need;
        }
        /* COPY's text form: bytea in hex, its backslash escaped for COPY. */
        int n = snprintf(line, cap, "%d\t\\\\x", db);
        hex(line + n, k, kl);
        n += (int)(2 * kl);
        memcpy(line + n, "\t\\\\x", 4);
        n += 4;
        hex(line + n, v, vl);
        n += (int)(2 * vl);
        line[n++] = '\n';
        sent = PQputCopyData(cc->pg, line, n) == 1;
    }
    free(line);
    PQputCopyEnd(cc->pg, more < 0 || !sent ? "tokend: reading the data directory failed" : NULL);
    int copied = 1;
    while ((r = PQgetResult(cc->pg)) != NULL) {
        if (!ok(r, PGRES_COMMAND_OK))
            copied = 0;
        PQclear(r);
    }
    if (copied && more == 0 && exec_ok(cc->pg, "COMMIT"))
        rc = CLUSTER_OK;
out:
    if (rc == CLUSTER_DOWN) {
        const char *m = PQerrorMessage(cc->pg);
        snprintf(err, errlen, "cannot copy the data directory into the cluster database: %.*s",
                 (int)strcspn(m, "\n"), m);
    }
    if (PQtransactionStatus(cc->pg) != PQTRANS_IDLE)
        exec_ok(cc->pg, "ROLLBACK");
    conn_put(cc);
    return rc;
}

/* --- the write path ---------------------------------------------------------------- */

int cluster_write_begin(cluster *c, cluster_conn **out, uint64_t *last_seq)
{
    char sql[200];
    snprintf(sql, sizeof sql,
             "BEGIN; SET LOCAL idle_in_transaction_session_timeout = '15s'; "
             "SELECT pg_advisory_xact_lock(%d); SELECT last_seq FROM tokend.state", LOCK_WRITE);
    /* A pooled connection may have died with a PostgreSQL restart: one
     * more try on a fresh one. */
    for (int attempt = 0; attempt < 2; attempt++) {
        cluster_conn *cc = conn_get(c);
        if (!cc)
            return CLUSTER_DOWN;
        PGresult *r = PQexec(cc->pg, sql);
        int good = ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1;
        if (good)
            *last_seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        if (good) {
            cc->locked_seq = *last_seq;
            cc->backend_pid = PQbackendPID(cc->pg);
            *out = cc;
            return CLUSTER_OK;
        }
        int broken = PQstatus(cc->pg) != CONNECTION_OK;
        if (!broken)
            fprintf(stderr, "tokend: cluster: %s", PQerrorMessage(cc->pg));
        if (PQtransactionStatus(cc->pg) != PQTRANS_IDLE)
            exec_ok(cc->pg, "ROLLBACK");
        conn_put(cc);
        if (!broken)
            break;
    }
    return CLUSTER_DOWN;
}

/* The changes in (after, upto], fetched on pg; consecutive or CLUSTER_BEHIND. */
static int fetch(PGconn *pg, uint64_t after, uint64_t upto, size_t limit, cluster_change_fn fn,
                 int (*flush)(void *arg), void *arg, uint64_t *last_seq, size_t *got)
{
    char a[24], u[24], l[24];
    const char *params[3] = {a, u, l};
    snprintf(a, sizeof a, "%" PRIu64, after);
    snprintf(u, sizeof u, "%" PRIu64, upto);
    snprintf(l, sizeof l, "%zu", limit);
    /* One statement, one snapshot: the newest seq and the changes agree. */
    PGresult *r = PQexecParams(pg,
        "SELECT s.last_seq, c.seq, c.ops FROM tokend.state s LEFT JOIN LATERAL "
        "(SELECT seq, ops FROM tokend.changes WHERE seq > $1::bigint AND seq <= $2::bigint "
        " ORDER BY seq LIMIT $3::int) c ON true ORDER BY c.seq",
        3, NULL, params, NULL, NULL, 1);
    if (!ok(r, PGRES_TUPLES_OK) || PQntuples(r) < 1) {
        fprintf(stderr, "tokend: cluster: reading the change log: %s", PQerrorMessage(pg));
        PQclear(r);
        return CLUSTER_DOWN;
    }
    int rows = PQntuples(r), rc = CLUSTER_OK;
    *last_seq = be64(PQgetvalue(r, 0, 0));
    *got = 0;
    uint64_t expect = after + 1;
    for (int i = 0; i < rows && rc == CLUSTER_OK; i++) {
        if (PQgetisnull(r, i, 1))
            break;
        uint64_t seq = be64(PQgetvalue(r, i, 1));
        if (seq != expect) {
            rc = CLUSTER_BEHIND;
            break;
        }
        rc = fn(arg, seq, (const uint8_t *)PQgetvalue(r, i, 2), (size_t)PQgetlength(r, i, 2));
        expect++;
        (*got)++;
    }
    /* Nothing came back though there is something to come: pruned. */
    if (rc == CLUSTER_OK && !*got && *last_seq > after && upto > after)
        rc = CLUSTER_BEHIND;
    /* The rows live until PQclear: whoever collected them uses them now. */
    if (rc == CLUSTER_OK && *got && flush)
        rc = flush(arg);
    PQclear(r);
    return rc;
}

int cluster_write_fetch(cluster_conn *cc, uint64_t after, uint64_t upto, cluster_change_fn fn,
                        void *arg)
{
    while (after < upto) {
        uint64_t last;
        size_t got;
        int rc = fetch(cc->pg, after, upto, FEED_BATCH, fn, NULL, arg, &last, &got);
        if (rc != CLUSTER_OK)
            return rc;
        after += got;
    }
    return CLUSTER_OK;
}

/* One round trip: the write and the COMMIT go out together in libpq's
 * pipeline mode (PostgreSQL 14+ libpq), then one Sync. All or nothing is
 * kept by the server: once a statement of a pipeline fails, the ones after
 * it up to the Sync are skipped (PGRES_PIPELINE_ABORTED), so a failed write
 * is never committed, and a COMMIT that fails (a deferred check, the
 * connection lost) rolls the write back. Only a COMMIT that answered
 * "COMMIT" counts as committed. */
/* The connection of a write broke when its COMMIT may have been sent: did
 * the write land as change `seq` (the one after the lock's)? Asked on
 * another connection once the write's transaction has ended: its backend
 * (`pid`) holds the write lock until then, committed or not. Not by taking
 * the lock: this node's LMDB writer is held meanwhile, and another of its
 * writes that got the lock first would wait for that writer (a deadlock
 * until lock_timeout). The change's ops tell it from another write of that
 * number. Returns 1 when it landed, else 0 (also when that cannot be told:
 * the database is away, or the change was pruned; then the feed applies it
 * if it landed). */
#define LANDED_WAIT_MS 5000

static int landed(cluster *c, const uint8_t *ops, size_t len, uint64_t seq, int pid)
{
    char sql[200], num[24];
    const char *params[2] = {(const char *)ops, num};
    int lens[2] = {(int)len, 0}, fmts[2] = {1, 0}, told = 0, yes = 0, ended = 0;
    /* A backend pid of 0 (a pooler between): the lock cannot be watched. */
    cluster_conn *cc = pid > 0 ? conn_get(c) : NULL;
    if (cc) {
        snprintf(sql, sizeof sql, "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = %d AND "
                 "locktype = 'advisory' AND classid = 0 AND objid = %d AND objsubid = 1)", pid,
                 LOCK_WRITE);
        snprintf(num, sizeof num, "%llu", (unsigned long long)seq);
        for (int64_t until = mono_ms() + LANDED_WAIT_MS; !ended && mono_ms() < until;) {
            PGresult *r = PQexec(cc->pg, sql);
            int good = ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1;
            ended = good && PQgetvalue(r, 0, 0)[0] == 'f';
            PQclear(r);
            if (!good)
                break;
            if (!ended)
                usleep(20 * 1000);
        }
        if (ended) {
            /* the change's ops, and whether a change of that number was
             * ever made (pruned since: cannot be told) */
            PGresult *r = PQexecParams(cc->pg,
                "SELECT (SELECT ops = $1::bytea FROM tokend.changes WHERE seq = $2::bigint), "
                "(SELECT last_seq < $2::bigint FROM tokend.state)", 2, NULL, params, lens, fmts, 0);
            if (ok(r, PGRES_TUPLES_OK) && PQntuples(r) == 1) {
                yes = !PQgetisnull(r, 0, 0) && PQgetvalue(r, 0, 0)[0] == 't';
                told = yes || (!PQgetisnull(r, 0, 1) && PQgetvalue(r, 0, 1)[0] == 't') ||
                       (!PQgetisnull(r, 0, 0) && PQgetvalue(r, 0, 0)[0] == 'f');
            }
            PQclear(r);
        }
        conn_put(cc);
    }
    fprintf(stderr, "tokend: cluster: write: the connection broke after its COMMIT was sent: "
            "change %llu %s\n", (unsigned long long)seq,
            yes ? "was committed" : told ? "was not committed"
                : "may have been committed (the database cannot tell now): reported as not made; "
                  "the feed applies it if it was");
    return yes;
}

int cluster_write_commit(cluster_conn *cc, const uint8_t *ops, size_t len, uint64_t *seq)
{
    const char *params[1] = {(const char *)ops};
    int lens[1] = {(int)len}, fmts[1] = {1};
    int rc = CLUSTER_DOWN, wrote = 0, committed = 0, exists = 0;
    PGconn *pg = cc->pg;
    if (!PQenterPipelineMode(pg)) {
        fprintf(stderr, "tokend: cluster: write: cannot enter pipeline mode: %s",
                PQerrorMessage(pg));
        goto out;
    }
    int sent = PQsendQueryParams(pg, "SELECT tokend.write($1::bytea)", 1, NULL, params, lens,
                                 fmts, 1) &&
               PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) &&
               PQpipelineSync(pg);
    if (sent) {
        /* The write's result, the end of it (NULL), COMMIT's, NULL, the Sync. */
        for (int step = 0; step < 3; step++) {
            PGresult *r = PQgetResult(pg);
            if (!r) {
                sent = 0;  /* the connection broke */
                break;
            }
            ExecStatusType st = PQresultStatus(r);
            if (step == 0 && st == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                PQgetlength(r, 0, 0) == 8) {
                *seq = be64(PQgetvalue(r, 0, 0));
                wrote = 1;
            } else if (step == 0 && st == PGRES_FATAL_ERROR) {
                const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                exists = state && strcmp(state, "23505") == 0;
                if (!exists)
                    fprintf(stderr, "tokend: cluster: write: %s", PQresultErrorMessage(r));
            } else if (step == 1 && st == PGRES_COMMAND_OK) {
                /* COMMIT of a failed transaction answers ROLLBACK, not an error. */
                committed = strcmp(PQcmdStatus(r), "COMMIT") == 0;
            } else if (step == 1 && st == PGRES_FATAL_ERROR) {
                fprintf(stderr, "tokend: cluster: commit: %s", PQresultErrorMessage(r));
            }
            int sync = st == PGRES_PIPELINE_SYNC;
            PQclear(r);
            if (sync)
                break;
            if (step < 2 && (r = PQgetResult(pg)) != NULL) {  /* each query's end */
                PQclear(r);
                sent = 0;
                break;
            }
        }
    }
    if (!sent)
        fprintf(stderr, "tokend: cluster: write: %s", PQerrorMessage(pg));
    /* Leave pipeline mode only on a drained connection; a broken one is
     * dropped by conn_put anyway. */
    if (!sent || !PQexitPipelineMode(pg)) {
        cluster *c = cc->c;
        uint64_t next = cc->locked_seq + 1;
        int pid = cc->backend_pid;
        busy_del(cc);
        PQfinish(pg);
        cc->pg = NULL;
        free(cc);
        if (exists)
            return CLUSTER_EXISTS;
        if (committed || (!sent && landed(c, ops, len, next, pid))) {
            *seq = next;
            return CLUSTER_OK;
        }
        return CLUSTER_DOWN;
    }
    if (wrote && committed)
        rc = CLUSTER_OK;
    else if (exists)
        rc = CLUSTER_EXISTS;
out:
    if (PQtransactionStatus(pg) != PQTRANS_IDLE)
        exec_ok(pg, "ROLLBACK");
    conn_put(cc);
    return rc;
}

void cluster_write_abort(cluster_conn *cc)
{
    if (PQtransactionStatus(cc->pg) != PQTRANS_IDLE)
        exec_ok(cc->pg, "ROLLBACK");
    conn_put(cc);
}

/* --- the feed ---------------------------------------------------------------------- */

/* Posts the waiters whose poll has ended (or whose time is up; all with
 * `all`). The posts run outside the lock. */
static void release_waiters(cluster *c, uint64_t done, int all)
{
    waiter *go = NULL;
    int64_t now = mono_ms();
    pthread_mutex_lock(&c->lock);
    for (waiter **w = &c->waiters; *w;) {
        if (all || (*w)->need <= done || (*w)->deadline_ms <= now) {
            waiter *x = *w;
            *w = x->next;
            x->next = go;
            go = x;
        } else {
            w = &(*w)->next;
        }
    }
    pthread_mutex_unlock(&c->lock);
    while (go) {
        waiter *x = go;
        go = x->next;
        x->job->post(x->job);
        free(x);
    }
}

/* The feed follows the database: connected, and a poll ended well lately
 * (a connection can stay "up" to a database that has stopped answering). */
static int following(cluster *c)
{
    return c->feed_running && c->up && !c->stopping && mono_ms() - c->poll_ok_ms < STALE_MS;
}

uint64_t cluster_fresh_ticket(cluster *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t need = following(c) ? c->poll_started + 1 : 0;
    if (need > c->sync_need)
        c->sync_need = need;
    pthread_mutex_unlock(&c->lock);
    uint64_t one = 1;
    if (need && write(c->wake_fd, &one, sizeof one) < 0)
        return need;   /* the feed still polls within a second */
    return need;
}

void cluster_fresh_wait(cluster *c, uint64_t ticket, int timeout_ms)
{
    if (!ticket)
        return;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->lock);
    while (c->poll_done < ticket && c->up && c->feed_running && !c->stopping)
        if (pthread_cond_timedwait(&c->polled, &c->lock, &until) != 0)
            break;
    pthread_mutex_unlock(&c->lock);
}

int cluster_wait(cluster *c, pool_job *job)
{
    waiter *w = malloc(sizeof *w);
    if (!w)
        return -1;
    pthread_mutex_lock(&c->lock);
    if (!following(c)) {
        pthread_mutex_unlock(&c->lock);
        free(w);
        return -1;
    }
    w->job = job;
    w->need = c->poll_started + 1;
    w->deadline_ms = mono_ms() + WAIT_MS;
    w->next = c->waiters;
    c->waiters = w;
    c->waits++;
    pthread_mutex_unlock(&c->lock);
    uint64_t one = 1;
    if (write(c->wake_fd, &one, sizeof one) < 0)
        return 0;  /* the feed still polls within a second */
    return 0;
}

typedef struct {
    cluster *c;
    cluster_apply_fn apply;   /* the feed's hook, or a command's */
    void *arg;
    int applied;
    size_t n;
    uint64_t seqs[FEED_BATCH];
    const uint8_t *ops[FEED_BATCH];
    size_t lens[FEED_BATCH];
} batch;

static int collect(void *arg, uint64_t seq, const uint8_t *ops, size_t len)
{
    batch *b = arg;
    if (b->n == 0) {   /* an answer: stamped before the local apply, which may wait */
        pthread_mutex_lock(&b->c->lock);
        b->c->heard_ms = mono_ms();
        pthread_mutex_unlock(&b->c->lock);
    }
    b->seqs[b->n] = seq;
    b->ops[b->n] = ops;
    b->lens[b->n] = len;
    b->n++;
    return CLUSTER_OK;
}

static int apply_batch(void *arg)
{
    batch *b = arg;
    int rc = b->apply(b->arg, b->n, b->seqs, b->ops, b->lens);
    b->applied = rc == CLUSTER_OK;
    return rc;
}

int cluster_read_changes(cluster *c, uint64_t after, cluster_apply_fn apply, void *arg)
{
    batch *b = malloc(sizeof *b);
    cluster_conn *cc = b ? conn_take(c, 0) : NULL;
    if (!cc) {
        free(b);
        return CLUSTER_DOWN;
    }
    int rc;
    uint64_t upto = INT64_MAX;
    *b = (batch){.c = c, .apply = apply, .arg = arg};
    for (;;) {
        uint64_t last;
        size_t got;
        b->n = 0;
        rc = fetch(cc->pg, after, upto, FEED_BATCH, collect, apply_batch, b, &last, &got);
        if (upto == INT64_MAX)
            upto = last;   /* what came since need not be waited for */
        if (rc != CLUSTER_OK || !got || (after += got) >= upto)
            break;
    }
    conn_put(cc);
    free(b);
    return rc;
}

static void note_seqs(cluster *c, uint64_t applied, uint64_t latest)
{
    pthread_mutex_lock(&c->lock);
    c->applied = applied;
    if (latest > c->latest)
        c->latest = latest;
    if (c->applied >= c->latest)
        c->behind_since_ms = 0;
    else if (!c->behind_since_ms)
        c->behind_since_ms = mono_ms();
    pthread_mutex_unlock(&c->lock);
}

/* One poll: fetch what follows the local replica and apply it. *more when
 * a full batch came (poll again at once). */
static int poll_once(cluster *c, PGconn *pg, int *more)
{
    static __thread batch b;
    uint64_t applied = c->hooks.applied(c->hooks.arg), last = 0;
    size_t got = 0;
    b.c = c;
    b.apply = c->hooks.apply;
    b.arg = c->hooks.arg;
    b.n = 0;
    b.applied = 0;
    *more = 0;
    int rc = fetch(pg, applied, UINT64_MAX >> 1, FEED_BATCH, collect, apply_batch, &b, &last, &got);
    if (b.applied) {
        applied = b.seqs[b.n - 1];
        *more = b.n == FEED_BATCH;
    }
    note_seqs(c, applied, last);
    return rc;
}

static void prune(cluster *c, PGconn *pg)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "DELETE FROM tokend.changes WHERE seq <= (SELECT least(s.last_seq - %ld, "
             "coalesce((SELECT max(seq) FROM tokend.changes WHERE at < now() - interval '%ld "
             "seconds'), 0)) FROM tokend.state s)",
             c->keep_rows, c->keep_s);
    exec_ok(pg, sql);
}

static PGconn *feed_connect(cluster *c)
{
    PGconn *pg = connect_pg(c->url, NULL, 0);
    if (pg && !exec_ok(pg, "LISTEN tokend_changes")) {
        PQfinish(pg);
        pg = NULL;
    }
    return pg;
}

/* Takes the notifications libpq holds already; how many there were. */
static int take_notifies(cluster *c, PGconn *pg)
{
    PGnotify *nt;
    int n = 0;
    while ((nt = PQnotifies(pg)) != NULL) {
        uint64_t seq = strtoull(nt->extra, NULL, 10);
        pthread_mutex_lock(&c->lock);
        if (seq > c->latest)
            c->latest = seq;
        if (c->latest > c->applied && !c->behind_since_ms)
            c->behind_since_ms = mono_ms();
        pthread_mutex_unlock(&c->lock);
        PQfreemem(nt);
        n++;
    }
    return n;
}

/* Waits for a NOTIFY, a waiter, or the timeout; drains both. A NOTIFY
 * that came in while the last poll's query was being answered is already
 * in libpq's queue, not on the socket: then it does not wait at all (else
 * that change would wait for the next timeout, up to a second). */
static void feed_sleep(cluster *c, PGconn *pg, int timeout_ms)
{
    if (pg && take_notifies(c, pg))
        timeout_ms = 0;
    struct pollfd fds[2] = {{c->wake_fd, POLLIN, 0}, {pg ? PQsocket(pg) : -1, POLLIN, 0}};
    if (poll(fds, pg ? 2 : 1, timeout_ms) > 0 && (fds[0].revents & POLLIN)) {
        uint64_t n;
        if (read(c->wake_fd, &n, sizeof n) < 0 && errno != EAGAIN)
            perror("tokend: cluster: wake");
    }
    if (pg && PQconsumeInput(pg))
        take_notifies(c, pg);
}

static void *feed_main(void *arg)
{
    cluster *c = arg;
    PGconn *pg = NULL;
    int64_t next_prune = mono_ms() + (c->prune_every_ms < 5000 ? c->prune_every_ms : 5000);
    for (;;) {
        pthread_mutex_lock(&c->lock);
        int stop = c->stopping;
        pthread_mutex_unlock(&c->lock);
        if (stop)
            break;
        if (!pg && !(pg = feed_connect(c))) {
            pthread_mutex_lock(&c->lock);
            if (c->up)
                fprintf(stderr, "tokend: cluster: the database is unreachable: writes are "
                                "refused, reads go on; retrying every second\n");
            c->up = 0;
            pthread_cond_broadcast(&c->polled);
            pthread_mutex_unlock(&c->lock);
            release_waiters(c, 0, 1);
            feed_sleep(c, NULL, RECONNECT_MS);
            continue;
        }
        pthread_mutex_lock(&c->lock);
        if (!c->up)
            fprintf(stderr, "tokend: cluster: connected to the database\n");
        c->up = 1;
        if (!c->feed_pg)
            c->heard_ms = mono_ms();   /* it has just answered the connect */
        c->feed_pg = pg;
        c->feed_since_ms = mono_ms();
        uint64_t gen = ++c->poll_started;
        c->polls++;
        if (c->waiters)
            c->wait_polls++;
        pthread_mutex_unlock(&c->lock);

        int more = 0, rc = poll_once(c, pg, &more);
        if (rc == CLUSTER_BEHIND) {
            fprintf(stderr, "tokend: cluster: this node is behind the change log's horizon: "
                            "loading a snapshot\n");
            pthread_mutex_lock(&c->lock);
            c->feed_since_ms = 0;   /* as long as it takes */
            c->loading = 1;
            pthread_mutex_unlock(&c->lock);
            rc = snapshot_on(pg, &c->snap);
            pthread_mutex_lock(&c->lock);
            c->loading = 0;
            if (PQstatus(pg) == CONNECTION_OK)
                c->heard_ms = mono_ms();   /* with `loading`: never silent in between */
            c->bootstraps++;
            pthread_mutex_unlock(&c->lock);
            more = 1;
        }
        pthread_mutex_lock(&c->lock);
        c->feed_since_ms = 0;
        if (rc == CLUSTER_OK)
            c->poll_ok_ms = mono_ms();
        if (PQstatus(pg) == CONNECTION_OK)
            c->heard_ms = mono_ms();   /* an answer, an error one too */
        c->poll_done = gen;
        pthread_cond_broadcast(&c->polled);
        pthread_mutex_unlock(&c->lock);
        release_waiters(c, gen, 0);
        if (PQstatus(pg) != CONNECTION_OK) {
            pthread_mutex_lock(&c->lock);
            c->feed_pg = NULL;
            pthread_mutex_unlock(&c->lock);
            PQfinish(pg);
            pg = NULL;
            continue;
        }
        if (rc != CLUSTER_OK) {
            feed_sleep(c, pg, 100);  /* a local failure: do not spin */
            continue;
        }
        if (more)
            continue;
        if (mono_ms() >= next_prune) {
            pthread_mutex_lock(&c->lock);
            c->feed_since_ms = mono_ms();
            pthread_mutex_unlock(&c->lock);
            prune(c, pg);
            pthread_mutex_lock(&c->lock);
            c->feed_since_ms = 0;
            if (PQstatus(pg) == CONNECTION_OK)
                c->heard_ms = mono_ms();
            pthread_mutex_unlock(&c->lock);
            next_prune = mono_ms() + c->prune_every_ms;
        }
        pthread_mutex_lock(&c->lock);
        int waiting = (c->waiters && c->waiters->need > gen) || c->sync_need > gen;
        pthread_mutex_unlock(&c->lock);
        if (!waiting)
            feed_sleep(c, pg, FEED_POLL_MS);
        else
            feed_sleep(c, pg, 0);  /* drain the wake-up, then poll again for them */
    }
    pthread_mutex_lock(&c->lock);
    c->feed_pg = NULL;
    pthread_mutex_unlock(&c->lock);
    PQfinish(pg);
    release_waiters(c, 0, 1);
    pthread_mutex_lock(&c->lock);
    c->feed_running = 0;   /* fresh waits end: no poll is coming */
    pthread_cond_broadcast(&c->polled);
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* Parked reads end at their own deadline, and a connection held past
 * HOLD_MS (SILENT_HOLD_MS while the database is silent) is cut, even while
 * the feed (or a worker) waits on a database that does not answer. The
 * feed's own query keeps HOLD_MS: its silence is what is measured. */
static void *watch_main(void *arg)
{
    cluster *c = arg;
    pthread_mutex_lock(&c->lock);
    while (!c->closing) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_nsec += 100 * 1000000L;
        if (t.tv_nsec >= 1000000000L) {
            t.tv_sec++;
            t.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->polled, &c->lock, &t);
        int64_t now = mono_ms(), hold = c->stopping ? STOP_HOLD_MS : HOLD_MS;
        int64_t busy_hold = silent(c, now) ? SILENT_HOLD_MS : hold;
        int cut = 0, feed_cut = 0;
        for (cluster_conn *cc = c->busy; cc; cc = cc->next)
            if (cc->since_ms && now - cc->since_ms > busy_hold) {
                shutdown(PQsocket(cc->pg), SHUT_RDWR);
                cc->since_ms = 0;
                cut++;
            }
        if (c->feed_pg && c->feed_since_ms && now - c->feed_since_ms > hold) {
            shutdown(PQsocket(c->feed_pg), SHUT_RDWR);
            c->feed_since_ms = 0;
            feed_cut = 1;
        }
        uint64_t done = c->poll_done;
        pthread_mutex_unlock(&c->lock);
        if (cut)
            fprintf(stderr, "tokend: cluster: the database did not answer within %lld ms: "
                            "%d connection(s) dropped\n", (long long)busy_hold, cut);
        if (feed_cut)
            fprintf(stderr, "tokend: cluster: the database did not answer the feed within %lld ms: "
                            "its connection dropped\n", (long long)hold);
        release_waiters(c, done, 0);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

int cluster_feed_start(cluster *c, const cluster_feed_hooks *h, const cluster_snapshot_hooks *snap)
{
    c->hooks = *h;
    c->snap = *snap;
    c->applied = c->latest = h->applied(h->arg);
    if ((c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        return CLUSTER_DOWN;
    c->up = 1;  /* cluster_open just connected; the feed says otherwise soon */
    c->poll_ok_ms = c->heard_ms = mono_ms();
    if (c->keep_rows != KEEP_ROWS || c->keep_s != KEEP_S || c->prune_every_ms != PRUNE_EVERY_MS)
        fprintf(stderr, "tokend: cluster: TOKEND_CLUSTER_KEEP (a test knob): this node prunes "
                        "the change log to the newest %ld changes or %ld s, every %ld ms\n",
                c->keep_rows, c->keep_s, c->prune_every_ms);
    if (pthread_create(&c->feed, NULL, feed_main, c) != 0)
        return CLUSTER_DOWN;
    pthread_setname_np(c->feed, "tokend-feed");
    c->feed_running = c->feed_started = 1;
    if (pthread_create(&c->watch, NULL, watch_main, c) != 0)
        return CLUSTER_DOWN;
    pthread_setname_np(c->watch, "tokend-watch");
    c->watching = 1;
    return CLUSTER_OK;
}

void cluster_get_status(cluster *c, cluster_status *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&c->lock);
    st->database_up = following(c);
    st->applied_seq = c->applied;
    st->latest_seq = c->latest;
    st->lag_ms = c->behind_since_ms ? mono_ms() - c->behind_since_ms : 0;
    st->polls = c->polls;
    st->wait_polls = c->wait_polls;
    st->waits = c->waits;
    st->bootstraps = c->bootstraps;
    pthread_mutex_unlock(&c->lock);
}

/* --- throttling ------------------------------------------------------------------------- */

/* Every bucket refilled to now and taken from (or given back to) in one
 * call of tokend.take, all or none: it locks the buckets' rows (in key
 * order, so two nodes cannot deadlock), so two nodes taking from one bucket
 * at once are serialised by PostgreSQL and never both get the last attempt.
 * tokens[i]: bucket i's level before the take. */
int cluster_buckets(cluster *c, size_t n, const uint8_t (*keys)[16], const unsigned *caps,
                    unsigned window_ms, int give, double *tokens)
{
    char karr[4 * 40 + 8] = "{", carr[4 * 16 + 8] = "{", w[16], g[8];
    size_t order[4];
    if (n == 0)
        return CLUSTER_OK;
    if (n > 4)
        return CLUSTER_DOWN;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && memcmp(keys[order[j - 1]], keys[order[j]], 16) > 0; j--) {
            size_t t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    for (size_t i = 0; i < n; i++) {
        char k[40], cap[16];
        memcpy(k, "\"\\\\x", 4);
        hex(k + 4, keys[order[i]], 16);
        memcpy(k + 36, "\"", 2);
        snprintf(cap, sizeof cap, "%u", caps[order[i]]);
        strcat(karr, k);
        strcat(carr, cap);
        strcat(karr, i + 1 < n ? "," : "}");
        strcat(carr, i + 1 < n ? "," : "}");
    }
    snprintf(w, sizeof w, "%u", window_ms ? window_ms : 1);
    snprintf(g, sizeof g, "%d", give ? 1 : 0);
    const char *params[4] = {karr, carr, w, g};
    cluster_conn *cc = conn_get(c);
    if (!cc)
        return CLUSTER_DOWN;
    PGresult *r = PQexecParams(cc->pg,
        "SELECT unnest(tokend.take($1::bytea[], $2::int[], $3::float8, $4::int))",
        4, NULL, params, NULL, NULL, 0);
    int rc = ok(r, PGRES_TUPLES_OK) && PQntuples(r) == (int)n ? CLUSTER_OK : CLUSTER_DOWN;
    if (rc == CLUSTER_OK)
        for (size_t i = 0; i < n; i++)
            tokens[order[i]] = atof(PQgetvalue(r, (int)i, 0));
    else
        fprintf(stderr, "tokend: cluster: throttle: %s", PQerrorMessage(cc->pg));
    PQclear(r);
    conn_put(cc);
    return rc;
}

int cluster_place_known(cluster *c, const uint8_t key[16], int64_t max_age_ms, int *known)
{
    char k[40], age[24];
    const char *params[2] = {k, age};
    memcpy(k, "\\x", 2);
    hex(k + 2, key, 16);
    k[34] = '\0';
    snprintf(age, sizeof age, "%lld", (long long)max_age_ms);
    cluster_conn *cc = conn_get(c);
    if (!cc)
        return CLUSTER_DOWN;
    PGresult *r = PQexecParams(cc->pg,
        "SELECT EXISTS (SELECT 1 FROM tokend.places WHERE key = $1::bytea AND seen_ms > "
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint - $2::bigint)",
        2, NULL, params, NULL, NULL, 0);
    int rc = ok(r, PGRES_TUPLES_OK) ? CLUSTER_OK : CLUSTER_DOWN;
    if (rc == CLUSTER_OK)
        *known = PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    conn_put(cc);
    return rc;
}

int cluster_place_seen(cluster *c, const uint8_t key[16])
{
    char k[40];
    const char *params[1] = {k};
    memcpy(k, "\\x", 2);
    hex(k + 2, key, 16);
    k[34] = '\0';
    cluster_conn *cc = conn_get(c);
    if (!cc)
        return CLUSTER_DOWN;
    PGresult *r = PQexecParams(cc->pg,
        "INSERT INTO tokend.places (key, seen_ms) VALUES ($1::bytea, "
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint) "
        "ON CONFLICT (key) DO UPDATE SET seen_ms = EXCLUDED.seen_ms",
        1, NULL, params, NULL, NULL, 0);
    int rc = ok(r, PGRES_COMMAND_OK) ? CLUSTER_OK : CLUSTER_DOWN;
    PQclear(r);
    conn_put(cc);
    return rc;
}
