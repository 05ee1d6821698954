/* account.c - user creation: validate every field first, so no hashing is
 * spent on a request that will be refused, then one store transaction that
 * enforces unique name, phone and email. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "account.h"
#include "names.h"

status_code account_create(store *st, const account_new *in, crypto_pwcost cost,
                           uint64_t *user_id, char *msg, size_t msglen)
{
    char name[STORE_NAME_MAX + 1], phone[NAMES_PHONE_MAX + 2] = "", email[NAMES_EMAIL_MAX + 1] = "";
    char hash[CRYPTO_PWHASH_STRBYTES];
    store_user user = TOKEND__V1__STORE__USER__INIT;
    const char *why = NULL, *conflict = "name";
    struct timespec now;
    int rc;

    if (names_normalize_username(in->name ? in->name : "", name, sizeof name, &why) != 0 ||
        (in->phone && *in->phone && names_normalize_phone(in->phone, phone, sizeof phone, &why) != 0) ||
        (in->email && *in->email && names_normalize_email(in->email, email, sizeof email, &why) != 0) ||
        names_check_password(in->password, in->password_len, &why) != 0) {
        snprintf(msg, msglen, "%s", why);
        return ST_INVALID_ARGUMENT;
    }
    if (crypto_password_hash(hash, in->password, in->password_len, cost) != 0) {
        snprintf(msg, msglen, "cannot hash the password (out of memory?)");
        return ST_RESOURCE_EXHAUSTED;
    }
    clock_gettime(CLOCK_REALTIME, &now);
    user.app_id = in->app_id;
    user.name = name;
    user.phone = phone;
    user.email = email;
    user.password_hash = hash;
    user.created_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    rc = store_user_create(st, &user, &conflict, in->audit);
    switch (rc) {
    case STORE_OK:
        *user_id = user.user_id;
        return ST_OK;
    case STORE_EXISTS:
        snprintf(msg, msglen, "%s is already taken in this app", conflict);
        return ST_ALREADY_EXISTS;
    case STORE_NOTFOUND:
        snprintf(msg, msglen, "unknown app_id %llu", (unsigned long long)in->app_id);
        return ST_NOT_FOUND;
    default:
        snprintf(msg, msglen, "%s", store_strerror(rc));
        return ST_UNAVAILABLE;
    }
}
