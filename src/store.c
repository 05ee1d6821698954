/* store.c - the LMDB environment, its named databases and key layouts.
 *
 * Databases (keys are big-endian so scans are ordered):
 *   meta           "key" | "next_app" | "next_user" | "default_app" -> value
 *   apps           app_id(8)                        -> App
 *   users          user_id(8)                       -> User
 *   logins         app_id(8) kind(1) text           -> user_id(8)   unique index
 *   sessions       token hash(32)                   -> Session
 *   user_sessions  user_id(8) token hash(32)        -> ""           for logout-all
 *   store_tokens   store token hash(32)             -> token hash(32)
 *   devices        app_id(8) device_guid            -> Device
 *   user_devices   user_id(8) app_id(8) device_guid -> ""
 *   push_tokens    push token hash(32)              -> app_id(8) device_guid
 *   expiry         expire_ms(8) token hash(32)      -> ""           for the purge
 *   app_users      app_id(8) user_id(8)             -> ""           for listing
 *   admin_tokens   app_id(8) token hash(32)         -> ""           for listing
 *   groups         app_id(8) group_id(8)            -> admin user_id(8)
 *   audit          sequence(8)                      -> AuditEntry
 *
 * The environment is opened with MDB_NOTLS so read transactions are not
 * tied to threads (event loops and workers share one handle). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <lmdb.h>
#include <pthread.h>
#include "store.h"

enum { DB_META, DB_APPS, DB_USERS, DB_LOGINS, DB_SESSIONS, DB_USER_SESSIONS, DB_STORE_TOKENS,
       DB_DEVICES, DB_USER_DEVICES, DB_PUSH_TOKENS, DB_EXPIRY, DB_APP_USERS, DB_ADMIN_TOKENS,
       DB_GROUPS, DB_AUDIT, DB_COUNT };
static const char *const db_names[DB_COUNT] = {
    "meta", "apps", "users", "logins", "sessions", "user_sessions", "store_tokens",
    "devices", "user_devices", "push_tokens", "expiry", "app_users", "admin_tokens",
    "groups", "audit"};

struct store {
    MDB_env *env;
    /* Every transaction holds this shared; growing the map takes it
     * exclusively, since LMDB resizes only with no transaction active in
     * the process. Uncontended, a read lock costs a few nanoseconds. */
    pthread_rwlock_t resize;
    size_t mapsize;
    MDB_dbi db[DB_COUNT];
    uint8_t token_key[CRYPTO_KEY_BYTES];
};

#define KEY_MAX 511

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static int map_rc(int rc)
{
    switch (rc) {
    case MDB_SUCCESS: return STORE_OK;
    case MDB_NOTFOUND: return STORE_NOTFOUND;
    case MDB_KEYEXIST: return STORE_EXISTS;
    case MDB_MAP_FULL: case ENOSPC: return STORE_FULL;
    default:
        fprintf(stderr, "tokend: store: %s\n", mdb_strerror(rc));
        return STORE_ERR;
    }
}

const char *store_strerror(int code)
{
    switch (code) {
    case STORE_OK: return "ok";
    case STORE_NOTFOUND: return "not found";
    case STORE_EXISTS: return "already exists";
    case STORE_FULL: return "the data store is full";
    default: return "the data store failed";
    }
}

/* Sets the map size (0: adopt what another process set) with no
 * transaction of this process active. */
static int resize(store *s, size_t size)
{
    MDB_envinfo info;
    pthread_rwlock_wrlock(&s->resize);
    int rc = mdb_env_set_mapsize(s->env, size);
    if (rc == 0 && mdb_env_info(s->env, &info) == 0)
        s->mapsize = info.me_mapsize;
    pthread_rwlock_unlock(&s->resize);
    return rc;
}

/* Doubles the map before a write when it is 3/4 used, so writes find room
 * instead of failing with MDB_MAP_FULL. */
static void grow_if_needed(store *s)
{
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_info(s->env, &info) != 0 || mdb_env_stat(s->env, &st) != 0)
        return;
    size_t used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
    if (used > info.me_mapsize / 4 * 3 && resize(s, info.me_mapsize * 2) == 0)
        fprintf(stderr, "tokend: store: map grown to %zu MiB\n", s->mapsize >> 20);
}

/* Begins a transaction, following a map another process has grown. */
static int txn_begin(store *s, unsigned flags, MDB_txn **txn)
{
    if (!(flags & MDB_RDONLY))
        grow_if_needed(s);
    pthread_rwlock_rdlock(&s->resize);
    int rc = mdb_txn_begin(s->env, NULL, flags, txn);
    if (rc == MDB_MAP_RESIZED) {
        pthread_rwlock_unlock(&s->resize);
        resize(s, 0);
        pthread_rwlock_rdlock(&s->resize);
        rc = mdb_txn_begin(s->env, NULL, flags, txn);
    }
    if (rc != MDB_SUCCESS)
        pthread_rwlock_unlock(&s->resize);
    return map_rc(rc);
}

static void txn_abort(store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->resize);
}

static int txn_end_s(store *s, MDB_txn *txn, int rc)
{
    if (rc != STORE_OK) {
        txn_abort(s, txn);
        return rc;
    }
    rc = map_rc(mdb_txn_commit(txn));
    pthread_rwlock_unlock(&s->resize);
    return rc;
}
#define txn_end(txn, rc) txn_end_s(s, (txn), (rc))

