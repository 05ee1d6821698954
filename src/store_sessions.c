/* store_sessions.c - sessions: the login commit, revocation, the hot-path
 * reads, store tokens, admin tokens and the purge of expired sessions.
 *
 * A session is found by its token hash and listed in two indexes: under
 * its owner (user_sessions, or admin_tokens for an admin token) for
 * logout-all and listing, and under its expiry for the purge. Every write
 * here keeps the record and both indexes together, and revocation also
 * clears the push token of a device left without a session, because a
 * push must not reach a device whose user has signed out. */
#include <stdlib.h>
#include <string.h>
#include "store_internal.h"

/* A session and the indexes that find it by user and by expiry. */
static int put_session(store *s, MDB_txn *txn, const uint8_t hash[CRYPTO_HASH_BYTES],
                       const store_session *ss)
{
    uint8_t okey[OWNER_KEY_LEN], ekey[EXPIRY_KEY_LEN];
    int rc = put_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES, &ss->base, MDB_NOOVERWRITE);
    int owner_db = owner_key(okey, ss, hash);
    if (rc == STORE_OK)
        rc = put_raw(s, txn, owner_db, okey, sizeof okey, "", 0, 0);
    if (rc == STORE_OK && ss->expire_ms > 0)
        rc = put_raw(s, txn, DB_EXPIRY, ekey, expiry_key(ekey, ss->expire_ms, hash), "", 0, 0);
    if (rc == STORE_OK)
        rc = count_add(s, txn, ss->app_id, ss->admin ? 'a' : 's', +1);
    if (rc == STORE_OK)
        rc = count_add(s, txn, ss->key_id, 'k', +1);
    return rc;
}

/* The login's user, read again under the writer lock: a disable, delete or
 * new password that committed while the password was being checked wins. */
static int recheck_user(store *s, MDB_txn *txn, store_login *login)
{
    store_user *u = NULL;
    uint8_t uid[8];
    int rc = get_msg(s, txn, DB_USERS, uid, user_key(uid, login->session->user_id),
                     &tokend__v1__store__user__descriptor, (void **)&u);
    if (rc == STORE_OK && u->app_id != login->session->app_id)
        rc = STORE_NOTFOUND;
    else if (rc == STORE_OK && (u->disabled || (login->expect_hash &&
                                                strcmp(u->password_hash, login->expect_hash) != 0)))
        rc = STORE_CHANGED;
    else if (rc == STORE_OK && login->new_hash)
        rc = set_hash_txn(s, txn, u, login->new_hash);
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return rc;
}

int store_login_commit(store *s, store_login *login)
{
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = recheck_user(s, txn, login);
    login->session->store_token_hash.data = login->store_token_hash;
    login->session->store_token_hash.len = CRYPTO_HASH_BYTES;
    if (rc == STORE_OK && login->with_device)
        rc = move_device(s, txn, login);
    login->session->device_sn = login->device_sn;
    if (rc == STORE_OK)
        rc = put_session(s, txn, login->session_hash, login->session);
    if (rc == STORE_OK)
        rc = put_raw(s, txn, DB_STORE_TOKENS, login->store_token_hash, CRYPTO_HASH_BYTES,
                     login->session_hash, CRYPTO_HASH_BYTES, MDB_NOOVERWRITE);
    return txn_end(txn, with_audit(s, txn, rc, login->audit));
}

int store_session_get(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session **out)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES,
                 &tokend__v1__store__session__descriptor, (void **)out);
    txn_abort(s, txn);
    return rc;
}

/* Calls fn with each session an index (user_sessions or admin_tokens, keys
 * id(8) hash(32)) lists under `id`; ss is NULL for an entry whose session is
 * gone. fn returns like a scan_fn. */
typedef int (*session_fn)(store *s, MDB_txn *txn, const uint8_t *key, size_t len,
                          const store_session *ss, void *arg);

typedef struct {
    session_fn fn;
    void *arg;
} session_scan;

static int visit_session(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    session_scan *sc = arg;
    store_session *ss = NULL;
    if (len != OWNER_KEY_LEN)
        return 0;
    int rc = get_msg(s, txn, DB_SESSIONS, key + OWNER_KEY_HASH, CRYPTO_HASH_BYTES,
                     &tokend__v1__store__session__descriptor, (void **)&ss);
    if (rc != STORE_OK && rc != STORE_NOTFOUND)
        return rc;
    rc = sc->fn(s, txn, key, len, ss, sc->arg);
    if (ss)
        protobuf_c_message_free_unpacked(&ss->base, NULL);
    return rc;
}

static int scan_sessions(store *s, MDB_txn *txn, int db, uint64_t id, session_fn fn, void *arg)
{
    session_scan sc = {fn, arg};
    return scan_prefix(s, txn, db, id, visit_session, &sc);
}

