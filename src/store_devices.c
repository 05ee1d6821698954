/* store_devices.c - devices: moves between users, listing, forgetting,
 * binding APNs/FCM tokens, and push-token look-ups.
 *
 * A device is an app's device_guid; it belongs to whoever logged in on it
 * last, and is numbered (device_sn) within that user so clients can name
 * it. Moving a device to another user kills its old push token and drops
 * the old user's device token at once: pushes for one person must never
 * reach another. */
#include <stdlib.h>
#include <string.h>
#include "store_internal.h"

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
    k.mv_size = user_device_key(prefix, user_id, NULL, 0), k.mv_data = prefix;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == MDB_SUCCESS && k.mv_size >= 16 && memcmp(k.mv_data, prefix, 8) == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        store_device *d = NULL;
        if (get_msg(s, txn, DB_DEVICES, (uint8_t *)k.mv_data + USER_DEVICE_DKEY,
                    k.mv_size - USER_DEVICE_DKEY,
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
 * token of the device (whoever owned it) stops resolving at once. When the
 * device moves to another user, the previous user's sessions on it end
 * too: a shared tablet must not keep the last user's live token, which
 * would no longer be in their device list for a kick to reach. */
int move_device(store *s, MDB_txn *txn, store_login *login)
{
    store_session *ss = login->session;
    uint8_t dkey[DEVICE_KEY_MAX], udkey[USER_DEVICE_KEY_MAX];
    size_t dlen = device_key(dkey, ss->app_id, ss->device_guid);
    store_device *old = NULL, dev = TOKEND__V1__STORE__DEVICE__INIT;
    int rc = get_msg(s, txn, DB_DEVICES, dkey, dlen, &tokend__v1__store__device__descriptor,
                     (void **)&old);
    if (rc == STORE_NOTFOUND)
        rc = STORE_OK;
    if (rc != STORE_OK)
        return rc;
    if (old && old->user_id != ss->user_id) {
        revoke_filter f = {NULL, ss->device_guid, 0, NULL};
        rc = revoke_user_txn(s, txn, old->user_id, &f);
    }
    if (old && rc == STORE_OK) {
        if (old->push_token_hash.len)  /* a kicked device has none */
            rc = del_raw(s, txn, DB_PUSH_TOKENS, old->push_token_hash.data,
                         old->push_token_hash.len);
        if (rc == STORE_OK && old->user_id != ss->user_id) {
            rc = del_raw(s, txn, DB_USER_DEVICES, udkey,
                         user_device_key(udkey, old->user_id, dkey, dlen));
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
    dev.push_key_id = login->session->key_id;
    dev.session_expire_ms = ss->expire_ms;
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
    if (rc == STORE_OK)
        rc = put_raw(s, txn, DB_USER_DEVICES, udkey,
                     user_device_key(udkey, ss->user_id, dkey, dlen), "", 0, 0);
    login->device_sn = dev.device_sn;
    return rc;
}

int store_device_get(store *s, uint64_t app_id, const char *guid, store_device **out)
{
    MDB_txn *txn;
    uint8_t key[DEVICE_KEY_MAX];
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


/* Collects the user's devices in this app (user_devices keys are
 * user(8) app(8) guid). */
static int collect_device(store *s, MDB_txn *txn, const uint8_t *key, size_t len, void *arg)
{
    device_scan *d = arg;
    store_device *dev = NULL;
    if (len < 16 || get_u64(key + USER_DEVICE_DKEY) != d->app_id)
        return 0;
    int rc = get_msg(s, txn, DB_DEVICES, key + USER_DEVICE_DKEY, len - USER_DEVICE_DKEY,
                     &tokend__v1__store__device__descriptor, (void **)&dev);
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

int devices_txn(store *s, MDB_txn *txn, device_scan *d)
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
int forget_device_txn(store *s, MDB_txn *txn, uint64_t app_id, store_device *dev,
                      int forget)
{
    uint8_t dkey[DEVICE_KEY_MAX], udkey[USER_DEVICE_KEY_MAX];
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
        rc = del_raw(s, txn, DB_DEVICES, dkey, dlen);
        if (rc == STORE_OK)
            rc = del_raw(s, txn, DB_USER_DEVICES, udkey,
                         user_device_key(udkey, dev->user_id, dkey, dlen));
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
    uint8_t dkey[DEVICE_KEY_MAX];
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
