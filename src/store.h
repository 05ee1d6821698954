/* store.h - tokend's data in LMDB: apps, users and their login indexes,
 * sessions, devices and push tokens. Only store.c calls LMDB.
 *
 * Records are the protobuf messages of proto/tokend/v1/store.proto; keys
 * are fixed-width big-endian ids so range scans come out in order. Each
 * logical change is one write transaction, so a crash never leaves half of
 * one, and a commit is durable before the call returns. Several processes
 * (the server and the admin CLI) may use one data directory at once.
 *
 * Writes that an admin may make take an audit record (or NULL), appended in
 * the same transaction as the change.
 *
 * Functions return STORE_OK (0) or a negative STORE_* code. Records handed
 * out are freed by the caller with protobuf_c_message_free_unpacked(m, NULL). */
#ifndef TOKEND_STORE_H
#define TOKEND_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "crypto.h"
#include "pool.h"
#include "tokend/v1/store.pb-c.h"

enum {
    STORE_OK = 0,
    STORE_ERR = -1,      /* I/O or corruption: see the log */
    STORE_NOTFOUND = -2,
    STORE_EXISTS = -3,   /* a unique name, phone or email is taken */
    STORE_FULL = -4,     /* the map (or the disk) is full */
    STORE_CHANGED = -5,  /* the record changed since it was read: nothing written */
    STORE_UNAVAILABLE = -6, /* cluster mode: PostgreSQL failed; nothing written anywhere */
    STORE_REPLICA = -7   /* a replica of a cluster opened without --cluster: no write */
};

#define STORE_MAPSIZE_DEFAULT ((size_t)1 << 30)
#define STORE_NAME_MAX 128
#define STORE_GUID_MAX 256

typedef struct store store;
typedef Tokend__V1__Store__App store_app;
typedef Tokend__V1__Store__User store_user;
typedef Tokend__V1__Store__Session store_session;
typedef Tokend__V1__Store__Device store_device;
typedef Tokend__V1__Store__AuditEntry store_audit;

typedef enum { LOGIN_NAME = 'n', LOGIN_PHONE = 'p', LOGIN_EMAIL = 'e' } login_kind;

/* The conflict a new name meets when it looks like another user's name in
 * the app (lookalike.h): the subject of "... is already taken in this app". */
#define STORE_CONFLICT_LOOKALIKE "a name that looks the same"

/* Everything one successful login writes, in one transaction. */
typedef struct {
    uint8_t session_hash[CRYPTO_HASH_BYTES];
    store_session *session;        /* user_id, app_id, device_guid, ... */
    uint8_t store_token_hash[CRYPTO_HASH_BYTES];
    int with_device;               /* session->device_guid names a device */
    uint8_t push_token_hash[CRYPTO_HASH_BYTES];
    uint8_t *push_token_sealed;
    size_t push_token_sealed_len;
    int32_t platform;
    const char *user_agent;
    uint32_t device_sn;            /* out: the device's number within the user */
    const store_audit *audit;      /* a token issued by an admin, or NULL */
    /* The user is read again in the commit's transaction: gone, or of
     * another app, is STORE_NOTFOUND; disabled, or a password hash other
     * than expect_hash (when not NULL), is STORE_CHANGED. */
    const char *expect_hash;
    const char *new_hash;          /* an upgraded hash to store with it, or NULL */
} store_login;

/* Opens (creating when missing) the environment in `dir`. On failure err
 * holds a sentence for the operator. */
int store_open(store **out, const char *dir, size_t mapsize, char *err, size_t errlen);
void store_close(store *s);
/* Keeps the data in memory from now on (tokend serve --lock-memory on):
 * locks the process's memory and faults the data file in, and a thread
 * follows what it grows by; bytes: the file's bytes now in memory.
 * STORE_ERR, with a sentence in err, when it cannot (store_may_lock_memory
 * tells whether the process lacks the right to lock). */