static int revoke_txn(store *s, MDB_txn *txn, const uint8_t hash[CRYPTO_HASH_BYTES])
{
    store_session *ss = NULL;
    uint8_t okey[OWNER_KEY_LEN], ekey[EXPIRY_KEY_LEN];
    int rc = get_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES,
                     &tokend__v1__store__session__descriptor, (void **)&ss);
    if (rc != STORE_OK)
        return rc;
    rc = del_raw(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES);
    int owner_db = owner_key(okey, ss, hash);
    if (rc == STORE_OK)
        rc = del_raw(s, txn, owner_db, okey, sizeof okey);
    if (rc == STORE_OK && ss->expire_ms > 0)
        rc = del_raw(s, txn, DB_EXPIRY, ekey, expiry_key(ekey, ss->expire_ms, hash));
    if (rc == STORE_OK && ss->store_token_hash.len == CRYPTO_HASH_BYTES)
        rc = del_raw(s, txn, DB_STORE_TOKENS, ss->store_token_hash.data, CRYPTO_HASH_BYTES);
    if (rc == STORE_OK)
        rc = count_add(s, txn, ss->app_id, ss->admin ? 'a' : 's', -1);
    if (rc == STORE_OK)
        rc = count_add(s, txn, ss->key_id, 'k', -1);
    /* Caches of admin checks (rpc_auth.c) see the generation move. */
    uint64_t gen;
    if (rc == STORE_OK && ss->admin)
        rc = next_id(s, txn, ADMIN_GEN_KEY, 1, &gen);
    protobuf_c_message_free_unpacked(&ss->base, NULL);
    return rc;
}


static int revoke_matching(store *s, MDB_txn *txn, const uint8_t *key, size_t len,
                           const store_session *ss, void *arg)
{
    revoke_filter *f = arg;
    const uint8_t *hash = key + OWNER_KEY_HASH;
    int rc;
    if ((f->keep && memcmp(hash, f->keep, CRYPTO_HASH_BYTES) == 0) ||
        (f->only && memcmp(hash, f->only, CRYPTO_HASH_BYTES) != 0))
        return 0;
    if (!ss)  /* a dangling index entry: drop it */
        return del_raw(s, txn, DB_USER_SESSIONS, key, len);
    if (f->device_guid && strcmp(ss->device_guid, f->device_guid) != 0)
        return 0;
    if ((rc = revoke_txn(s, txn, hash)) == STORE_OK)
        f->revoked++;
    return rc;
}

typedef struct {
    char **guids;            /* device_guid of each remaining session */
    size_t n, cap;
} guid_list;

static int collect_guid(store *s, MDB_txn *txn, const uint8_t *key, size_t len,
                        const store_session *ss, void *arg)
{
    guid_list *l = arg;
    if (!ss)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **g = realloc(l->guids, cap * sizeof *g);
        if (!g)
            return STORE_ERR;
        l->guids = g, l->cap = cap;
    }
    l->guids[l->n] = strdup(ss->device_guid);
    return l->guids[l->n++] ? 0 : STORE_ERR;
}

static int has_guid(const guid_list *l, const char *guid)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->guids[i], guid) == 0)
            return 1;
    return 0;
}

typedef struct {
    guid_list *live;
    int rc;
} orphan_scan;

/* user_devices keys are user(8) app(8) guid: clears the push token of a
 * device none of the user's sessions is on any more. */
static int drop_orphan(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    orphan_scan *o = arg;
    store_device *d = NULL;
    if (len < 16)
        return 0;
    int rc = get_msg(s, txn, DB_DEVICES, key + USER_DEVICE_DKEY, len - USER_DEVICE_DKEY,
                     &tokend__v1__store__device__descriptor, (void **)&d);
    if (rc != STORE_OK)
        return rc == STORE_NOTFOUND ? 0 : rc;
    if (d->push_token_hash.len && d->user_id == get_u64(key) && !has_guid(o->live, d->device_guid)) {
        rc = del_raw(s, txn, DB_PUSH_TOKENS, d->push_token_hash.data, d->push_token_hash.len);
        d->push_token_hash.len = 0;
        d->push_token_sealed.len = 0;
        if (rc == STORE_OK)
            rc = put_msg(s, txn, DB_DEVICES, key + USER_DEVICE_DKEY, len - USER_DEVICE_DKEY,
                         &d->base, 0);
    }
    protobuf_c_message_free_unpacked(&d->base, NULL);
    return rc;
}

/* Revokes the user's sessions that pass the filter. A device's push token
 * lives as long as a session on that device: pushes must not reach a
 * device whose user has signed out, been disabled or lost their password. */
