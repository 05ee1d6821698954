/* store_users.c - apps, users, their login names, and groups.
 *
 * A user is a record plus unique login indexes (name, phone, email within
 * the app) and an app_users entry for paging; these are kept in step in
 * the same transaction as the record, so a name is never taken by a user
 * that does not exist. Changes that end sessions (password, disable,
 * delete) go through the revocation of store_sessions.c, so a device's push
 * token dies with its last session here too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "lookalike.h"
#include "store_internal.h"

int store_app_create(store *s, store_app *app)
{
    MDB_txn *txn;
    uint8_t key[8];
    uint64_t dflt;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = next_id(s, txn, "next_app", 1000, &app->app_id);
    uint32_t kid;
    if (rc == STORE_OK && app->n_keys == 0)
        rc = app_key_add(s, app, &kid, NULL, 0);
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_APPS, key, app_key(key, app->app_id), &app->base, MDB_NOOVERWRITE);
    /* The first app of a data directory serves requests that name none. */
    if (rc == STORE_OK &&
        get_u64_value(s, txn, DB_META, "default_app", 11, &dflt) == STORE_NOTFOUND)
        rc = put_raw(s, txn, DB_META, "default_app", 11, key, 8, 0);
    /* The pair made here was the store's to allocate: the caller's app
     * goes back as it came. */
    for (size_t i = 0; i < app->n_keys; i++)
        protobuf_c_message_free_unpacked(&app->keys[i]->base, NULL);
    free(app->keys);
    app->keys = NULL;
    app->n_keys = 0;
    return txn_end(txn, rc);
}

/* --- the apps' key pairs ------------------------------------------------------------ */

#define APP_KEYS_MAX 4

/* Adds a new X25519 pair to app (in memory, newest last), dropping the
 * oldest beyond APP_KEYS_MAX. The new entry's buffers are malloc'd and
 * owned by the app message from then on. */
int app_key_add(store *s, store_app *app, uint32_t *new_id, const uint8_t *seal_key, uint32_t seal_id)
{
    uint8_t pub[CRYPTO_KX_PUBLIC_BYTES], secret[CRYPTO_KX_SECRET_BYTES];
    Tokend__V1__Store__AppKey *k = calloc(1, sizeof *k);
    uint8_t *pubcopy = malloc(sizeof pub), *sealed = malloc(sizeof secret + CRYPTO_SEAL_OVERHEAD);
    Tokend__V1__Store__AppKey **keys = realloc(app->keys, (app->n_keys + 1) * sizeof *keys);
    if (keys)
        app->keys = keys;
    if (!k || !pubcopy || !sealed || !keys || crypto_kx_keypair(pub, secret) != 0) {
        free(k), free(pubcopy), free(sealed);
        return STORE_ERR;
    }
    tokend__v1__store__app_key__init(k);
    uint32_t id = 0;
    for (size_t i = 0; i < app->n_keys; i++)
        id = app->keys[i]->key_id > id ? app->keys[i]->key_id : id;
    k->key_id = *new_id = id + 1;
    memcpy(pubcopy, pub, sizeof pub);
    k->public_key.data = pubcopy, k->public_key.len = sizeof pub;
    crypto_seal(sealed, secret, sizeof secret, seal_key ? seal_key : store_token_key(s));
    crypto_wipe(secret, sizeof secret);
    k->private_sealed.data = sealed, k->private_sealed.len = sizeof secret + CRYPTO_SEAL_OVERHEAD;
    k->sealed_with = seal_key ? seal_id : store_token_key_id(s);
    k->created_ms = app->created_ms;
    app->keys[app->n_keys++] = k;
    while (app->n_keys > APP_KEYS_MAX) {
        protobuf_c_message_free_unpacked(&app->keys[0]->base, NULL);
        memmove(&app->keys[0], &app->keys[1], (app->n_keys - 1) * sizeof app->keys[0]);
        app->n_keys--;
    }
    return STORE_OK;
}

int apps_ensure_keys(store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t ids[64];
    size_t n = 0;
    int rc = mdb_cursor_open(txn, s->db[DB_APPS], &cur), r = STORE_OK;
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    /* The apps without a pair (from before pairs), a few at a time. */
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && n < 64;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        store_app *app = tokend__v1__store__app__unpack(NULL, v.mv_size, v.mv_data);
        if (app && app->n_keys == 0)
            ids[n++] = app->app_id;
        if (app)
            protobuf_c_message_free_unpacked(&app->base, NULL);
    }
    mdb_cursor_close(cur);
    for (size_t i = 0; i < n && r == STORE_OK; i++) {
        store_app *app = NULL;
        uint8_t key[8];
        uint32_t id;
        r = get_msg(s, txn, DB_APPS, key, app_key(key, ids[i]), &tokend__v1__store__app__descriptor,
                    (void **)&app);
        if (r == STORE_OK)
            r = app_key_add(s, app, &id, NULL, 0);
        if (r == STORE_OK)
            r = put_msg(s, txn, DB_APPS, key, 8, &app->base, 0);
        if (app)
            protobuf_c_message_free_unpacked(&app->base, NULL);
    }
    return r;
}