int store_keep_resident(store *s, size_t *bytes, char *err, size_t errlen);
/* Whether the process may lock all it maps (an unlimited memlock limit,
 * or CAP_IPC_LOCK): 1 or 0. */
int store_may_lock_memory(void);
/* For event loops (on: 1): after a read, the calling thread's read transaction is
 * kept open while no write commits, so the next read skips renewing it.
 * Such a thread calls store_read_tick(s) at least every
 * STORE_READ_TICK_MS while store_reads_parked(s): a transaction older than
 * the newest commit, or not used since the last tick, is then ended, so it
 * pins old pages only that long and an idle loop holds none. */
#define STORE_READ_TICK_MS 100
void store_reads_keep(int on);
int store_reads_parked(store *s);
void store_read_tick(store *s);
/* The data directory's token-hash keys, newest first: tokens are hashed
 * (and push tokens sealed) with keys[0]; lookups of older tokens try the
 * others. A key leaves the ring once no session uses it (at the purge);
 * `tokend app rotate-key` adds one. The ring is a snapshot: it never
 * changes under the caller. */
#define STORE_KEYS_MAX 4
typedef struct {
    uint32_t id;
    uint8_t key[CRYPTO_KEY_BYTES];
} store_key;
typedef struct {
    size_t n;
    store_key keys[STORE_KEYS_MAX];
} store_keyring;
const store_keyring *store_keys(store *s);
/* The newest key (keys[0]), its id, and the key of an id (NULL: retired). */
const uint8_t *store_token_key(const store *s);
int store_first_key(store *s, uint8_t key[CRYPTO_KEY_BYTES]);
uint32_t store_token_key_id(const store *s);
const uint8_t *store_token_key_of(const store *s, uint32_t id);
/* Re-reads the ring another process may have rotated: 1 if it changed. */
int store_keys_refresh(store *s);
/* A new token-hash key, newest at once; keys no session uses are retired
 * first. STORE_FULL when STORE_KEYS_MAX keys are all still in use. */
int store_rotate_token_key(store *s, uint32_t *new_id);
/* A new key pair for the app (X25519, the private half sealed under the
 * newest token-hash key); the app keeps its newest 4. Sets *new_id. */
int store_app_rotate_key(store *s, uint64_t app_id, uint32_t *new_id);
/* `app rotate-key`: a new token-hash key and a new key pair for the app, in
 * one transaction (a crash between them would leave one rotated, and a
 * retry would add another token key to the bounded ring). */
int store_rotate_keys(store *s, uint64_t app_id, uint32_t *token_id, uint32_t *pair_id);
/* A number no other store this process opened has: what a cache of one
 * store's records is keyed by, so two data directories never mix. */
uint64_t store_serial(const store *s);
const char *store_strerror(int code);

int store_app_create(store *s, store_app *app);              /* sets app->app_id */
int store_app_get(store *s, uint64_t app_id, store_app **out);
/* Calls fn for each app in id order, in one read transaction; the app is
 * fn's only during the call. */
typedef void (*store_app_fn)(const store_app *app, void *arg);
int store_apps_each(store *s, store_app_fn fn, void *arg);
int store_default_app(store *s, uint64_t *app_id);

/* Creates a user, enforcing unique name/phone/email within the app. On
 * STORE_EXISTS, *conflict names the field ("name", "phone", "email"). */
int store_user_create(store *s, store_user *user, const char **conflict, const store_audit *audit);
int store_user_get(store *s, uint64_t user_id, store_user **out);
/* Creates n users of one app in one write transaction (an import's batch:
 * all of it is written or none). Each user's outcome in rc[i]: STORE_OK
 * (user_id set) or STORE_EXISTS (conflict[i] names the field: taken
 * before, or by an earlier user of the batch; nothing of that user is
 * written). Returns STORE_OK once the batch committed, STORE_EXISTS when
 * `all_or_nothing` and a user conflicted (nothing written), STORE_NOTFOUND
 * for an unknown app, or another error with nothing written. A name that
 * looks like another user's in the app (lookalike.h) is a conflict too
 * (STORE_CONFLICT_LOOKALIKE), unless `lookalikes_ok`. */