static int get_msg_with(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                        const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *alloc,
                        void **out)
{
    MDB_val key = {klen, (void *)k}, val;
    int rc = mdb_get(txn, s->db[db], &key, &val);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    *out = protobuf_c_message_unpack(desc, alloc, val.mv_size, val.mv_data);
    if (!*out) {
        fprintf(stderr, "tokend: store: undecodable record in %s\n", db_names[db]);
        return STORE_ERR;
    }
    return STORE_OK;
}

static int get_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                   const ProtobufCMessageDescriptor *desc, void **out)
{
    return get_msg_with(s, txn, db, k, klen, desc, NULL, out);
}

/* Packs the record straight into the page LMDB reserves for it. */
static int put_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                   const ProtobufCMessage *msg, unsigned flags)
{
    MDB_val key = {klen, (void *)k}, val = {protobuf_c_message_get_packed_size(msg), NULL};
    int rc = mdb_put(txn, s->db[db], &key, &val, flags | MDB_RESERVE);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    protobuf_c_message_pack(msg, val.mv_data);
    return STORE_OK;
}

static int put_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen, const void *v,
                   size_t vlen, unsigned flags)
{
    MDB_val key = {klen, (void *)k}, val = {vlen, (void *)v};
    return map_rc(mdb_put(txn, s->db[db], &key, &val, flags));
}

static int del_raw(store *s, MDB_txn *txn, int db, const void *k, size_t klen)
{
    MDB_val key = {klen, (void *)k};
    int rc = map_rc(mdb_del(txn, s->db[db], &key, NULL));
    return rc == STORE_NOTFOUND ? STORE_OK : rc;
}

static int get_u64_value(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                         uint64_t *v)
{
    MDB_val key = {klen, (void *)k}, val;
    int rc = mdb_get(txn, s->db[db], &key, &val);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    if (val.mv_size != 8)
        return STORE_ERR;
    *v = get_u64(val.mv_data);
    return STORE_OK;
}

/* Hands out the next id of a counter in meta; ids start at `first`. */
static int next_id(store *s, MDB_txn *txn, const char *name, uint64_t first, uint64_t *id)
{
    uint8_t buf[8];
    int rc = get_u64_value(s, txn, DB_META, name, strlen(name), id);
    if (rc == STORE_NOTFOUND)
        *id = first, rc = STORE_OK;
    if (rc != STORE_OK)
        return rc;
    put_u64(buf, *id + 1);
    return put_raw(s, txn, DB_META, name, strlen(name), buf, 8, 0);
}

/* Appends `audit` (may be NULL) in the change's own transaction, so an
 * admin action and its record land together or not at all. */
static int with_audit(store *s, MDB_txn *txn, int rc, const store_audit *audit)
{
    uint64_t seq;
    uint8_t key[8];
    if (rc != STORE_OK || !audit)
        return rc;
    rc = next_id(s, txn, "next_audit", 1, &seq);
    put_u64(key, seq);
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_AUDIT, key, 8, &audit->base, MDB_NOOVERWRITE);
    return rc;
}

static int open_key(store *s, MDB_txn *txn)
{
    MDB_val key = {3, "key"}, val;
    int rc = mdb_get(txn, s->db[DB_META], &key, &val);
    if (rc == MDB_SUCCESS && val.mv_size == CRYPTO_KEY_BYTES) {
        memcpy(s->token_key, val.mv_data, CRYPTO_KEY_BYTES);
        return STORE_OK;
    }
    if (rc != MDB_NOTFOUND)
        return map_rc(rc == MDB_SUCCESS ? MDB_CORRUPTED : rc);
    crypto_random(s->token_key, CRYPTO_KEY_BYTES);
    return put_raw(s, txn, DB_META, "key", 3, s->token_key, CRYPTO_KEY_BYTES, 0);
}

int store_open(store **out, const char *dir, size_t mapsize, char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    MDB_envinfo info;
    MDB_txn *txn = NULL;
    int rc, dead = 0;

    if (!s || !dir) {
        snprintf(err, errlen, "out of memory");
        free(s);
        return STORE_ERR;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    if ((rc = mdb_env_create(&s->env)) != 0 ||
        (rc = mdb_env_set_maxdbs(s->env, DB_COUNT)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, 1024)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, mapsize ? mapsize : STORE_MAPSIZE_DEFAULT)) != 0 ||
        (rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600)) != 0) {
        snprintf(err, errlen, "cannot open data directory %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    /* A reader slot left by a killed process would pin old pages forever. */
    mdb_reader_check(s->env, &dead);
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) {
        snprintf(err, errlen, "cannot write to data directory %s: %s", dir, mdb_strerror(rc));
        goto fail;
    }
    for (int i = 0; i < DB_COUNT; i++) {
        if ((rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->db[i])) != 0) {
            snprintf(err, errlen, "cannot open database %s: %s", db_names[i], mdb_strerror(rc));
            goto fail;
        }
    }
    if (open_key(s, txn) != STORE_OK || (rc = mdb_txn_commit(txn)) != 0) {
        txn = NULL;
        snprintf(err, errlen, "cannot initialise data directory %s", dir);
        goto fail;
    }
    /* Writer-preferring: a resize must not starve behind a stream of reads. */
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->resize, &attr);
    pthread_rwlockattr_destroy(&attr);
    mdb_env_info(s->env, &info);
    s->mapsize = info.me_mapsize;
    *out = s;
    return STORE_OK;
fail:
    if (txn)
        mdb_txn_abort(txn);
    if (s->env)
        mdb_env_close(s->env);
    free(s);
    return STORE_ERR;
}