/* seal_key NULL: the published token key seals the new private half. */
static int app_rotate_txn(store *s, MDB_txn *txn, uint64_t app_id, uint32_t *new_id,
                          const uint8_t *seal_key, uint32_t seal_id)
{
    store_app *app = NULL;
    uint8_t key[8];
    int rc = get_msg(s, txn, DB_APPS, key, app_key(key, app_id), &tokend__v1__store__app__descriptor,
                     (void **)&app);
    if (rc == STORE_OK)
        rc = app_key_add(s, app, new_id, seal_key, seal_id);
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_APPS, key, 8, &app->base, 0);
    if (app)
        protobuf_c_message_free_unpacked(&app->base, NULL);
    return rc;
}

int store_app_rotate_key(store *s, uint64_t app_id, uint32_t *new_id)
{
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    return txn_end(txn, app_rotate_txn(s, txn, app_id, new_id, NULL, 0));
}

int store_rotate_keys(store *s, uint64_t app_id, uint32_t *token_id, uint32_t *pair_id)
{
    MDB_txn *txn;
    store_keyring r;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = token_key_rotate_txn(s, txn, &r, token_id);
    /* sealed with the new key: the old one is being rotated away */
    if (rc == STORE_OK)
        rc = app_rotate_txn(s, txn, app_id, pair_id, r.keys[0].key, r.keys[0].id);
    rc = txn_end(txn, rc);
    crypto_wipe(&r, sizeof r);
    if (rc == STORE_OK)
        store_keys_refresh(s);
    return rc;
}

/* A user record and its key, inside the caller's transaction. */
static int get_user_txn(store *s, MDB_txn *txn, uint64_t user_id, uint8_t uid[8], store_user **u)
{
    return get_msg(s, txn, DB_USERS, uid, user_key(uid, user_id),
                   &tokend__v1__store__user__descriptor, (void **)u);
}

int store_app_get(store *s, uint64_t app_id, store_app **out)
{
    uint8_t key[8];
    return get_one(s, DB_APPS, key, app_key(key, app_id), &tokend__v1__store__app__descriptor,
                   (void **)out);
}

int store_apps_each(store *s, store_app_fn fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    int r, rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    if ((rc = map_rc(mdb_cursor_open(txn, s->db[DB_APPS], &cur))) == STORE_OK) {
        for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == MDB_SUCCESS && rc == STORE_OK;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            store_app *app = tokend__v1__store__app__unpack(NULL, v.mv_size, v.mv_data);
            if (!app) {
                rc = STORE_ERR;
                break;
            }
            fn(app, arg);
            protobuf_c_message_free_unpacked(&app->base, NULL);
        }
        if (rc == STORE_OK && r != MDB_NOTFOUND)
            rc = map_rc(r);
        mdb_cursor_close(cur);
    }
    txn_abort(s, txn);
    return rc;
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

static int index_login(store *s, MDB_txn *txn, uint64_t app_id, login_kind kind,
                       const char *text, const uint8_t uid[8])
{
    uint8_t key[KEY_MAX];
    if (!text || !*text)
        return STORE_OK;
    return put_raw(s, txn, DB_LOGINS, key, login_key(key, app_id, kind, text), uid, 8,
                   MDB_NOOVERWRITE);
}

/* --- names that look alike (lookalike.c) ---------------------------------------- */

/* Every user has entries in logins under the look-alike keys of its name:
 * app(8) kind(1) key NUL user_id(8), no value; kind LOOK_BOTH when its two
 * keys are one (most names), else one entry of LOOK_CASE and one of
 * LOOK_ALIKE. Keys are not unique: accounts made before, and imports that
 * allow it, may share them. The index is each node's own, made from the
 * users it holds (never part of a change or a snapshot: store_look_key):
 * what a node applies of another's change is indexed as it is applied
 * (lookalikes_applying), whatever build made the change. meta's LOOK_MARK
 * (the node's own) says with what the keys were made (lookalike_version)
 * and how many users are indexed; open makes the index again when either
 * is not so (a directory from before, an older build wrote to it, another
 * ICU). */
#define LOOK_CASE STORE_LOOK_CASE
#define LOOK_ALIKE STORE_LOOK_ALIKE
#define LOOK_BOTH STORE_LOOK_BOTH
#define LOOK_KEY_MAX (9 + LOOKALIKE_KEY_MAX + 1 + 8)

typedef struct {
    char c[LOOKALIKE_KEY_MAX], l[LOOKALIKE_KEY_MAX];
    size_t clen, llen;
} look_pair;

/* The entry's key, of user_id; its prefix (all but user_id) is the
 * returned length less 8. */