int store_users_import(store *s, uint64_t app_id, store_user *const *users, size_t n,
                       int all_or_nothing, int lookalikes_ok, int *rc, const char **conflict);
int store_user_lookup(store *s, uint64_t app_id, login_kind kind, const char *key,
                      uint64_t *user_id);
/* What a login reads, in one read transaction: the user by login name
 * (kind != 0) or by user_id, of the app (STORE_NOTFOUND otherwise), and
 * whether `device_guid` (may be NULL) is a device of that user. */
int store_login_find(store *s, uint64_t app_id, login_kind kind, const char *key,
                     uint64_t user_id, const char *device_guid, store_user **user,
                     int *device_known);
/* How many accounts of `app_id` have a password hash of each cost, up to
 * max costs; app_id 0: of every app. Cost 0 (ops and mem): hashes this
 * build cannot verify. */
int store_pwcost_mix(store *s, uint64_t app_id, crypto_pwcost *costs, uint64_t *counts, size_t max,
                     size_t *n);

int store_login_commit(store *s, store_login *login);
int store_session_get(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session **out);
int store_device_get(store *s, uint64_t app_id, const char *guid, store_device **out);
int store_push_lookup(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], uint64_t *app_id,
                      char *guid, size_t guid_len);

/* --- revocation ---------------------------------------------------------- */
int store_session_revoke(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], const store_audit *audit);
/* Revokes every session of the user but `keep` (may be NULL); with an
 * app_id, nothing when the user is another app's (0: any app). */
int store_user_revoke(store *s, uint64_t app_id, uint64_t user_id, const uint8_t *keep,
                      size_t *revoked, const store_audit *audit);

/* --- the hot path: n sessions in one read transaction; out[i] is NULL when
 * not found. `alloc` (may be NULL) lets the caller decode into an arena;
 * there the sessions' secrets, which checks do not need (store_token_hash,
 * access_key_secret), may be left empty. */
int store_sessions_get(store *s, size_t n, const uint8_t *const *hashes,
                       store_session **out, ProtobufCAllocator *alloc);
/* The same, with the admin-token generation read in the same transaction
 * (*admin_gen): it moves in the transaction that ends any admin token
 * (revocation, expiry), whichever process writes it. A check of an admin
 * token made at generation g still holds while the generation is g. */
int store_sessions_get_gen(store *s, uint64_t *admin_gen, size_t n,
                           const uint8_t *const *hashes, store_session **out,
                           ProtobufCAllocator *alloc);
int store_store_token_get(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session **out);
/* For the scale benchmark only (tools/benchmark/bulk_sessions.c): n
 * sessions (no device) with their indexes and store tokens, in one write
 * transaction, as n logins would leave them. */
int store_sessions_bulk(store *s, size_t n, const uint8_t (*hashes)[CRYPTO_HASH_BYTES],
                        const uint8_t (*store_hashes)[CRYPTO_HASH_BYTES], store_session *const *ss);

/* --- devices (device_guid filled in each record) -------------------------- */
int store_devices_list(store *s, uint64_t app_id, uint64_t user_id, store_device ***out,
                       size_t *n);
void store_devices_free(store_device **list, size_t n);
/* Revokes the sessions and push token of device `sn` (0: every device);
 * `forget` also removes the device. STORE_NOTFOUND for an unknown sn. */
int store_device_forget(store *s, uint64_t app_id, uint64_t user_id, uint32_t sn, int forget,
                        const store_audit *audit);
int store_device_bind(store *s, uint64_t app_id, uint64_t user_id, uint32_t sn,
                      const char *device_token, const char *notifier_name,
                      const store_audit *audit);

