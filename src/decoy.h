/* decoy.h - the hash an unknown login name is checked against, so that it
 * costs what a real account of that name would. Accounts keep the cost
 * their hash was made with until their next login, and `user add` may set
 * any cost: a decoy at one fixed cost would tell unknown names from real
 * ones by time. So the decoy's cost is drawn from the accounts' own mix of
 * costs (the store counts them), weighted by how many accounts have each,
 * and fixed per name (a keyed hash of it picks), so that asking again
 * shows the same cost, as a real account would. */
#ifndef TOKEND_DECOY_H
#define TOKEND_DECOY_H

#include <stdint.h>
#include "crypto.h"
#include "store.h"

#define DECOY_COSTS_MAX 16

typedef struct decoy decoy;

/* `fallback`: the cost when no account exists yet (the server's own).
 * Makes a decoy for each cost in use now; NULL on failure. */
decoy *decoy_create(store *s, crypto_pwcost fallback);
void decoy_free(decoy *d);
/* The decoy for `name` in `app_id`: a hash made with the cost picked for
 * it. Cheap once a cost has its decoy; the first name drawn to a cost
 * that came into use after start makes one (an Argon2id hash): call it
 * on the pool. -1 if no hash can be made. */
int decoy_hash(decoy *d, uint64_t app_id, const char *name, char out[CRYPTO_PWHASH_STRBYTES]);
/* The cost decoy_hash picks for `name` (for tests and the curious). */
int decoy_cost(decoy *d, uint64_t app_id, const char *name, crypto_pwcost *cost);

#endif