int revoke_user_txn(store *s, MDB_txn *txn, uint64_t user_id, revoke_filter *f)
{
    guid_list live = {0};
    orphan_scan o = {&live, 0};
    int rc = scan_sessions(s, txn, DB_USER_SESSIONS, user_id, revoke_matching, f);
    if (rc != STORE_OK || !f->revoked)
        return rc;
    rc = scan_sessions(s, txn, DB_USER_SESSIONS, user_id, collect_guid, &live);
    if (rc == STORE_OK)
        rc = scan_prefix(s, txn, DB_USER_DEVICES, user_id, drop_orphan, &o);
    for (size_t i = 0; i < live.n; i++)
        free(live.guids[i]);
    free(live.guids);
    return rc;
}

int store_session_revoke(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], const store_audit *audit)
{
    MDB_txn *txn;
    store_session *ss = NULL;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES,
                 &tokend__v1__store__session__descriptor, (void **)&ss);
    if (rc == STORE_OK && !ss->admin) {
        /* Through the user's index, so the device's push token follows. */
        revoke_filter f = {NULL, NULL, 0};
        f.only = hash;
        rc = revoke_user_txn(s, txn, ss->user_id, &f);
    } else if (rc == STORE_OK) {
        rc = revoke_txn(s, txn, hash);
    }
    if (ss)
        protobuf_c_message_free_unpacked(&ss->base, NULL);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

int store_user_revoke(store *s, uint64_t app_id, uint64_t user_id, const uint8_t *keep,
                      size_t *revoked, const store_audit *audit)
{
    MDB_txn *txn;
    revoke_filter f = {keep, NULL, 0};
    store_user *u = NULL;
    uint8_t key[8];
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    /* Checked again here, in the write: in cluster mode the caller's check
     * read a replica that may not have had the account yet. */
    rc = app_id ? get_msg(s, txn, DB_USERS, key, user_key(key, user_id),
                          &tokend__v1__store__user__descriptor, (void **)&u)
                : STORE_NOTFOUND;
    int others = rc == STORE_OK && u->app_id != app_id;  /* nothing of theirs is touched */
    if (rc == STORE_OK || rc == STORE_NOTFOUND)
        rc = others ? STORE_OK : revoke_user_txn(s, txn, user_id, &f);
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    rc = txn_end(txn, with_audit(s, txn, rc, audit));
    if (revoked)
        *revoked = f.revoked;
    return rc;
}

/* --- sessions read on the hot path -------------------------------------------- */

/* What a check of a token needs none of: its store token's hash and the
 * access key secret (fields 5 and 6 of store.proto's Session), left
 * undecoded so no copy of them is made. */
#define SESSION_SECRETS (1ull << 5 | 1ull << 6)

int store_sessions_get(store *s, size_t n, const uint8_t *const *hashes,
                       store_session **out, ProtobufCAllocator *alloc)
{
    return store_sessions_get_gen(s, NULL, n, hashes, out, alloc);
}

int store_sessions_get_gen(store *s, uint64_t *admin_gen, size_t n,
                           const uint8_t *const *hashes, store_session **out,
                           ProtobufCAllocator *alloc)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    if (admin_gen) {
        /* The same snapshot as this thread's last read has the same
         * generation: under reads alone it is read once. */
        static __thread struct { uint64_t serial; size_t txnid; uint64_t gen; } last;
        size_t id = mdb_txn_id(txn);
        if (last.serial == s->serial && last.txnid == id) {
            *admin_gen = last.gen;
        } else {
            rc = get_u64_value(s, txn, DB_META, ADMIN_GEN_KEY, sizeof ADMIN_GEN_KEY - 1, admin_gen);
            if (rc == STORE_NOTFOUND)
                *admin_gen = 0, rc = STORE_OK;
            if (rc == STORE_OK)
                last.serial = s->serial, last.txnid = id, last.gen = *admin_gen;
        }
        for (size_t i = 0; rc != STORE_OK && i < n; i++)
            out[i] = NULL;
    }
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        out[i] = NULL;
        if (!hashes[i])
            continue;
        int r = get_msg_with(s, txn, DB_SESSIONS, hashes[i], CRYPTO_HASH_BYTES,
                             &tokend__v1__store__session__descriptor, alloc, SESSION_SECRETS,
                             (void **)&out[i]);
        if (r != STORE_OK && r != STORE_NOTFOUND) {
            rc = r;
            break;
        }
    }
    txn_abort(s, txn);
    return rc;
}

