/* store.h - tokend's data in LMDB: apps, users and their login indexes,
 * sessions, devices and push tokens. Only store.c calls LMDB.
 *
 * Records are the protobuf messages of proto/tokend/v1/store.proto; keys
 * are fixed-width big-endian ids so range scans come out in order. Each
 * logical change is one write transaction, so a crash never leaves half of
 * one, and a commit is durable before the call returns. Several processes
 * (the server and the admin CLI) may use one data directory at once.
 *
 * Functions return STORE_OK (0) or a negative STORE_* code. Records handed
 * out are freed by the caller with protobuf_c_message_free_unpacked(m, NULL). */
#ifndef TOKEND_STORE_H
#define TOKEND_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "crypto.h"
#include "tokend/v1/store.pb-c.h"

enum {
    STORE_OK = 0,
    STORE_ERR = -1,      /* I/O or corruption: see the log */
    STORE_NOTFOUND = -2,
    STORE_EXISTS = -3,   /* a unique name, phone or email is taken */
    STORE_FULL = -4      /* the map (or the disk) is full */
};

#define STORE_MAPSIZE_DEFAULT ((size_t)1 << 30)
#define STORE_NAME_MAX 128
#define STORE_GUID_MAX 256

typedef struct store store;
typedef Tokend__V1__Store__App store_app;
typedef Tokend__V1__Store__User store_user;
typedef Tokend__V1__Store__Session store_session;
typedef Tokend__V1__Store__Device store_device;

typedef enum { LOGIN_NAME = 'n', LOGIN_PHONE = 'p', LOGIN_EMAIL = 'e' } login_kind;

/* Everything one successful login writes, in one transaction. */
typedef struct {
    uint8_t session_hash[CRYPTO_HASH_BYTES];
    store_session *session;        /* user_id, app_id, device_guid, ... */
    uint8_t store_token_hash[CRYPTO_HASH_BYTES];
    int with_device;               /* session->device_guid names a device */
    uint8_t push_token_hash[CRYPTO_HASH_BYTES];
    int32_t platform;
    const char *user_agent;
    uint32_t device_sn;            /* out: the device's number within the user */
} store_login;

/* Opens (creating when missing) the environment in `dir`. On failure err
 * holds a sentence for the operator. */
int store_open(store **out, const char *dir, size_t mapsize, char *err, size_t errlen);
void store_close(store *s);
/* The data directory's secret key for token hashes, made at first open. */
const uint8_t *store_token_key(const store *s);
const char *store_strerror(int code);

int store_app_create(store *s, store_app *app);              /* sets app->app_id */
int store_app_get(store *s, uint64_t app_id, store_app **out);
int store_default_app(store *s, uint64_t *app_id);

/* Creates a user, enforcing unique name/phone/email within the app. On
 * STORE_EXISTS, *conflict names the field ("name", "phone", "email"). */
int store_user_create(store *s, store_user *user, const char **conflict);
int store_user_get(store *s, uint64_t user_id, store_user **out);
int store_user_lookup(store *s, uint64_t app_id, login_kind kind, const char *key,
                      uint64_t *user_id);
/* Replaces the password hash if the stored one is still `old_hash`. */
int store_user_rehash(store *s, uint64_t user_id, const char *old_hash, const char *new_hash);

int store_login_commit(store *s, store_login *login);
int store_session_get(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], store_session **out);
int store_device_get(store *s, uint64_t app_id, const char *guid, store_device **out);
int store_push_lookup(store *s, const uint8_t hash[CRYPTO_HASH_BYTES], uint64_t *app_id,
                      char *guid, size_t guid_len);

#endif
