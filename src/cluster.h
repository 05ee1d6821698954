/* cluster.h - tokend's link to PostgreSQL, the system of record of a
 * cluster of tokend nodes. libpq is called from this file only, and only on
 * threads that may block: the worker pool (write transactions, throttle
 * buckets), the feed thread this file runs, and the command line. Never on
 * an event loop: a verify must not wait on the network.
 *
 * The store (store*.c) is this file's only user. It knows LMDB; this file
 * knows SQL. What crosses between them: write sets (wset.h), sequence
 * numbers, and snapshot rows (db, key, value). The store gives the feed
 * thread callbacks to apply what it reads.
 *
 * In PostgreSQL (schema "tokend", made by cluster_migrate):
 *   state(cluster_id, last_seq, horizon)  one row; last_seq: the newest change;
 *                                         changes after `horizon` are all kept
 *   kv(db, key, value)                    every replicated LMDB record
 *   changes(seq, at, ops)                 one row per logical change: its write set
 *   buckets(key, tokens, updated_ms), places(key, seen_ms)   login throttling
 *   schema_version(version, applied_at)
 * A write: BEGIN; pg_advisory_xact_lock (one lock for the whole cluster);
 * catch up; tokend.write(ops) applies the set to kv, appends it to changes
 * under seq = last_seq + 1 and NOTIFYs tokend_changes; COMMIT. Two round
 * trips when the replica is current: BEGIN + lock + newest seq in one
 * simple query, then the write and the COMMIT pipelined (libpq pipeline
 * mode) with one Sync. */
#ifndef TOKEND_CLUSTER_H
#define TOKEND_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include "pool.h"

typedef struct cluster cluster;
typedef struct cluster_conn cluster_conn;

enum {
    CLUSTER_OK = 0,
    CLUSTER_DOWN = -1,       /* PostgreSQL cannot be reached or failed */
    CLUSTER_EXISTS = -2,     /* a unique key was taken (an INSERT's unique violation) */
    CLUSTER_BEHIND = -3,     /* the changes wanted were pruned: bootstrap */
    CLUSTER_STOP = -4        /* a callback asked to stop */
};

/* Applies changes seqs[0..n) (consecutive, the first = applied + 1) in
 * one local transaction; CLUSTER_OK or CLUSTER_DOWN (local failure). */
typedef int (*cluster_apply_fn)(void *arg, size_t n, const uint64_t *seqs, const uint8_t *const *ops,
                                const size_t *lens);

/* The feed thread's view of the store, given at cluster_feed_start. */
typedef struct {
    void *arg;
    /* The sequence the local replica has applied. */
    uint64_t (*applied)(void *arg);
    cluster_apply_fn apply;
} cluster_feed_hooks;

/* A consistent snapshot, streamed: begin, every kv row, end (ok = 0 if
 * the stream broke: the store then aborts its transaction). */
typedef struct {
    void *arg;
    int (*begin)(void *arg, const char *cluster_id, uint64_t seq);
    int (*row)(void *arg, int db, const uint8_t *key, size_t klen, const uint8_t *val,
               size_t vlen);
    int (*end)(void *arg, int ok);
} cluster_snapshot_hooks;

/* Checks the URL by connecting once. On failure err holds a sentence. */
int cluster_open(cluster **out, const char *url, char *err, size_t errlen);
void cluster_close(cluster *c);
/* Stops the feed and answers every parked read (the server stopping, while
 * its loops still run); cluster_close does it too if not done. */
void cluster_stop(cluster *c);
/* A connection string (URL or key=value) as key=value pairs of what it
 * sets, its passwords as ****; one libpq cannot parse is not shown. */
void cluster_conninfo_masked(const char *conninfo, char *out, size_t outlen);

/* Creates or upgrades the schema (versioned, idempotent, under a lock so
 * concurrent inits are safe). *from, *to: the versions before and after. */
int cluster_migrate(cluster *c, int *from, int *to, char *err, size_t errlen);
/* The schema is there and current; CLUSTER_DOWN with err otherwise. */
int cluster_check(cluster *c, char *err, size_t errlen);
/* The cluster's identity, newest sequence and whether kv holds anything. */
int cluster_state(cluster *c, char *id, size_t idlen, uint64_t *last_seq, int *kv_empty);
/* Reads a consistent snapshot (REPEATABLE READ) into the hooks. */
int cluster_snapshot(cluster *c, const cluster_snapshot_hooks *h);
/* `cluster init`: under the write lock, when kv is empty, copies rows from
 * `next` (returns 1 with a row, 0 at the end, < 0 on error) into kv. */
typedef int (*cluster_row_fn)(void *arg, int *db, const uint8_t **key, size_t *klen,
                              const uint8_t **val, size_t *vlen);