void store_close(store *s)
{
    if (!s)
        return;
    mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->resize);
    free(s);
}

const uint8_t *store_token_key(const store *s)
{
    return s->token_key;
}

int store_app_create(store *s, store_app *app)
{
    MDB_txn *txn;
    uint8_t key[8];
    uint64_t dflt;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = next_id(s, txn, "next_app", 1000, &app->app_id);
    if (rc == STORE_OK) {
        put_u64(key, app->app_id);
        rc = put_msg(s, txn, DB_APPS, key, 8, &app->base, MDB_NOOVERWRITE);
    }
    /* The first app of a data directory serves requests that name none. */
    if (rc == STORE_OK &&
        get_u64_value(s, txn, DB_META, "default_app", 11, &dflt) == STORE_NOTFOUND)
        rc = put_raw(s, txn, DB_META, "default_app", 11, key, 8, 0);
    return txn_end(txn, rc);
}

/* One record by its 8-byte id, in a read transaction of its own. */
static int get_by_id(store *s, int db, uint64_t id, const ProtobufCMessageDescriptor *desc,
                     void **out)
{
    MDB_txn *txn;
    uint8_t key[8];
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(key, id);
    rc = get_msg(s, txn, db, key, 8, desc, out);
    txn_abort(s, txn);
    return rc;
}

/* A user record and its key, inside the caller's transaction. */
static int get_user_txn(store *s, MDB_txn *txn, uint64_t user_id, uint8_t uid[8], store_user **u)
{
    put_u64(uid, user_id);
    return get_msg(s, txn, DB_USERS, uid, 8, &tokend__v1__store__user__descriptor, (void **)u);
}

int store_app_get(store *s, uint64_t app_id, store_app **out)
{
    return get_by_id(s, DB_APPS, app_id, &tokend__v1__store__app__descriptor, (void **)out);
}

int store_default_app(store *s, uint64_t *app_id)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_u64_value(s, txn, DB_META, "default_app", 11, app_id);
    txn_abort(s, txn);
    return rc;
}

static size_t login_key(uint8_t *key, uint64_t app_id, login_kind kind, const char *text)
{
    size_t n = strlen(text);
    if (n > KEY_MAX - 9)
        n = KEY_MAX - 9;
    put_u64(key, app_id);
    key[8] = (uint8_t)kind;
    memcpy(key + 9, text, n);
    return 9 + n;
}

static int index_login(store *s, MDB_txn *txn, uint64_t app_id, login_kind kind,
                       const char *text, const uint8_t uid[8])
{
    uint8_t key[KEY_MAX];
    if (!text || !*text)
        return STORE_OK;
    return put_raw(s, txn, DB_LOGINS, key, login_key(key, app_id, kind, text), uid, 8,
                   MDB_NOOVERWRITE);
}

int store_user_create(store *s, store_user *user, const char **conflict, const store_audit *audit)
{
    MDB_txn *txn;
    uint8_t uid[8], akey[8];
    MDB_val k = {8, akey}, v;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(akey, user->app_id);
    rc = mdb_get(txn, s->db[DB_APPS], &k, &v) == MDB_SUCCESS ? STORE_OK : STORE_NOTFOUND;
    if (rc == STORE_OK)
        rc = next_id(s, txn, "next_user", 10000, &user->user_id);
    put_u64(uid, user->user_id);
    if (rc == STORE_OK && (rc = index_login(s, txn, user->app_id, LOGIN_NAME, user->name, uid)) ==
                              STORE_EXISTS)
        *conflict = "name";
    if (rc == STORE_OK && (rc = index_login(s, txn, user->app_id, LOGIN_PHONE, user->phone,
                                            uid)) == STORE_EXISTS)
        *conflict = "phone";
    if (rc == STORE_OK && (rc = index_login(s, txn, user->app_id, LOGIN_EMAIL, user->email,
                                            uid)) == STORE_EXISTS)
        *conflict = "email";
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_USERS, uid, 8, &user->base, MDB_NOOVERWRITE);
    if (rc == STORE_OK) {
        uint8_t au[16];
        memcpy(au, akey, 8);
        memcpy(au + 8, uid, 8);
        rc = put_raw(s, txn, DB_APP_USERS, au, 16, "", 0, 0);
    }
    /* The record names the user made here: its id exists only now. */
    if (rc == STORE_OK && audit) {
        store_audit named = *audit;
        char detail[32];
        snprintf(detail, sizeof detail, "user_id=%llu", (unsigned long long)user->user_id);
        named.detail = detail;
        rc = with_audit(s, txn, rc, &named);
    }
    return txn_end(txn, rc);
}

int store_user_get(store *s, uint64_t user_id, store_user **out)
{
    return get_by_id(s, DB_USERS, user_id, &tokend__v1__store__user__descriptor, (void **)out);
}

int store_user_lookup(store *s, uint64_t app_id, login_kind kind, const char *text,
                      uint64_t *user_id)
{
    MDB_txn *txn;
    uint8_t key[KEY_MAX];
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_u64_value(s, txn, DB_LOGINS, key, login_key(key, app_id, kind, text), user_id);
    txn_abort(s, txn);
    return rc;
}

int store_user_rehash(store *s, uint64_t user_id, const char *old_hash, const char *new_hash)
{
    MDB_txn *txn;
    store_user *u = NULL;
    uint8_t key[8];
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_user_txn(s, txn, user_id, key, &u);
    /* A password changed meanwhile wins over the upgrade of the old one. */
    if (rc == STORE_OK && strcmp(u->password_hash, old_hash) == 0) {
        char *keep = u->password_hash;
        u->password_hash = (char *)new_hash;
        rc = put_msg(s, txn, DB_USERS, key, 8, &u->base, 0);
        u->password_hash = keep;
    }
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return txn_end(txn, rc);
}

