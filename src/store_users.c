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
    if (rc == STORE_OK)
        rc = put_msg(s, txn, DB_APPS, key, app_key(key, app->app_id), &app->base, MDB_NOOVERWRITE);
    /* The first app of a data directory serves requests that name none. */
    if (rc == STORE_OK &&
        get_u64_value(s, txn, DB_META, "default_app", 11, &dflt) == STORE_NOTFOUND)
        rc = put_raw(s, txn, DB_META, "default_app", 11, key, 8, 0);
    return txn_end(txn, rc);
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
        rc = put_raw(s, txn, DB_APP_USERS, au, app_user_key(au, user->app_id, user->user_id), "",
                     0, 0);
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
    if (rc == STORE_OK)
        rc = del_raw(s, txn, DB_APP_USERS, au, app_user_key(au, u->app_id, user_id));
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
    int rc = get_msg(s, txn, DB_USERS, key + APP_USER_UID, 8, &tokend__v1__store__user__descriptor,
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
