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
 *
 * The environment is opened with MDB_NOTLS so read transactions are not
 * tied to threads (event loops and workers share one handle). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <lmdb.h>
#include "store.h"

enum { DB_META, DB_APPS, DB_USERS, DB_LOGINS, DB_SESSIONS, DB_USER_SESSIONS, DB_STORE_TOKENS,
       DB_DEVICES, DB_USER_DEVICES, DB_PUSH_TOKENS, DB_COUNT };
static const char *const db_names[DB_COUNT] = {
    "meta", "apps", "users", "logins", "sessions", "user_sessions", "store_tokens",
    "devices", "user_devices", "push_tokens"};

struct store {
    MDB_env *env;
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

/* Begins a transaction, following a map another process has grown. */
static int txn_begin(store *s, unsigned flags, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, flags, txn);
    if (rc == MDB_MAP_RESIZED) {
        mdb_env_set_mapsize(s->env, 0);
        rc = mdb_txn_begin(s->env, NULL, flags, txn);
    }
    return map_rc(rc);
}

static int txn_end(MDB_txn *txn, int rc)
{
    if (rc != STORE_OK) {
        mdb_txn_abort(txn);
        return rc;
    }
    return map_rc(mdb_txn_commit(txn));
}

static int get_msg(store *s, MDB_txn *txn, int db, const void *k, size_t klen,
                   const ProtobufCMessageDescriptor *desc, void **out)
{
    MDB_val key = {klen, (void *)k}, val;
    int rc = mdb_get(txn, s->db[db], &key, &val);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    *out = protobuf_c_message_unpack(desc, NULL, val.mv_size, val.mv_data);
    if (!*out) {
        fprintf(stderr, "tokend: store: undecodable record in %s\n", db_names[db]);
        return STORE_ERR;
    }
    return STORE_OK;
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

int store_app_get(store *s, uint64_t app_id, store_app **out)
{
    MDB_txn *txn;
    uint8_t key[8];
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(key, app_id);
    rc = get_msg(s, txn, DB_APPS, key, 8, &tokend__v1__store__app__descriptor, (void **)out);
    mdb_txn_abort(txn);
    return rc;
}

int store_default_app(store *s, uint64_t *app_id)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_u64_value(s, txn, DB_META, "default_app", 11, app_id);
    mdb_txn_abort(txn);
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

int store_user_create(store *s, store_user *user, const char **conflict)
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
    return txn_end(txn, rc);
}

int store_user_get(store *s, uint64_t user_id, store_user **out)
{
    MDB_txn *txn;
    uint8_t key[8];
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(key, user_id);
    rc = get_msg(s, txn, DB_USERS, key, 8, &tokend__v1__store__user__descriptor, (void **)out);
    mdb_txn_abort(txn);
    return rc;
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
    mdb_txn_abort(txn);
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
    put_u64(key, user_id);
    rc = get_msg(s, txn, DB_USERS, key, 8, &tokend__v1__store__user__descriptor, (void **)&u);
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

/* The smallest serial number not used by another device of the user. */
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
    dev.push_token_hash.data = login->push_token_hash;
    dev.push_token_hash.len = CRYPTO_HASH_BYTES;
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

int store_login_commit(store *s, store_login *login)
{
    MDB_txn *txn;
    uint8_t uskey[8 + CRYPTO_HASH_BYTES];
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    login->session->store_token_hash.data = login->store_token_hash;
    login->session->store_token_hash.len = CRYPTO_HASH_BYTES;
    rc = put_msg(s, txn, DB_SESSIONS, login->session_hash, CRYPTO_HASH_BYTES,
                 &login->session->base, MDB_NOOVERWRITE);
    put_u64(uskey, login->session->user_id);
    memcpy(uskey + 8, login->session_hash, CRYPTO_HASH_BYTES);
    if (rc == STORE_OK)
        rc = put_raw(s, txn, DB_USER_SESSIONS, uskey, sizeof uskey, "", 0, 0);
    if (rc == STORE_OK)
        rc = put_raw(s, txn, DB_STORE_TOKENS, login->store_token_hash, CRYPTO_HASH_BYTES,
                     login->session_hash, CRYPTO_HASH_BYTES, MDB_NOOVERWRITE);
    if (rc == STORE_OK && login->with_device)
        rc = move_device(s, txn, login);
    return txn_end(txn, rc);
}

int store_session_get(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session **out)
{
    MDB_txn *txn;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_msg(s, txn, DB_SESSIONS, hash, CRYPTO_HASH_BYTES,
                 &tokend__v1__store__session__descriptor, (void **)out);
    mdb_txn_abort(txn);
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
    mdb_txn_abort(txn);
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
    mdb_txn_abort(txn);
    return rc;
}