static size_t look_key(uint8_t key[LOOK_KEY_MAX], uint64_t app_id, char kind, const char *text,
                       size_t len, uint64_t user_id)
{
    put_u64(key, app_id);
    key[8] = (uint8_t)kind;
    memcpy(key + 9, text, len);
    key[9 + len] = 0;
    put_u64(key + 10 + len, user_id);
    return 18 + len;
}

static int look_keys(const char *name, look_pair *p)
{
    return lookalike_keys(name, strlen(name), p->c, &p->clen, p->l, &p->llen) == 0 ? STORE_OK
                                                                                  : STORE_ERR;
}

static int look_one(const look_pair *p)
{
    return p->clen == p->llen && memcmp(p->c, p->l, p->clen) == 0;
}

/* Adds (add) or deletes the entries of user_id's name. */
static int look_index(store *s, MDB_txn *txn, uint64_t app_id, const char *name, uint64_t user_id,
                      int add)
{
    look_pair p;
    uint8_t key[LOOK_KEY_MAX];
    if (!name || !*name)
        return STORE_OK;   /* nothing to look like */
    int rc = look_keys(name, &p), one = look_one(&p);
    for (int i = 0; rc == STORE_OK && i < 2 - one; i++) {
        size_t klen = i ? look_key(key, app_id, LOOK_ALIKE, p.l, p.llen, user_id)
                        : look_key(key, app_id, one ? LOOK_BOTH : LOOK_CASE, p.c, p.clen, user_id);
        rc = add ? put_raw(s, txn, DB_LOGINS, key, klen, "", 0, 0) : del_raw(s, txn, DB_LOGINS, key, klen);
    }
    return rc;
}

/* 1 when a user other than `self` has an entry of kind and text. */
static int look_found(store *s, MDB_txn *txn, uint64_t app_id, char kind, const char *text,
                      size_t len, uint64_t self)
{
    uint8_t key[LOOK_KEY_MAX];
    MDB_cursor *cur;
    MDB_val k = {look_key(key, app_id, kind, text, len, 0), key}, v;
    size_t prefix = k.mv_size - 8;
    int rc = mdb_cursor_open(txn, s->db[DB_LOGINS], &cur), found = 0;
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == MDB_SUCCESS && !found;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != prefix + 8 || memcmp(k.mv_data, key, prefix) != 0)
            break;
        found = get_u64((const uint8_t *)k.mv_data + prefix) != self;
    }
    mdb_cursor_close(cur);
    return rc == MDB_SUCCESS || rc == MDB_NOTFOUND ? found : map_rc(rc);
}

/* 1 when name looks like the name of another user of the app than self,
 * 0 when not, or a store error (< 0). */
static int look_taken(store *s, MDB_txn *txn, uint64_t app_id, const char *name, uint64_t self)
{
    look_pair p;
    if (!name || !*name)
        return 0;
    int rc = look_keys(name, &p);
    if (rc != STORE_OK)
        return rc;
    /* a case key against the others' case keys, a look key against their
     * look keys: each kind of entry that holds one */
    if (!(rc = look_found(s, txn, app_id, LOOK_CASE, p.c, p.clen, self)))
        rc = look_found(s, txn, app_id, LOOK_BOTH, p.c, p.clen, self);
    if (!rc)
        rc = look_found(s, txn, app_id, LOOK_ALIKE, p.l, p.llen, self);
    if (!rc && !look_one(&p))
        rc = look_found(s, txn, app_id, LOOK_BOTH, p.l, p.llen, self);
    return rc;
}

/* The mark: users indexed (8 bytes) and lookalike_version(). */
#define LOOK_MARK STORE_LOOK_MARK

/* Adds delta to the users the mark counts; a node without a mark has its
 * index made at its next open anyway. */
static int look_mark_add(store *s, MDB_txn *txn, int delta)
{
    MDB_val k = {strlen(LOOK_MARK), LOOK_MARK}, v;
    char buf[8 + 128];
    int rc = mdb_get(txn, s->db[DB_META], &k, &v);
    if (rc == MDB_NOTFOUND)
        return STORE_OK;
    if (rc != MDB_SUCCESS || v.mv_size < 8 || v.mv_size > sizeof buf)
        return rc != MDB_SUCCESS ? map_rc(rc) : STORE_OK;
    memcpy(buf, v.mv_data, v.mv_size);
    uint64_t n = get_u64((const uint8_t *)buf);
    put_u64((uint8_t *)buf, delta < 0 && n == 0 ? 0 : n + (uint64_t)(int64_t)delta);
    return put_local(s, txn, LOOK_MARK, buf, v.mv_size);
}

static int look_mark_set(store *s, MDB_txn *txn, uint64_t n)
{
    char buf[8 + 128];
    const char *version = lookalike_version();
    size_t vlen = strlen(version) < 128 ? strlen(version) : 128;
    put_u64((uint8_t *)buf, n);
    memcpy(buf + 8, version, vlen);
    return put_local(s, txn, LOOK_MARK, buf, 8 + vlen);
}