/* What a user's own change (a new password, deleting the account) was
 * decided on: the password hash it checked and the session that asked
 * (either may be NULL). If either changed meanwhile, the change is
 * refused with STORE_CHANGED and nothing is written. */
typedef struct {
    const char *hash;
    const uint8_t *session;
} store_expect;

/* --- users ------------------------------------------------------------------- */
/* NULL leaves a field; "" clears phone or email. STORE_EXISTS sets conflict. */
int store_user_update(store *s, uint64_t user_id, const char *name, const char *phone,
                      const char *email, const char **conflict, const store_audit *audit);
/* New hash; revokes every session but `keep` (may be NULL). */
int store_user_set_password(store *s, uint64_t user_id, const char *hash, const uint8_t *keep,
                            const store_expect *expect, const store_audit *audit);
/* Disabling revokes every session. STORE_NOTFOUND if not a user of the app. */
int store_user_set_disabled(store *s, uint64_t app_id, uint64_t user_id, int disabled,
                            const store_audit *audit);
/* The same for n users in one transaction, all or none; audits: n records
 * (or NULL). */
int store_users_set_disabled(store *s, uint64_t app_id, const uint64_t *ids, size_t n, int disabled,
                             const store_audit *audits);
/* Removes the user, its indexes, sessions, devices, push tokens and groups. */
int store_user_delete(store *s, uint64_t user_id, const store_expect *expect,
                      const store_audit *audit);
/* A page of the app's users in id order: those after user `after` (0: from
 * the first), less `offset`; *more (may be NULL) says whether any follow. */
int store_users_list(store *s, uint64_t app_id, uint64_t after, size_t offset, size_t limit,
                     store_user ***out, size_t *n, int *more);
void store_users_free(store_user **list, size_t n);

/* --- admin tokens, groups, audit ---------------------------------------------- */
/* Stores an admin session (ss->app_id set; admin and no expiry). */
int store_admin_token_create(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session *ss,
                             const store_audit *audit);
typedef void (*store_admin_token_fn)(const uint8_t hash[CRYPTO_HASH_BYTES],
                                     const store_session *ss, void *arg);
int store_admin_tokens_list(store *s, uint64_t app_id, store_admin_token_fn fn, void *arg);
int store_group_set(store *s, uint64_t app_id, uint64_t group_id, uint64_t user_id,
                    const store_audit *audit);
int store_group_admin(store *s, uint64_t app_id, uint64_t group_id, uint64_t *user_id);
typedef void (*store_audit_fn)(const store_audit *entry, void *arg);
int store_audit_list(store *s, store_audit_fn fn, void *arg);

/* --- backups ------------------------------------------------------------------------ */
/* A consistent, compacted copy of the environment (one read transaction:
 * writers go on) into the file `out`, which must not exist: written to
 * out.partial, synced, then renamed. */
int store_backup(store *s, const char *out, char *err, size_t errlen);
/* Puts the backup `from` in place as the environment of `dir` (made if
 * missing). Refused when a process has `dir` open (the server or a
 * command: LMDB holds a lock on its lock file while the environment is
 * open, and this takes it exclusively for the whole restore), when `from`
 * is not a tokend backup, and when `dir` holds anything unless `force`. */
int store_restore(const char *from, const char *dir, int force, char *err, size_t errlen);

/* --- for metrics: cheap, no scan ------------------------------------------------- */
typedef struct {
    size_t map_size, map_used;         /* bytes */
    size_t map_resident;               /* bytes of the file kept in memory (lock-memory) */
    unsigned readers_used, readers_max; /* LMDB reader slots (all processes) */
} store_stats;
int store_stats_get(store *s, store_stats *out);
/* Calls fn for each app with its users, sessions and admin tokens, read from
 * counters every write keeps (one short cursor over a few keys per app). */
typedef void (*store_count_fn)(uint64_t app_id, uint64_t users, uint64_t sessions,
                               uint64_t admin_tokens, void *arg);
