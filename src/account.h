/* account.h - creating a user by the rules of names.h, the one way the
 * admin CLI and the user RPCs both use. */
#ifndef TOKEND_ACCOUNT_H
#define TOKEND_ACCOUNT_H

#include <stddef.h>
#include "status.h"
#include "store.h"

typedef struct {
    uint64_t app_id;
    const char *name, *phone, *email;   /* phone/email may be NULL or "" */
    const char *password;
    size_t password_len;
    const store_audit *audit;           /* an admin's creation, or NULL */
} account_new;

/* Validates, hashes the password (slow: Argon2id) and stores the user.
 * Returns ST_OK with *user_id set, or a status with msg for a person. */
status_code account_create(store *st, const account_new *in, crypto_pwcost cost,
                           uint64_t *user_id, char *msg, size_t msglen);

#endif