/* Whether the mark says every user is indexed, with these keys. */
static int look_marked(store *s, MDB_txn *txn, int *all)
{
    MDB_stat users;
    MDB_val k = {strlen(LOOK_MARK), LOOK_MARK}, v;
    const char *version = lookalike_version();
    int rc = mdb_get(txn, s->db[DB_META], &k, &v);
    *all = 0;
    if (rc == MDB_NOTFOUND)
        return STORE_OK;
    if (rc != MDB_SUCCESS || (rc = mdb_stat(txn, s->db[DB_USERS], &users)) != MDB_SUCCESS)
        return map_rc(rc);
    *all = v.mv_size == 8 + strlen(version) && memcmp((char *)v.mv_data + 8, version, v.mv_size - 8) == 0 &&
           get_u64(v.mv_data) == users.ms_entries;
    return STORE_OK;
}

/* A new user's name: indexed, and counted. */
static int look_add(store *s, MDB_txn *txn, const store_user *u)
{
    int rc = look_index(s, txn, u->app_id, u->name, u->user_id, 1);
    return rc == STORE_OK ? look_mark_add(s, txn, +1) : rc;
}

int lookalikes_applying(store *s, MDB_txn *txn, const uint8_t *key, size_t klen, const uint8_t *val,
                        size_t vlen, int del)
{
    MDB_val k = {klen, (void *)key}, v;
    store_user *old = NULL, *now = NULL;
    if (klen != 8)
        return STORE_OK;
    int rc = mdb_get(txn, s->db[DB_USERS], &k, &v), there = rc == MDB_SUCCESS;
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return map_rc(rc);
    if (there)
        old = tokend__v1__store__user__unpack(NULL, v.mv_size, v.mv_data);
    if (!del)
        now = tokend__v1__store__user__unpack(NULL, vlen, val);
    uint64_t id = get_u64(key);
    int same = old && now && old->app_id == now->app_id && strcmp(old->name, now->name) == 0;
    rc = STORE_OK;
    if (old && !same)
        rc = look_index(s, txn, old->app_id, old->name, id, 0);
    if (rc == STORE_OK && now && !same)
        rc = look_index(s, txn, now->app_id, now->name, id, 1);
    if (rc == STORE_OK && there == del)   /* a user gone, or a new one */
        rc = look_mark_add(s, txn, del ? -1 : +1);
    if (old)
        protobuf_c_message_free_unpacked(&old->base, NULL);
    if (now)
        protobuf_c_message_free_unpacked(&now->base, NULL);
    return rc;
}

/* fn on each user record that decodes, in user_id order, until it fails;
 * *seen (if given) counts the records walked. STORE_OK or the failure. */
typedef int (*user_fn)(store *s, MDB_txn *txn, uint64_t user_id, const store_user *u, void *arg);

static int users_each(store *s, MDB_txn *txn, user_fn fn, void *arg, uint64_t *seen)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->db[DB_USERS], &cur), r = STORE_OK;
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS && r == STORE_OK;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        store_user *u = tokend__v1__store__user__unpack(NULL, v.mv_size, v.mv_data);
        if (u && k.mv_size == 8)
            r = fn(s, txn, get_u64(k.mv_data), u, arg);
        if (u)
            protobuf_c_message_free_unpacked(&u->base, NULL);
        if (seen && r == STORE_OK)
            (*seen)++;
    }
    mdb_cursor_close(cur);
    return r != STORE_OK ? r : rc == MDB_NOTFOUND ? STORE_OK : map_rc(rc);
}

static int index_one(store *s, MDB_txn *txn, uint64_t user_id, const store_user *u, void *arg)
{
    return look_index(s, txn, u->app_id, u->name, user_id, 1);
}

int lookalikes_index_txn(store *s, MDB_txn *txn)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t n = 0;
    /* every entry goes, those of users deleted since too */
    int rc = mdb_cursor_open(txn, s->db[DB_LOGINS], &cur);
    if (rc != MDB_SUCCESS)
        return map_rc(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        if (store_look_key(DB_LOGINS, k.mv_data, k.mv_size) && (rc = mdb_cursor_del(cur, 0)) != MDB_SUCCESS)
            break;
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        return map_rc(rc);
    /* an undecodable record has no name to index, and counts as indexed */
    return (rc = users_each(s, txn, index_one, NULL, &n)) == STORE_OK ? look_mark_set(s, txn, n) : rc;
}

/* Room made first, for about this much index an account and the pages
 * the drop frees only at the commit. */
#define LOOK_ROOM_PER_USER 256