static size_t device_key(uint8_t *key, uint64_t app_id, const char *guid)
{
    size_t n = strlen(guid);
    if (n > STORE_GUID_MAX)
        n = STORE_GUID_MAX;
    put_u64(key, app_id);
    memcpy(key + 8, guid, n);
    return 8 + n;
}

/* One more than the highest serial number among the user's devices. */
static int free_device_sn(store *s, MDB_txn *txn, uint64_t user_id, uint32_t *sn)
{
    MDB_cursor *cur;
    uint8_t prefix[8];
    uint32_t max = 0;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->db[DB_USER_DEVICES], &cur);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    put_u64(prefix, user_id);
    k.mv_size = 8, k.mv_data = prefix;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == MDB_SUCCESS && k.mv_size >= 16 && memcmp(k.mv_data, prefix, 8) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        store_device *d = NULL;
        if (get_msg(s, txn, DB_DEVICES, (uint8_t *)k.mv_data + 8, k.mv_size - 8,
                    &tokend__v1__store__device__descriptor, (void **)&d) == STORE_OK) {
            if (d->user_id == user_id && d->device_sn > max)
                max = d->device_sn;
            protobuf_c_message_free_unpacked(&d->base, NULL);
        }
    }
    mdb_cursor_close(cur);
    *sn = max + 1;
    return rc == MDB_NOTFOUND || rc == MDB_SUCCESS ? STORE_OK : map_rc(rc);
}

/* Binds the device to the login's user with a new push token; the old push
 * token of the device (whoever owned it) stops resolving at once. */
static int move_device(store *s, MDB_txn *txn, store_login *login)
{
    store_session *ss = login->session;
    uint8_t dkey[8 + STORE_GUID_MAX], udkey[16 + STORE_GUID_MAX];
    size_t dlen = device_key(dkey, ss->app_id, ss->device_guid);
    store_device *old = NULL, dev = TOKEND__V1__STORE__DEVICE__INIT;
    int rc = get_msg(s, txn, DB_DEVICES, dkey, dlen, &tokend__v1__store__device__descriptor,
                     (void **)&old);
    if (rc == STORE_NOTFOUND)
        rc = STORE_OK;
    if (rc != STORE_OK)
        return rc;
    if (old) {
        if (old->push_token_hash.len)  /* a kicked device has none */
            rc = del_raw(s, txn, DB_PUSH_TOKENS, old->push_token_hash.data,
                         old->push_token_hash.len);
        if (rc == STORE_OK && old->user_id != ss->user_id) {
            put_u64(udkey, old->user_id);
            memcpy(udkey + 8, dkey, dlen);
            rc = del_raw(s, txn, DB_USER_DEVICES, udkey, 8 + dlen);
        } else if (rc == STORE_OK) {
            dev.device_sn = old->device_sn;
        }
    }
    if (rc == STORE_OK && dev.device_sn == 0)
        rc = free_device_sn(s, txn, ss->user_id, &dev.device_sn);
    dev.user_id = ss->user_id;
    dev.device_guid = ss->device_guid;
    dev.push_token_hash.data = login->push_token_hash;
    dev.push_token_hash.len = CRYPTO_HASH_BYTES;
    dev.push_token_sealed.data = login->push_token_sealed;
    dev.push_token_sealed.len = login->push_token_sealed_len;
    /* A device token bound by the same user stays; another user's goes. */
    if (old && old->user_id == ss->user_id) {
        dev.device_token = old->device_token;
        dev.notifier_name = old->notifier_name;
    }
    dev.platform = login->platform ? login->platform : old ? old->platform : 0;
    dev.user_agent = (char *)(login->user_agent && *login->user_agent
                                  ? login->user_agent
                                  : old ? old->user_agent : "");
    dev.updated_ms = ss->created_ms;
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_DEVICES, dkey, dlen, &dev.base, 0);
    if (old)
        protobuf_c_message_free_unpacked(&old->base, NULL);
    if (rc == STORE_OK)
        rc = put_raw(s, txn, DB_PUSH_TOKENS, login->push_token_hash, CRYPTO_HASH_BYTES, dkey,
                     dlen, MDB_NOOVERWRITE);
    if (rc == STORE_OK) {
        put_u64(udkey, ss->user_id);
        memcpy(udkey + 8, dkey, dlen);
        rc = put_raw(s, txn, DB_USER_DEVICES, udkey, 8 + dlen, "", 0, 0);
    }
    login->device_sn = dev.device_sn;
    return rc;
}

/* A session and the indexes that find it by user and by expiry. */
static int put_session(store *s, MDB_txn *txn, const uint8_t hash[CRYPTO_HASH_BYTES],
                       const store_session *ss)
{
    uint8_t ikey[8 + CRYPTO_HASH_BYTES];
    int rc = put_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES, &ss->base, MDB_NOOVERWRITE);
    memcpy(ikey + 8, hash, CRYPTO_HASH_BYTES);
    put_u64(ikey, ss->admin ? ss->app_id : ss->user_id);
    if (rc == STORE_OK)
        rc = put_raw(s, txn, ss->admin ? DB_ADMIN_TOKENS : DB_USER_SESSIONS, ikey, sizeof ikey,
                     "", 0, 0);
    put_u64(ikey, (uint64_t)ss->expire_ms);
    if (rc == STORE_OK && ss->expire_ms > 0)
        rc = put_raw(s, txn, DB_EXPIRY, ikey, sizeof ikey, "", 0, 0);
    return rc;
}