int cluster_push(cluster *c, cluster_row_fn next, void *arg, char *err, size_t errlen);

/* --- the write path (a worker thread or the CLI) -------------------------------- */
/* Opens a transaction on a pooled connection and takes the cluster's write
 * lock; *last_seq is the newest change, read under the lock. */
int cluster_write_begin(cluster *c, cluster_conn **conn, uint64_t *last_seq);
/* Calls fn for each change in (after, upto], in order, on the writer's
 * connection. CLUSTER_BEHIND when some are pruned. */
typedef int (*cluster_change_fn)(void *arg, uint64_t seq, const uint8_t *ops, size_t len);
/* The changes after `after` up to the newest when it begins, to apply in
 * batches as the feed's are, without the write lock (a command that only
 * reads catches its directory up with them). CLUSTER_OK, CLUSTER_BEHIND
 * (the next one was pruned), or CLUSTER_DOWN. */
#define CLUSTER_BATCH 500
int cluster_read_changes(cluster *c, uint64_t after, cluster_apply_fn apply, void *arg);
int cluster_write_fetch(cluster_conn *conn, uint64_t after, uint64_t upto, cluster_change_fn fn,
                        void *arg);
/* Writes the set as the next change and commits, in one round trip (the
 * two statements pipelined); *seq is its number. CLUSTER_EXISTS: an
 * INSERT's key is taken (rolled back). Anything but CLUSTER_OK: nothing
 * of the write is committed (the COMMIT runs only after the write did,
 * and a failed COMMIT rolls it back). When the connection breaks after
 * the COMMIT left, another connection asks whether the change landed
 * (CLUSTER_OK if it did); only when the database cannot answer that is a
 * write that landed reported as not made (the feed then applies it). */
int cluster_write_commit(cluster_conn *conn, const uint8_t *ops, size_t len, uint64_t *seq);
/* Rolls back (releasing the lock) and returns the connection. */
void cluster_write_abort(cluster_conn *conn);

/* --- the feed ------------------------------------------------------------------------ */
/* Starts the thread that follows the change log into the local replica:
 * LISTEN tokend_changes, a poll every second at the latest, reconnecting
 * when PostgreSQL comes back; prunes old changes now and then. */
int cluster_feed_start(cluster *c, const cluster_feed_hooks *h, const cluster_snapshot_hooks *snap);
/* Parks `job` until the feed has applied every change committed before
 * this call (one poll of the log that starts after it), or 1 s: then
 * job->post(job) runs on the feed thread. All waiters share one poll at a
 * time, so a flood of misses costs PostgreSQL one small query per round
 * trip. 0 when parked, -1 when the feed is not connected (do not wait). */
int cluster_wait(cluster *c, pool_job *job);

/* The same rule for a worker, in two steps: a ticket for a poll that starts
 * after now (0 when the feed does not run or the database is down), which
 * wakes the feed; then, later, a wait (blocking: a worker's, never a
 * loop's) until that poll has ended, the database or the feed is gone, or
 * timeout_ms passed. Password logins take the ticket when they start and
 * wait after the hash, known name or not: by then the poll has long ended,
 * and an account made on another node before the login is seen. */
uint64_t cluster_fresh_ticket(cluster *c);
void cluster_fresh_wait(cluster *c, uint64_t ticket, int timeout_ms);

typedef struct {
    int database_up;            /* the feed's connection is up */
    uint64_t applied_seq;       /* applied locally */
    uint64_t latest_seq;        /* the newest the feed has seen */
    int64_t lag_ms;             /* how long applied < latest has lasted, else 0 */
    uint64_t polls;             /* change-log polls, all causes */
    uint64_t wait_polls;        /* polls made because a read missed */
    uint64_t waits;             /* reads parked */
    uint64_t bootstraps;
} cluster_status;
void cluster_get_status(cluster *c, cluster_status *st);

/* --- throttling (worker threads) ----------------------------------------------------- */
/* Refills n (<= 4) buckets (keys[i], capacity caps[i], refilled over
 * window_ms) and takes one from each if every one holds one, atomically;
 * `give` gives one back to each instead (capped). tokens[i]: each level
 * before: the take happened iff all are >= 1. */
int cluster_buckets(cluster *c, size_t n, const uint8_t (*keys)[16], const unsigned *caps,
                    unsigned window_ms, int give, double *tokens);
/* Known places: is `key` seen within max_age_ms; or mark it seen now. */
int cluster_place_known(cluster *c, const uint8_t key[16], int64_t max_age_ms, int *known);
int cluster_place_seen(cluster *c, const uint8_t key[16]);

#endif