int lookalikes_index(store *s)
{
    MDB_txn *txn;
    MDB_stat users;
    look_pair probe;
    /* ICU's data loaded now, not at a login; and a store that cannot make
     * keys says so at open, not at its first new user */
    int rc = look_keys("tokend", &probe);
    for (int tries = 0; rc == STORE_OK && tries < 2; tries++) {
        int all = 0;
        /* One transaction: another process opening the directory now (a
         * command beside the server) waits for it, then finds the mark. */
        if ((rc = local_txn_begin(s, 0, &txn)) != STORE_OK)
            return rc;
        if ((rc = look_marked(s, txn, &all)) != STORE_OK || all ||
            (rc = map_rc(mdb_stat(txn, s->db[DB_USERS], &users))) != STORE_OK) {
            txn_abort(s, txn);
            return rc;
        }
        txn_abort(s, txn);
        if (store_make_room(s, users.ms_entries * LOOK_ROOM_PER_USER) != STORE_OK ||
            (rc = local_txn_begin(s, 0, &txn)) != STORE_OK)
            return STORE_FULL;
        if (users.ms_entries > 1000)
            log_event(LOG_INFO, "store", "indexing the look-alike names of %zu accounts",
                      users.ms_entries);
        if ((rc = look_marked(s, txn, &all)) == STORE_OK && !all)
            rc = lookalikes_index_txn(s, txn);
        if (rc != STORE_OK) {
            txn_abort(s, txn);
            if (rc == STORE_FULL && store_grow(s) == STORE_OK)
                continue;
            return rc;
        }
        return local_txn_commit(s, txn);
    }
    return rc;
}

int store_user_create(store *s, store_user *user, const char **conflict, const store_audit *audit)
{
    MDB_txn *txn;
    uint8_t uid[8], akey[8];
    MDB_val k = {app_key(akey, user->app_id), akey}, v;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = mdb_get(txn, s->db[DB_APPS], &k, &v) == MDB_SUCCESS ? STORE_OK : STORE_NOTFOUND;
    if (rc == STORE_OK)
        rc = next_id(s, txn, "next_user", 10000, &user->user_id);
    user_key(uid, user->user_id);
    if (rc == STORE_OK && (rc = index_login(s, txn, user->app_id, LOGIN_NAME, user->name, uid)) ==
                              STORE_EXISTS)
        *conflict = "name";
    if (rc == STORE_OK && (rc = look_taken(s, txn, user->app_id, user->name, user->user_id)) == 1)
        rc = STORE_EXISTS, *conflict = STORE_CONFLICT_LOOKALIKE;
    if (rc == STORE_OK && (rc = index_login(s, txn, user->app_id, LOGIN_PHONE, user->phone,
                                            uid)) == STORE_EXISTS)
        *conflict = "phone";
    if (rc == STORE_OK && (rc = index_login(s, txn, user->app_id, LOGIN_EMAIL, user->email,
                                            uid)) == STORE_EXISTS)
        *conflict = "email";
    if (rc == STORE_OK)
        rc = look_add(s, txn, user);
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_USERS, uid, 8, &user->base, MDB_NOOVERWRITE);
    if (rc == STORE_OK)
        rc = pwcost_count(s, txn, user->app_id, user->password_hash, +1);
    if (rc == STORE_OK) {
        uint8_t au[16];
        rc = put_raw(s, txn, DB_APP_USERS, au, app_user_key(au, user->app_id, user->user_id), "",
                     0, 0);
    }
    if (rc == STORE_OK)
        rc = count_add(s, txn, user->app_id, 'u', +1);
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

static int login_taken(store *s, MDB_txn *txn, uint64_t app_id, login_kind kind, const char *text)
{
    uint8_t key[KEY_MAX];
    MDB_val k, v;
    if (!text || !*text)
        return 0;
    k.mv_size = login_key(key, app_id, kind, text);
    k.mv_data = key;
    return mdb_get(txn, s->db[DB_LOGINS], &k, &v) == MDB_SUCCESS;
}

int store_users_import(store *s, uint64_t app_id, store_user *const *users, size_t n,
                       int all_or_nothing, int lookalikes_ok, int *rcs, const char **conflict)
{
    int conflicts = 0;
    MDB_txn *txn;
    uint8_t akey[8];
    MDB_val k = {app_key(akey, app_id), akey}, v;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = mdb_get(txn, s->db[DB_APPS], &k, &v) == MDB_SUCCESS ? STORE_OK : STORE_NOTFOUND;
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        store_user *u = users[i];
        uint8_t uid[8], au[16];
        u->app_id = app_id;
        conflict[i] = login_taken(s, txn, app_id, LOGIN_NAME, u->name)    ? "name"
                    : login_taken(s, txn, app_id, LOGIN_PHONE, u->phone)  ? "phone"
                    : login_taken(s, txn, app_id, LOGIN_EMAIL, u->email)  ? "email" : NULL;
        if (!conflict[i] && !lookalikes_ok && (rc = look_taken(s, txn, app_id, u->name, 0)) != 0) {
            if (rc < 0)
                break;
            rc = STORE_OK;
            conflict[i] = STORE_CONFLICT_LOOKALIKE;
        }
        if ((rcs[i] = conflict[i] ? STORE_EXISTS : STORE_OK) != STORE_OK) {
            conflicts++;
            continue;   /* checked first: nothing of it is written */
        }
        rc = next_id(s, txn, "next_user", 10000, &u->user_id);
        user_key(uid, u->user_id);
        if (rc == STORE_OK)
            rc = index_login(s, txn, app_id, LOGIN_NAME, u->name, uid);
        if (rc == STORE_OK)
            rc = index_login(s, txn, app_id, LOGIN_PHONE, u->phone, uid);
        if (rc == STORE_OK)
            rc = index_login(s, txn, app_id, LOGIN_EMAIL, u->email, uid);
        if (rc == STORE_OK)
            rc = look_add(s, txn, u);
        if (rc == STORE_OK)
            rc = put_msg(s, txn, DB_USERS, uid, 8, &u->base, MDB_NOOVERWRITE);
        if (rc == STORE_OK)
            rc = pwcost_count(s, txn, app_id, u->password_hash, +1);
        if (rc == STORE_OK)
            rc = put_raw(s, txn, DB_APP_USERS, au, app_user_key(au, app_id, u->user_id), "", 0, 0);
        if (rc == STORE_OK)
            rc = count_add(s, txn, app_id, 'u', +1);
    }
    if (rc == STORE_OK && conflicts && all_or_nothing)
        rc = STORE_EXISTS;
    return txn_end(txn, rc);
}

