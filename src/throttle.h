/* throttle.h - login throttling: token buckets of failed logins, in memory,
 * checked before any password is hashed. A bucket refills steadily, so an
 * account under attack is slowed, never locked for good. Three buckets
 * guard each attempt:
 *   account+address  (default 10 failures / 15 min): one client guessing one account
 *   account          (10x that): many clients guessing one account
 *   address          (default 100 / 15 min): one client guessing many accounts
 * Keys are hashed: the table holds no names or addresses. */
#ifndef TOKEND_THROTTLE_H
#define TOKEND_THROTTLE_H

#include <stdint.h>

typedef struct throttle throttle;

typedef struct {
    unsigned account;      /* failures per account (and address) per window; 0: off */
    unsigned address;      /* failures per client address per window; 0: off */
    unsigned window_s;
} throttle_config;

#define THROTTLE_BUCKETS 3

typedef struct {
    uint8_t keys[THROTTLE_BUCKETS][16];
} throttle_ticket;

throttle *throttle_create(throttle_config cfg);
void throttle_free(throttle *t);
/* New limits (SIGHUP); the buckets keep their state. */
void throttle_configure(throttle *t, throttle_config cfg);

/* Takes one attempt from each bucket of (app, account, address). Returns 0
 * with a ticket, or the seconds to wait (>= 1) when a bucket is empty - in
 * which case nothing is taken. */
int throttle_take(throttle *t, uint64_t app_id, const char *account, const char *address,
                  throttle_ticket *ticket);
/* A successful login gives its attempt back. */
void throttle_refund(throttle *t, const throttle_ticket *ticket);

#endif