int store_sessions_bulk(store *s, size_t n, const uint8_t (*hashes)[CRYPTO_HASH_BYTES],
                        const uint8_t (*store_hashes)[CRYPTO_HASH_BYTES], store_session *const *ss)
{
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        ss[i]->store_token_hash.data = (uint8_t *)store_hashes[i];
        ss[i]->store_token_hash.len = CRYPTO_HASH_BYTES;
        rc = put_session(s, txn, hashes[i], ss[i]);
        if (rc == STORE_OK)
            rc = put_raw(s, txn, DB_STORE_TOKENS, store_hashes[i], CRYPTO_HASH_BYTES, hashes[i],
                         CRYPTO_HASH_BYTES, MDB_NOOVERWRITE);
    }
    return txn_end(txn, rc);
}

int store_store_token_get(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session **out)
{
    MDB_txn *txn;
    MDB_val k = {CRYPTO_HASH_BYTES, (void *)hash}, v;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = map_rc(mdb_get(txn, s->db[DB_STORE_TOKENS], &k, &v));
    if (rc == STORE_OK && v.mv_size != CRYPTO_HASH_BYTES)
        rc = STORE_ERR;
    if (rc == STORE_OK)
        rc = get_msg(s, txn, DB_SESSIONS, v.mv_data, CRYPTO_HASH_BYTES,
                     &tokend__v1__store__session__descriptor, (void **)out);
    txn_abort(s, txn);
    return rc;
}

int store_admin_token_create(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session *ss,
                             const store_audit *audit)
{
    MDB_txn *txn;
    uint8_t akey[8];
    MDB_val k = {app_key(akey, ss->app_id), akey}, v;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = map_rc(mdb_get(txn, s->db[DB_APPS], &k, &v));
    ss->admin = 1;
    if (rc == STORE_OK)
        rc = put_session(s, txn, hash, ss);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

typedef struct {
    store_admin_token_fn fn;
    void *arg;
} admin_walk;

static int visit_admin(store *s, MDB_txn *txn, const uint8_t *key, size_t len,
                       const store_session *ss, void *arg)
{
    admin_walk *w = arg;
    if (ss)
        w->fn(key + OWNER_KEY_HASH, ss, w->arg);
    return 0;
}

int store_admin_tokens_list(store *s, uint64_t app_id, store_admin_token_fn fn, void *arg)
{
    MDB_txn *txn;
    admin_walk w = {fn, arg};
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = scan_sessions(s, txn, DB_ADMIN_TOKENS, app_id, visit_admin, &w);
    txn_abort(s, txn);
    return rc;
}

/* --- purge -------------------------------------------------------------------------- */

/* An expired session ends as a logout does: through its user's index, so a
 * device left with no live session loses its push token. */
static int purge_one(store *s, MDB_txn *txn, const uint8_t hash[CRYPTO_HASH_BYTES])
{
    store_session *ss = NULL;
    int rc = get_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES,
                     &tokend__v1__store__session__descriptor, (void **)&ss);
    if (rc != STORE_OK)
        return rc;
    if (ss->admin) {
        rc = revoke_txn(s, txn, hash);
    } else {
        revoke_filter f = {NULL, NULL, 0, hash};
        rc = revoke_user_txn(s, txn, ss->user_id, &f);
        /* The index entry was gone: the session record must go anyway. */
        if (rc == STORE_OK && !f.revoked)
            rc = revoke_txn(s, txn, hash);
    }
    protobuf_c_message_free_unpacked(&ss->base, NULL);
    return rc;
}

int store_purge_expired(store *s, int64_t now_ms, size_t max, size_t *purged)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t hash[CRYPTO_HASH_BYTES], ekey[EXPIRY_KEY_LEN];
    int rc = txn_begin(s, 0, &txn), r;
    *purged = 0;
    if (rc != STORE_OK)
        return rc;
    if ((rc = map_rc(mdb_cursor_open(txn, s->db[DB_EXPIRY], &cur))) != STORE_OK)
        return txn_end(txn, rc);
    while (*purged < max && (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == MDB_SUCCESS &&
           k.mv_size == EXPIRY_KEY_LEN && (int64_t)get_u64(k.mv_data) < now_ms) {
        memcpy(ekey, k.mv_data, EXPIRY_KEY_LEN);
        memcpy(hash, ekey + EXPIRY_KEY_HASH, CRYPTO_HASH_BYTES);
        rc = purge_one(s, txn, hash);
        /* An index entry without its session: drop it, as every write goes,
         * through del_raw (in cluster mode it is recorded for the others). */
        if (rc == STORE_NOTFOUND)
            rc = del_raw(s, txn, DB_EXPIRY, ekey, EXPIRY_KEY_LEN);
        if (rc != STORE_OK)
            break;
        (*purged)++;
    }
    mdb_cursor_close(cur);
    /* A token-hash key no session uses any more leaves the ring. */
    if (rc == STORE_OK)
        rc = keys_retire(s, txn);
    return txn_end(txn, rc);
}