int store_login_commit(store *s, store_login *login)
{
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    login->session->store_token_hash.data = login->store_token_hash;
    login->session->store_token_hash.len = CRYPTO_HASH_BYTES;
    if (login->with_device)
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

int store_device_get(store *s, uint64_t app_id, const char *guid, store_device **out)
{
    MDB_txn *txn;
    uint8_t key[8 + STORE_GUID_MAX];
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_msg(s, txn, DB_DEVICES, key, device_key(key, app_id, guid),
                 &tokend__v1__store__device__descriptor, (void **)out);
    txn_abort(s, txn);
    return rc;
}

int store_push_lookup(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], uint64_t *app_id,
                      char *guid, size_t guid_len)
{
    MDB_txn *txn;
    MDB_val k = {CRYPTO_HASH_BYTES, (void *)hash}, v;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = map_rc(mdb_get(txn, s->db[DB_PUSH_TOKENS], &k, &v));
    if (rc == STORE_OK && (v.mv_size < 8 || v.mv_size - 8 >= guid_len))
        rc = STORE_ERR;
    if (rc == STORE_OK) {
        *app_id = get_u64(v.mv_data);
        memcpy(guid, (uint8_t *)v.mv_data + 8, v.mv_size - 8);
        guid[v.mv_size - 8] = '\0';
    }
    txn_abort(s, txn);
    return rc;
}

/* --- revocation -------------------------------------------------------------- */

/* Calls fn for each key of `db` that starts with the 8-byte `prefix`;
 * fn returns non-zero to stop. Keys are copied first, so fn may delete. */
typedef int (*scan_fn)(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg);

static int scan_prefix(store *s, MDB_txn *txn, int db, uint64_t id, scan_fn fn, void *arg)
{
    MDB_cursor *cur;
    uint8_t prefix[8], key[KEY_MAX];
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->db[db], &cur);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    put_u64(prefix, id);
    k.mv_size = 8, k.mv_data = prefix;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && k.mv_size >= 8 && memcmp(k.mv_data, prefix, 8) == 0) {
        size_t len = k.mv_size;
        memcpy(key, k.mv_data, len);
        int r = fn(s, txn, key, len, arg);
        if (r != 0) {
            mdb_cursor_close(cur);
            return r > 0 ? STORE_OK : r;  /* > 0: fn is done */
        }
        /* fn may have deleted: find the key after this one afresh. */
        k.mv_size = len, k.mv_data = key;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_SUCCESS && k.mv_size == len && memcmp(k.mv_data, key, len) == 0)
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND || rc == MDB_SUCCESS ? STORE_OK : map_rc(rc);
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
    if (len != 8 + CRYPTO_HASH_BYTES)
        return 0;
    int rc = get_msg(s, txn, DB_SESSIONS, key + 8, CRYPTO_HASH_BYTES,
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
    uint8_t ikey[8 + CRYPTO_HASH_BYTES];
    int rc = get_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES,
                     &tokend__v1__store__session__descriptor, (void **)&ss);
    if (rc != STORE_OK)
        return rc;
    rc = del_raw(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES);
    memcpy(ikey + 8, hash, CRYPTO_HASH_BYTES);
    put_u64(ikey, ss->admin ? ss->app_id : ss->user_id);
    if (rc == STORE_OK)
        rc = del_raw(s, txn, ss->admin ? DB_ADMIN_TOKENS : DB_USER_SESSIONS, ikey, sizeof ikey);
    put_u64(ikey, (uint64_t)ss->expire_ms);
    if (rc == STORE_OK && ss->expire_ms > 0)
        rc = del_raw(s, txn, DB_EXPIRY, ikey, sizeof ikey);
    if (rc == STORE_OK && ss->store_token_hash.len == CRYPTO_HASH_BYTES)
        rc = del_raw(s, txn, DB_STORE_TOKENS, ss->store_token_hash.data, CRYPTO_HASH_BYTES);
    protobuf_c_message_free_unpacked(&ss->base, NULL);
    return rc;
}

typedef struct {
    const uint8_t *keep;       /* a session to spare, or NULL */
    const char *device_guid;   /* only this device's sessions, or NULL */
    size_t revoked;
    const uint8_t *only;       /* only this session, or NULL */
} revoke_filter;

static int revoke_matching(store *s, MDB_txn *txn, const uint8_t *key, size_t len,
                           const store_session *ss, void *arg)
{
    revoke_filter *f = arg;
    const uint8_t *hash = key + 8;
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
    int rc = get_msg(s, txn, DB_DEVICES, key + 8, len - 8, &tokend__v1__store__device__descriptor,
                     (void **)&d);
    if (rc != STORE_OK)
        return rc == STORE_NOTFOUND ? 0 : rc;
    if (d->push_token_hash.len && d->user_id == get_u64(key) && !has_guid(o->live, d->device_guid)) {
        rc = del_raw(s, txn, DB_PUSH_TOKENS, d->push_token_hash.data, d->push_token_hash.len);
        d->push_token_hash.len = 0;
        d->push_token_sealed.len = 0;
        if (rc == STORE_OK)
            rc = put_msg(s, txn, DB_DEVICES, key + 8, len - 8, &d->base, 0);
    }
    protobuf_c_message_free_unpacked(&d->base, NULL);
    return rc;
}