int store_app_counts(store *s, store_count_fn fn, void *arg);

/* Deletes up to `max` sessions that expired before now_ms, in one write
 * transaction (so a purge never holds the writer lock for long). */
int store_purge_expired(store *s, int64_t now_ms, size_t max, size_t *purged);

/* --- cluster mode (store_cluster.c) ---------------------------------------------
 * The store opened on a data directory and a PostgreSQL URL: every write
 * commits in PostgreSQL first, the directory is this node's replica, kept
 * current by a feed thread. Reads stay local. */
enum { STORE_CLUSTER_FEED = 1 };   /* store_cluster_join: run the feed (serve) */
/* Joins the cluster: checks the schema, bootstraps an empty directory from a
 * snapshot (the token key with it), refuses a directory of another cluster
 * or one holding single-node data. On failure err holds a sentence. */
int store_cluster_join(store *s, const char *url, int flags, char *err, size_t errlen);
/* `tokend cluster init`: creates or migrates the schema and, into an empty
 * cluster, copies this directory (so its tokens verify on every node). A
 * sentence of what was done goes into msg (or of what failed). */
int store_cluster_init(store *s, const char *url, char *msg, size_t msglen);
void store_cluster_leave(store *s);
/* Brings a joined replica up to the cluster's newest change, as every write
 * does first (under the cluster's write lock, so: for a command about to
 * write, not for a read), so that what is read next holds what any node
 * wrote. STORE_OK at once when not joined. */
int store_catch_up(store *s);
/* Cluster mode: applies the changes the directory has not, without the
 * cluster's write lock (for a command that only reads). STORE_OK, or an
 * error with what went wrong in err (the database away, the next change
 * pruned); the directory is then as it was. Nothing in single-node mode. */
int store_cluster_refresh(store *s, char *err, size_t errlen);
int store_clustered(const store *s);
/* Cluster mode, the server stopping: the feed ends and parked reads are
 * answered while the event loops still run (store_close does the rest). */
void store_cluster_stop(store *s);
/* 1 if the data directory is a replica of a cluster (whether joined or
 * not): its cluster id and the last change it applied. */
int store_replica_of(store *s, char *id, size_t idlen, uint64_t *seq);
/* Makes a replica single-node data again (forgets its cluster id and
 * sequence): for a restored backup that is to seed a new cluster. */
int store_replica_detach(store *s);
/* A read that found nothing may be a write of another node not applied
 * here yet. Parks `job` until the feed has applied everything committed
 * before now (bounded, 1 s), then job->post(job) runs (on the feed's
 * thread). 0 when parked; -1 when there is nothing to wait for (single
 * node, or the cluster database is unreachable): answer from what is local. */
int store_wait_fresh(store *s, pool_job *job);
/* The same for a worker that must not park the call (cluster_fresh_ticket
 * and cluster_fresh_wait, at most 1 s): a ticket taken on the loop, waited
 * for on the worker. 0 and no wait on a single node. */
uint64_t store_fresh_ticket(store *s);
void store_fresh_wait(store *s, uint64_t ticket);
typedef struct {
    int clustered;
    int database_up;
    uint64_t applied_seq, latest_seq;
    int64_t lag_ms;
    uint64_t polls, wait_polls, waits, bootstraps;
} store_cluster_info;
void store_cluster_status(store *s, store_cluster_info *out);
/* The shared login throttle (throttle.c; cluster.h says how): blocking,
 * for workers only. STORE_UNAVAILABLE on one node or a database away. */
int store_throttle_buckets(store *s, size_t n, const uint8_t (*keys)[16], const unsigned *caps,
                           unsigned window_ms, int give, double *tokens);
int store_place_known(store *s, const uint8_t key[16], int64_t max_age_ms, int *known);
int store_place_seen(store *s, const uint8_t key[16]);

#endif