int store_user_get(store *s, uint64_t user_id, store_user **out)
{
    uint8_t key[8];
    return get_one(s, DB_USERS, key, user_key(key, user_id), &tokend__v1__store__user__descriptor,
                   (void **)out);
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

int set_hash_txn(store *s, MDB_txn *txn, store_user *u, const char *hash)
{
    uint8_t uid[8];
    char *old = u->password_hash;
    int rc = pwcost_count(s, txn, u->app_id, old, -1);
    u->password_hash = (char *)hash;
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_USERS, uid, user_key(uid, u->user_id), &u->base, 0);
    u->password_hash = old;
    return rc == STORE_OK ? pwcost_count(s, txn, u->app_id, hash, +1) : rc;
}

int store_login_find(store *s, uint64_t app_id, login_kind kind, const char *text,
                     uint64_t user_id, const char *device_guid, store_user **user,
                     int *device_known)
{
    MDB_txn *txn;
    uint8_t key[KEY_MAX];
    store_device *dev = NULL;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    *user = NULL;
    *device_known = 0;
    if (rc != STORE_OK)
        return rc;
    if (kind)
        rc = get_u64_value(s, txn, DB_LOGINS, key, login_key(key, app_id, kind, text), &user_id);
    if (rc == STORE_OK)
        rc = get_msg(s, txn, DB_USERS, key, user_key(key, user_id),
                     &tokend__v1__store__user__descriptor, (void **)user);
    if (rc == STORE_OK && (*user)->app_id != app_id) {
        protobuf_c_message_free_unpacked(&(*user)->base, NULL);
        *user = NULL;
        rc = STORE_NOTFOUND;
    }
    if (rc == STORE_OK && device_guid && *device_guid &&
        get_msg(s, txn, DB_DEVICES, key, device_key(key, app_id, device_guid),
                &tokend__v1__store__device__descriptor, (void **)&dev) == STORE_OK) {
        *device_known = dev->user_id == user_id;
        protobuf_c_message_free_unpacked(&dev->base, NULL);
    }
    txn_abort(s, txn);
    return rc;
}

/* --- the mix of hash costs ---------------------------------------------------- */

int pwcost_count(store *s, MDB_txn *txn, uint64_t app_id, const char *hash, int delta)
{
    crypto_pwcost cost;
    uint8_t key[PWCOST_KEY];
    uint64_t n = 0;
    /* A hash this build cannot verify counts at cost 0, which no decoy
     * copies: every account is counted (pwcosts_count_all adds them up). */
    if (crypto_password_cost(hash, &cost) != 0)
        cost = (crypto_pwcost){0, 0};
    size_t klen = pwcost_key(key, app_id, cost);
    int rc = get_u64_value(s, txn, DB_PWCOSTS, key, klen, &n);
    if (rc != STORE_OK && rc != STORE_NOTFOUND)
        return rc;
    n = delta < 0 ? (n ? n - 1 : 0) : n + 1;
    if (!n)
        return del_raw(s, txn, DB_PWCOSTS, key, klen);
    uint8_t v[8];
    put_u64(v, n);
    return put_raw(s, txn, DB_PWCOSTS, key, klen, v, 8, 0);
}

/* The accounts pwcosts counts per app (keys of PWCOST_KEY bytes), or -1;
 * with `drop`, those counts are deleted as they are read. */
static int64_t counted_per_app(store *s, MDB_txn *txn, int drop)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int64_t sum = 0;
    int rc = mdb_cursor_open(txn, s->db[DB_PWCOSTS], &cur);
    if (rc != MDB_SUCCESS)
        return -1;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != PWCOST_KEY || v.mv_size != 8)
            continue;
        sum += (int64_t)get_u64(v.mv_data);
        if (drop && (rc = mdb_cursor_del(cur, 0)) != MDB_SUCCESS)
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? sum : -1;
}