/* Revokes the user's sessions that pass the filter. A device's push token
 * lives as long as a session on that device: pushes must not reach a
 * device whose user has signed out, been disabled or lost their password. */
static int revoke_user_txn(store *s, MDB_txn *txn, uint64_t user_id, revoke_filter *f)
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

int store_user_revoke(store *s, uint64_t user_id, const uint8_t *keep, size_t *revoked,
                      const store_audit *audit)
{
    MDB_txn *txn;
    revoke_filter f = {keep, NULL, 0};
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = txn_end(txn, with_audit(s, txn, revoke_user_txn(s, txn, user_id, &f), audit));
    if (revoked)
        *revoked = f.revoked;
    return rc;
}

/* --- devices ----------------------------------------------------------------- */

typedef struct {
    uint64_t app_id, user_id;
    uint32_t sn;               /* 0: every device */
    store_device **list;
    size_t n, cap;
    const uint8_t *found_key;  /* for find_device */
    size_t found_len;
    uint8_t key_copy[8 + STORE_GUID_MAX];
} device_scan;

/* Collects the user's devices in this app (user_devices keys are
 * user(8) app(8) guid). */
static int collect_device(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    device_scan *d = arg;
    store_device *dev = NULL;
    if (len < 16 || get_u64(key + 8) != d->app_id)
        return 0;
    int rc = get_msg(s, txn, DB_DEVICES, key + 8, len - 8, &tokend__v1__store__device__descriptor,
                     (void **)&dev);
    if (rc == STORE_NOTFOUND)
        return 0;
    if (rc != STORE_OK)
        return rc;
    if (dev->user_id != d->user_id || (d->sn && dev->device_sn != d->sn)) {
        protobuf_c_message_free_unpacked(&dev->base, NULL);
        return 0;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        store_device **l = realloc(d->list, cap * sizeof *l);
        if (!l) {
            protobuf_c_message_free_unpacked(&dev->base, NULL);
            return STORE_ERR;
        }
        d->list = l, d->cap = cap;
    }
    d->list[d->n++] = dev;
    return 0;
}

void store_devices_free(store_device **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(&list[i]->base, NULL);
    free(list);
}

static int devices_txn(store *s, MDB_txn *txn, device_scan *d)
{
    int rc = scan_prefix(s, txn, DB_USER_DEVICES, d->user_id, collect_device, d);
    if (rc != STORE_OK) {
        store_devices_free(d->list, d->n);
        d->list = NULL, d->n = 0;
    }
    return rc;
}

int store_devices_list(store *s, uint64_t app_id, uint64_t user_id, store_device ***out,
                       size_t *n)
{
    MDB_txn *txn;
    device_scan d = {.app_id = app_id, .user_id = user_id};
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = devices_txn(s, txn, &d);
    txn_abort(s, txn);
    *out = d.list, *n = d.n;
    return rc;
}

/* Drops one device's push token and sessions; with `forget`, the device too. */
static int forget_device_txn(store *s, MDB_txn *txn, uint64_t app_id, store_device *dev,
                             int forget)
{
    uint8_t dkey[8 + STORE_GUID_MAX], udkey[16 + STORE_GUID_MAX];
    size_t dlen = device_key(dkey, app_id, dev->device_guid);
    revoke_filter f = {NULL, dev->device_guid, 0};
    int rc = STORE_OK;
    if (dev->push_token_hash.len)
        rc = del_raw(s, txn, DB_PUSH_TOKENS, dev->push_token_hash.data, dev->push_token_hash.len);
    if (rc == STORE_OK)
        rc = revoke_user_txn(s, txn, dev->user_id, &f);
    if (rc != STORE_OK)
        return rc;
    if (forget) {
        put_u64(udkey, dev->user_id);
        memcpy(udkey + 8, dkey, dlen);
        rc = del_raw(s, txn, DB_DEVICES, dkey, dlen);
        if (rc == STORE_OK)
            rc = del_raw(s, txn, DB_USER_DEVICES, udkey, 8 + dlen);
        return rc;
    }
    dev->push_token_hash.len = 0;
    dev->push_token_sealed.len = 0;
    return put_msg(s, txn, DB_DEVICES, dkey, dlen, &dev->base, 0);
}

