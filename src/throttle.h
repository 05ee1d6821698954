/* throttle.h - limits on password guesses: token buckets of failed
 * attempts, in memory, checked before any password is hashed (logins, and
 * the password checks of ChangePassword and DeleteUser). A bucket refills
 * steadily, so a guesser is slowed, never given more than the rate.
 *
 * Three buckets guard each attempt:
 *   name+address  (default 10 failures / 15 min): one client guessing one login name
 *   account       (10x that): many clients guessing one account
 *   address       (default 100 / 15 min): one client guessing many accounts
 * "Name" is the login name as given (normalized: id, username, phone or
 * email). "Account" is the account the name resolved to (one bucket
 * whatever form of login names it), or the name itself when no account has
 * it, so the dummy-hash path is limited too. "Address" is the client's
 * IPv4 address or its IPv6 /64.
 *
 * The client's own bucket is the name's, not the account's: were it the
 * account's, a client that emptied it by guessing an account's username
 * would see 429 for that account's phone, email and id, and 401 for
 * anyone else's: which names are whose, for one attempt each. Only the
 * account bucket, emptied by many clients' failures, says it.
 *
 * So that an attacker who spreads guesses over many addresses cannot lock
 * the owner out by emptying the account bucket, that bucket does not apply
 * to attempts from a known place: an address (/64) this account logged in
 * from within the last 30 days, or a device it logged in on (the caller
 * says so). Those attempts still count against the other two buckets.
 *
 * Keys are BLAKE2b digests under a random per-process key: the table
 * holds no names or addresses, and nobody can aim collisions at it. */
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
#define THROTTLE_KNOWN_DAYS 30

typedef struct {
    uint8_t keys[THROTTLE_BUCKETS][16];
    uint8_t known[16];                  /* account + address, for throttle_succeeded */
    uint8_t taken[THROTTLE_BUCKETS];    /* which buckets this attempt took from */
    /* shared (cluster) mode: the take waits for throttle_settle on a worker */
    uint8_t deferred, known_device;
    unsigned mask;
} throttle_ticket;

throttle *throttle_create(throttle_config cfg);
void throttle_free(throttle *t);
/* New limits (SIGHUP); the buckets keep their state. */
void throttle_configure(throttle *t, throttle_config cfg);

/* Takes one attempt from each bucket of (app, name, account, address);
 * the account bucket is skipped when the address is known for the account
 * or `known_device` is set. Returns 0 with a ticket, or the seconds to wait
 * (>= 1) when a bucket is empty - in which case nothing is taken. */
int throttle_take(throttle *t, uint64_t app_id, const char *name, const char *account,
                  const char *address, int known_device, throttle_ticket *ticket);
/* Takes one attempt from the address bucket alone: for what every client
 * may do but no client may do fast (open registration). */
int throttle_take_address(throttle *t, uint64_t app_id, const char *address,
                          throttle_ticket *ticket);
/* An attempt that was not a wrong guess (refused for another reason) gives
 * its attempt back. */
void throttle_refund(throttle *t, const throttle_ticket *ticket);
/* The password was right: the attempt is given back and the address
 * becomes known for the account. */
void throttle_succeeded(throttle *t, const throttle_ticket *ticket);

/* Cluster mode: the buckets and known places live in PostgreSQL (through
 * the store), shared by every node, so guesses spread over N nodes get the
 * single-node limits; the keys are digests under a key derived from the
 * data directory's token key, the same on every node. The network is not
 * touched on an event loop: throttle_take then only fills the ticket (and
 * answers 0), and the take itself happens in throttle_settle, on a worker
 * before any hash is computed (rpc.c does it for a task with a ticket);
 * refunds and known places go to the worker pool as jobs of their own. */
struct store;
struct pool;
void throttle_share(throttle *t, struct store *s, struct pool *p);
/* The deferred take of a ticket, on a worker: 0 taken (or nothing to do),
 * > 0 the seconds to wait (nothing taken), -1 the database is unreachable. */
int throttle_settle(throttle *t, throttle_ticket *ticket);

/* The part of an address the address bucket counts: an IPv4 address as
 * it is, an IPv6 address cut to its /64 ("2001:db8:1:2::/64"), an IPv4
 * address mapped into IPv6 as IPv4. Anything else is copied. */
void throttle_address_prefix(char *out, size_t outlen, const char *address);

#endif