/* Counted again when the counts per app do not add up to the users: a
 * directory from before the count, or before it was per app, or a replica
 * whose snapshot had the counts of only the apps written to since (each
 * node counts the same users the same way). */
static int count_cost(store *s, MDB_txn *txn, uint64_t user_id, const store_user *u, void *arg)
{
    return pwcost_count(s, txn, u->app_id, u->password_hash, +1);
}

int pwcosts_count_all(store *s, MDB_txn *txn)
{
    MDB_stat users;
    int64_t counted = counted_per_app(s, txn, 0);
    int rc;
    if (counted < 0)
        return STORE_ERR;
    if ((rc = mdb_stat(txn, s->db[DB_USERS], &users)) != MDB_SUCCESS)
        return map_rc(rc);
    if ((uint64_t)counted == users.ms_entries)
        return STORE_OK;
    if (counted && counted_per_app(s, txn, 1) < 0)
        return STORE_ERR;
    return users_each(s, txn, count_cost, NULL, NULL);
}

int store_pwcost_mix(store *s, uint64_t app_id, crypto_pwcost *costs, uint64_t *counts, size_t max,
                     size_t *n)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    uint8_t from[8];
    MDB_val k = {8, from}, v;
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    *n = 0;
    if (rc != STORE_OK)
        return rc;
    put_u64(from, app_id);
    if ((rc = mdb_cursor_open(txn, s->db[DB_PWCOSTS], &cur)) == MDB_SUCCESS) {
        for (rc = mdb_cursor_get(cur, &k, &v, app_id ? MDB_SET_RANGE : MDB_FIRST);
             rc == MDB_SUCCESS && *n < max; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            if (k.mv_size != PWCOST_KEY || v.mv_size != 8)
                continue;
            if (app_id && get_u64(k.mv_data) != app_id)
                break;   /* past the app's keys */
            crypto_pwcost c = {get_u64((uint8_t *)k.mv_data + 8),
                               (size_t)get_u64((uint8_t *)k.mv_data + 16)};
            size_t i = 0;
            while (i < *n && (costs[i].ops != c.ops || costs[i].mem != c.mem))
                i++;   /* of every app: one entry per cost */
            if (i == *n) {
                costs[i] = c;
                counts[(*n)++] = 0;
            }
            counts[i] += get_u64(v.mv_data);
        }
        mdb_cursor_close(cur);
    }
    txn_abort(s, txn);
    return rc == MDB_NOTFOUND || rc == MDB_SUCCESS ? STORE_OK : map_rc(rc);
}

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
    if (rc == STORE_OK && name && strcmp(name, u->name) != 0) {
        if ((rc = look_taken(s, txn, u->app_id, name, user_id)) == 1)
            rc = STORE_EXISTS, *conflict = STORE_CONFLICT_LOOKALIKE;
        if (rc == STORE_OK)
            rc = look_index(s, txn, u->app_id, u->name, user_id, 0);
        if (rc == STORE_OK)
            rc = look_index(s, txn, u->app_id, name, user_id, 1);
    }
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

/* What a user's own change was decided on, checked again under the writer
 * lock: the asking session still there, the password checked still the one
 * stored. A change that raced a logout or another new password is refused. */
static int check_expect(store *s, MDB_txn *txn, const store_user *u, const store_expect *e)
{
    MDB_val k = {CRYPTO_HASH_BYTES, NULL}, v;
    if (!e)
        return STORE_OK;
    if (e->hash && strcmp(u->password_hash, e->hash) != 0)
        return STORE_CHANGED;
    k.mv_data = (void *)e->session;
    if (e->session && mdb_get(txn, s->db[DB_SESSIONS], &k, &v) != MDB_SUCCESS)
        return STORE_CHANGED;
    return STORE_OK;
}