int store_device_forget(store *s, uint64_t app_id, uint64_t user_id, uint32_t sn, int forget,
                        const store_audit *audit)
{
    MDB_txn *txn;
    device_scan d = {.app_id = app_id, .user_id = user_id, .sn = sn};
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = devices_txn(s, txn, &d);
    if (rc == STORE_OK && d.n == 0 && sn)
        rc = STORE_NOTFOUND;
    for (size_t i = 0; rc == STORE_OK && i < d.n; i++)
        rc = forget_device_txn(s, txn, app_id, d.list[i], forget);
    /* Kicking every device also ends the sessions that named none. */
    if (rc == STORE_OK && !sn && !forget) {
        revoke_filter f = {NULL, "", 0};
        rc = revoke_user_txn(s, txn, user_id, &f);
    }
    store_devices_free(d.list, d.n);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

int store_device_bind(store *s, uint64_t app_id, uint64_t user_id, uint32_t sn,
                      const char *device_token, const char *notifier_name,
                      const store_audit *audit)
{
    MDB_txn *txn;
    device_scan d = {.app_id = app_id, .user_id = user_id, .sn = sn};
    uint8_t dkey[8 + STORE_GUID_MAX];
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = devices_txn(s, txn, &d);
    if (rc == STORE_OK && d.n == 0)
        rc = STORE_NOTFOUND;
    if (rc == STORE_OK) {
        store_device *dev = d.list[0];
        char *keep_token = dev->device_token, *keep_notifier = dev->notifier_name;
        dev->device_token = (char *)device_token;
        dev->notifier_name = (char *)notifier_name;
        rc = put_msg(s, txn, DB_DEVICES, dkey, device_key(dkey, app_id, dev->device_guid),
                     &dev->base, 0);
        dev->device_token = keep_token, dev->notifier_name = keep_notifier;
    }
    store_devices_free(d.list, d.n);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

/* --- sessions read on the hot path -------------------------------------------- */

int store_sessions_get(store *s, size_t n, const uint8_t *const *hashes,
                       store_session **out, ProtobufCAllocator *alloc)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        if (!hashes[i])
            continue;
        int r = get_msg_with(s, txn, DB_SESSIONS, hashes[i], CRYPTO_HASH_BYTES,
                             &tokend__v1__store__session__descriptor, alloc, (void **)&out[i]);
        if (r != STORE_OK && r != STORE_NOTFOUND) {
            rc = r;
            break;
        }
    }
    txn_abort(s, txn);
    return rc;
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

/* --- users ---------------------------------------------------------------------- */

static int set_login_index(store *s, MDB_txn *txn, uint64_t app_id, login_kind kind,
                           const char *old, const char *new, const uint8_t uid[8])
{
    uint8_t key[KEY_MAX];
    int rc = STORE_OK;
    if (old && new && strcmp(old, new) == 0)
        return STORE_OK;
    if (old && *old)
        rc = del_raw(s, txn, DB_LOGINS, key, login_key(key, app_id, kind, old));
    if (rc == STORE_OK)
        rc = index_login(s, txn, app_id, kind, new, uid);
    return rc;
}

int store_user_update(store *s, uint64_t user_id, const char *name, const char *phone,
                      const char *email, const char **conflict, const store_audit *audit)
{
    MDB_txn *txn;
    store_user *u = NULL;
    uint8_t uid[8];
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_user_txn(s, txn, user_id, uid, &u);
    if (rc == STORE_OK && name &&
        (rc = set_login_index(s, txn, u->app_id, LOGIN_NAME, u->name, name, uid)) == STORE_EXISTS)
        *conflict = "name";
    if (rc == STORE_OK && phone &&
        (rc = set_login_index(s, txn, u->app_id, LOGIN_PHONE, u->phone, phone, uid)) == STORE_EXISTS)
        *conflict = "phone";
    if (rc == STORE_OK && email &&
        (rc = set_login_index(s, txn, u->app_id, LOGIN_EMAIL, u->email, email, uid)) == STORE_EXISTS)
        *conflict = "email";
    if (rc == STORE_OK) {
        char *keep[3] = {u->name, u->phone, u->email};
        if (name) u->name = (char *)name;
        if (phone) u->phone = (char *)phone;
        if (email) u->email = (char *)email;
        rc = put_msg(s, txn, DB_USERS, uid, 8, &u->base, 0);
        u->name = keep[0], u->phone = keep[1], u->email = keep[2];
    }
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

int store_user_set_password(store *s, uint64_t user_id, const char *hash, const uint8_t *keep,
                            const store_audit *audit)
{
    MDB_txn *txn;
    store_user *u = NULL;
    uint8_t uid[8];
    revoke_filter f = {keep, NULL, 0};
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_user_txn(s, txn, user_id, uid, &u);
    if (rc == STORE_OK) {
        char *old = u->password_hash;
        u->password_hash = (char *)hash;
        rc = put_msg(s, txn, DB_USERS, uid, 8, &u->base, 0);
        u->password_hash = old;
        protobuf_c_message_free_unpacked(&u->base, NULL);
    }
    if (rc == STORE_OK)
        rc = revoke_user_txn(s, txn, user_id, &f);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

int store_user_set_disabled(store *s, uint64_t app_id, uint64_t user_id, int disabled,
                            const store_audit *audit)
{
    MDB_txn *txn;
    store_user *u = NULL;
    uint8_t uid[8];
    revoke_filter f = {NULL, NULL, 0};
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_user_txn(s, txn, user_id, uid, &u);
    if (rc == STORE_OK && u->app_id != app_id)
        rc = STORE_NOTFOUND;
    if (rc == STORE_OK) {
        u->disabled = disabled != 0;
        rc = put_msg(s, txn, DB_USERS, uid, 8, &u->base, 0);
    }
    /* A disabled user's sessions stop verifying at once: they are gone. */
    if (rc == STORE_OK && disabled)
        rc = revoke_user_txn(s, txn, user_id, &f);
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

static int drop_group(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    MDB_val k = {len, (void *)key}, v;
    if (mdb_get(txn, s->db[DB_GROUPS], &k, &v) == MDB_SUCCESS && v.mv_size == 8 &&
        get_u64(v.mv_data) == *(uint64_t *)arg)
        return del_raw(s, txn, DB_GROUPS, key, len);
    return 0;
}

int store_user_delete(store *s, uint64_t user_id, const store_audit *audit)
{
    MDB_txn *txn;
    store_user *u = NULL;
    uint8_t uid[8], au[16], key[KEY_MAX];
    revoke_filter f = {NULL, NULL, 0};
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_user_txn(s, txn, user_id, uid, &u);
    if (rc == STORE_OK) {
        device_scan d = {.app_id = u->app_id, .user_id = user_id};
        rc = devices_txn(s, txn, &d);
        for (size_t i = 0; rc == STORE_OK && i < d.n; i++)
            rc = forget_device_txn(s, txn, u->app_id, d.list[i], 1);
        store_devices_free(d.list, d.n);
    }
    if (rc == STORE_OK)
        rc = revoke_user_txn(s, txn, user_id, &f);
    if (rc == STORE_OK && *u->name)
        rc = del_raw(s, txn, DB_LOGINS, key, login_key(key, u->app_id, LOGIN_NAME, u->name));
    if (rc == STORE_OK && *u->phone)
        rc = del_raw(s, txn, DB_LOGINS, key, login_key(key, u->app_id, LOGIN_PHONE, u->phone));
    if (rc == STORE_OK && *u->email)
        rc = del_raw(s, txn, DB_LOGINS, key, login_key(key, u->app_id, LOGIN_EMAIL, u->email));
    if (rc == STORE_OK)
        rc = scan_prefix(s, txn, DB_GROUPS, u->app_id, drop_group, &user_id);
    if (rc == STORE_OK) {
        put_u64(au, u->app_id);
        memcpy(au + 8, uid, 8);
        rc = del_raw(s, txn, DB_APP_USERS, au, 16);
    }
    if (rc == STORE_OK)
        rc = del_raw(s, txn, DB_USERS, uid, 8);
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

typedef struct {
    size_t skip, limit, n;
    store_user **list;
} user_page;

static int collect_user(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    user_page *p = arg;
    if (p->n >= p->limit)
        return 1;
    if (p->skip) {
        p->skip--;
        return 0;
    }
    int rc = get_msg(s, txn, DB_USERS, key + 8, 8, &tokend__v1__store__user__descriptor,
                     (void **)&p->list[p->n]);
    if (rc == STORE_OK)
        p->n++;
    return rc == STORE_NOTFOUND ? 0 : rc;
}

int store_users_list(store *s, uint64_t app_id, size_t offset, size_t limit, store_user ***out,
                     size_t *n)
{
    MDB_txn *txn;
    user_page p = {offset, limit, 0, calloc(limit ? limit : 1, sizeof(store_user *))};
    int rc = p.list ? txn_begin(s, MDB_RDONLY, &txn) : STORE_ERR;
    if (rc != STORE_OK) {
        free(p.list);
        return rc;
    }
    rc = scan_prefix(s, txn, DB_APP_USERS, app_id, collect_user, &p);
    txn_abort(s, txn);
    *out = p.list, *n = p.n;
    return rc;
}

void store_users_free(store_user **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(&list[i]->base, NULL);
    free(list);
}

/* --- admin tokens, groups, audit ------------------------------------------------- */

int store_admin_token_create(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session *ss,
                             const store_audit *audit)
{
    MDB_txn *txn;
    uint8_t akey[8];
    MDB_val k = {8, akey}, v;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(akey, ss->app_id);
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
        w->fn(key + 8, ss, w->arg);
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

int store_group_set(store *s, uint64_t app_id, uint64_t group_id, uint64_t user_id,
                    const store_audit *audit)
{
    MDB_txn *txn;
    uint8_t key[16], val[8];
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(key, app_id);
    put_u64(key + 8, group_id);
    put_u64(val, user_id);
    return txn_end(txn, with_audit(s, txn, put_raw(s, txn, DB_GROUPS, key, 16, val, 8, 0), audit));
}

int store_group_admin(store *s, uint64_t app_id, uint64_t group_id, uint64_t *user_id)
{
    MDB_txn *txn;
    uint8_t key[16];
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(key, app_id);
    put_u64(key + 8, group_id);
    rc = get_u64_value(s, txn, DB_GROUPS, key, 16, user_id);
    txn_abort(s, txn);
    return rc;
}

int store_audit_list(store *s, store_audit_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    if ((rc = map_rc(mdb_cursor_open(txn, s->db[DB_AUDIT], &cur))) == STORE_OK) {
        int r;
        for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == MDB_SUCCESS;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            store_audit *e = tokend__v1__store__audit_entry__unpack(NULL, v.mv_size, v.mv_data);
            if (e) {
                fn(e, arg);
                protobuf_c_message_free_unpacked(&e->base, NULL);
            }
        }
        mdb_cursor_close(cur);
        rc = r == MDB_NOTFOUND ? STORE_OK : map_rc(r);
    }
    txn_abort(s, txn);
    return rc;
}

/* --- purge -------------------------------------------------------------------------- */

int store_purge_expired(store *s, int64_t now_ms, size_t max, size_t *purged)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t hash[CRYPTO_HASH_BYTES];
    int rc = txn_begin(s, 0, &txn), r;
    *purged = 0;
    if (rc != STORE_OK)
        return rc;
    if ((rc = map_rc(mdb_cursor_open(txn, s->db[DB_EXPIRY], &cur))) != STORE_OK)
        return txn_end(txn, rc);
    while (*purged < max && (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == MDB_SUCCESS &&
           k.mv_size == 8 + CRYPTO_HASH_BYTES && (int64_t)get_u64(k.mv_data) < now_ms) {
        memcpy(hash, (uint8_t *)k.mv_data + 8, CRYPTO_HASH_BYTES);
        rc = revoke_txn(s, txn, hash);
        if (rc == STORE_NOTFOUND)  /* index without session: drop the index */
            rc = map_rc(mdb_cursor_del(cur, 0));
        if (rc != STORE_OK)
            break;
        (*purged)++;
    }
    mdb_cursor_close(cur);
    return txn_end(txn, rc);
}