int store_user_set_password(store *s, uint64_t user_id, const char *hash, const uint8_t *keep,
                            const store_expect *expect, const store_audit *audit)
{
    MDB_txn *txn;
    store_user *u = NULL;
    uint8_t uid[8];
    revoke_filter f = {keep, NULL, 0};
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_user_txn(s, txn, user_id, uid, &u);
    if (rc == STORE_OK)
        rc = check_expect(s, txn, u, expect);
    if (rc == STORE_OK)
        rc = set_hash_txn(s, txn, u, hash);
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    if (rc == STORE_OK)
        rc = revoke_user_txn(s, txn, user_id, &f);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

static int set_disabled_txn(store *s, MDB_txn *txn, uint64_t app_id, uint64_t user_id, int disabled)
{
    store_user *u = NULL;
    uint8_t uid[8];
    revoke_filter f = {NULL, NULL, 0};
    int rc = get_user_txn(s, txn, user_id, uid, &u);
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
    return rc;
}

int store_users_set_disabled(store *s, uint64_t app_id, const uint64_t *ids, size_t n, int disabled,
                             const store_audit *audits)
{
    MDB_txn *txn;
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    /* One transaction: all of them or none. */
    for (size_t i = 0; rc == STORE_OK && i < n; i++)
        rc = with_audit(s, txn, set_disabled_txn(s, txn, app_id, ids[i], disabled),
                        audits ? &audits[i] : NULL);
    return txn_end(txn, rc);
}

int store_user_set_disabled(store *s, uint64_t app_id, uint64_t user_id, int disabled,
                            const store_audit *audit)
{
    return store_users_set_disabled(s, app_id, &user_id, 1, disabled, audit);
}

static int drop_group(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    MDB_val k = {len, (void *)key}, v;
    if (mdb_get(txn, s->db[DB_GROUPS], &k, &v) == MDB_SUCCESS && v.mv_size == 8 &&
        get_u64(v.mv_data) == *(uint64_t *)arg)
        return del_raw(s, txn, DB_GROUPS, key, len);
    return 0;
}

int store_user_delete(store *s, uint64_t user_id, const store_expect *expect,
                      const store_audit *audit)
{
    MDB_txn *txn;
    store_user *u = NULL;
    uint8_t uid[8], au[16], key[KEY_MAX];
    revoke_filter f = {NULL, NULL, 0};
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_user_txn(s, txn, user_id, uid, &u);
    if (rc == STORE_OK)
        rc = check_expect(s, txn, u, expect);
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
    if (rc == STORE_OK)
        rc = look_index(s, txn, u->app_id, u->name, user_id, 0);
    if (rc == STORE_OK)
        rc = look_mark_add(s, txn, -1);
    if (rc == STORE_OK && *u->phone)
        rc = del_raw(s, txn, DB_LOGINS, key, login_key(key, u->app_id, LOGIN_PHONE, u->phone));
    if (rc == STORE_OK && *u->email)
        rc = del_raw(s, txn, DB_LOGINS, key, login_key(key, u->app_id, LOGIN_EMAIL, u->email));
    if (rc == STORE_OK)
        rc = scan_prefix(s, txn, DB_GROUPS, u->app_id, drop_group, &user_id);
    if (rc == STORE_OK)
        rc = del_raw(s, txn, DB_APP_USERS, au, app_user_key(au, u->app_id, user_id));
    if (rc == STORE_OK)
        rc = count_add(s, txn, u->app_id, 'u', -1);
    if (rc == STORE_OK)
        rc = del_raw(s, txn, DB_USERS, uid, 8);
    if (rc == STORE_OK)
        rc = pwcost_count(s, txn, u->app_id, u->password_hash, -1);
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

typedef struct {
    size_t skip, limit, n;
    store_user **list;
    int more;
} user_page;

static int collect_user(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    user_page *p = arg;
    if (p->n >= p->limit) {
        p->more = 1;
        return 1;
    }
    if (p->skip) {
        p->skip--;
        return 0;
    }
    int rc = get_msg(s, txn, DB_USERS, key + APP_USER_UID, 8, &tokend__v1__store__user__descriptor,
                     (void **)&p->list[p->n]);
    if (rc == STORE_OK)
        p->n++;
    return rc == STORE_NOTFOUND ? 0 : rc;
}

int store_users_list(store *s, uint64_t app_id, uint64_t after, size_t offset, size_t limit,
                     store_user ***out, size_t *n, int *more)
{
    MDB_txn *txn;
    uint8_t from[16];
    user_page p = {offset, limit, 0, calloc(limit ? limit : 1, sizeof(store_user *)), 0};
    int rc = p.list ? txn_begin(s, MDB_RDONLY, &txn) : STORE_ERR;
    if (rc != STORE_OK) {
        free(p.list);
        return rc;
    }
    /* The cursor seeks to the first user after `after`: no walk. */
    rc = scan_from(s, txn, DB_APP_USERS, from,
                   after ? app_user_key(from, app_id, after + 1) : app_key(from, app_id),
                   collect_user, &p);
    txn_abort(s, txn);
    *out = p.list, *n = p.n;
    if (more)
        *more = p.more;
    return rc;
}

void store_users_free(store_user **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(&list[i]->base, NULL);
    free(list);
}

int store_group_set(store *s, uint64_t app_id, uint64_t group_id, uint64_t user_id,
                    const store_audit *audit)
{
    MDB_txn *txn;
    uint8_t key[16], val[8];
    int rc = txn_begin(s, 0, &txn);
    if (rc != STORE_OK)
        return rc;
    put_u64(val, user_id);
    rc = put_raw(s, txn, DB_GROUPS, key, group_key(key, app_id, group_id), val, 8, 0);
    return txn_end(txn, with_audit(s, txn, rc, audit));
}

int store_group_admin(store *s, uint64_t app_id, uint64_t group_id, uint64_t *user_id)
{
    MDB_txn *txn;
    uint8_t key[16];
    int rc = txn_begin(s, MDB_RDONLY, &txn);
    if (rc != STORE_OK)
        return rc;
    rc = get_u64_value(s, txn, DB_GROUPS, key, group_key(key, app_id, group_id), user_id);
    txn_abort(s, txn);
    return rc;
}
