/* decoy.c - decoy hashes per cost, made once and kept; the pick reads the
 * store's count of the app's accounts per cost each time (a few keys in
 * one read transaction), so it follows imports, upgrades and deletions at
 * once. Per app: an unknown name costs what the app's own accounts cost,
 * never a cost only another app's accounts have (that would tell it is no
 * account of this app). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "decoy.h"

typedef struct {
    crypto_pwcost cost;
    char hash[CRYPTO_PWHASH_STRBYTES];
} decoy_entry;

struct decoy {
    store *store;
    crypto_pwcost fallback;
    pthread_mutex_t lock;
    decoy_entry made[DECOY_COSTS_MAX];
    size_t n;
};

/* A password nobody can send: longer than any request may carry. */
static const char unguessable[] = "decoy: no account has this name";

static int same_cost(crypto_pwcost a, crypto_pwcost b)
{
    return a.ops == b.ops && a.mem == b.mem;
}

/* The kept decoy of `cost`, made when missing. The lock is held. */
static const char *decoy_of(decoy *d, crypto_pwcost cost)
{
    for (size_t i = 0; i < d->n; i++)
        if (same_cost(d->made[i].cost, cost))
            return d->made[i].hash;
    /* Full: overwrite the last slot. Costs in use are few in practice. */
    size_t i = d->n < DECOY_COSTS_MAX ? d->n++ : DECOY_COSTS_MAX - 1;
    d->made[i].cost = cost;
    if (crypto_password_hash(d->made[i].hash, unguessable, sizeof unguessable - 1, cost) != 0) {
        d->n = i;
        return NULL;
    }
    return d->made[i].hash;
}

int decoy_cost(decoy *d, uint64_t app_id, const char *name, crypto_pwcost *cost)
{
    crypto_pwcost costs[DECOY_COSTS_MAX];
    uint64_t counts[DECOY_COSTS_MAX], total = 0, pick;
    size_t n = 0;
    uint8_t digest[16];
    char buf[300];

    if (!d || !name || !cost)
        return -1;
    *cost = d->fallback;
    if (store_pwcost_mix(d->store, app_id, costs, counts, DECOY_COSTS_MAX, &n) != STORE_OK)
        return 0;
    /* A cost past crypto's bounds (an import of an older build could keep
     * one) is left out: a decoy of it would take minutes. */
    for (size_t i = 0; i < n; i++) {
        if (!crypto_password_cost_ok(costs[i]))
            counts[i] = 0;
        total += counts[i];
    }
    if (!total)
        return 0;
    int len = snprintf(buf, sizeof buf, "decoy|%llu|%s", (unsigned long long)app_id, name);
    crypto_digest(digest, buf, len > 0 && (size_t)len < sizeof buf ? (size_t)len : sizeof buf - 1,
                  store_token_key(d->store));
    memcpy(&pick, digest, sizeof pick);
    pick %= total;
    for (size_t i = 0; i < n; i++) {
        if (pick < counts[i]) {
            *cost = costs[i];
            break;
        }
        pick -= counts[i];
    }
    return 0;
}

int decoy_hash(decoy *d, uint64_t app_id, const char *name, char out[CRYPTO_PWHASH_STRBYTES])
{
    crypto_pwcost cost;
    if (decoy_cost(d, app_id, name, &cost) != 0)
        return -1;
    pthread_mutex_lock(&d->lock);
    const char *h = decoy_of(d, cost);
    if (h)
        memcpy(out, h, CRYPTO_PWHASH_STRBYTES);
    pthread_mutex_unlock(&d->lock);
    return h ? 0 : -1;
}

decoy *decoy_create(store *s, crypto_pwcost fallback)
{
    crypto_pwcost costs[DECOY_COSTS_MAX];
    uint64_t counts[DECOY_COSTS_MAX];
    size_t n = 0;
    decoy *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    if (pthread_mutex_init(&d->lock, NULL) != 0) {
        free(d);
        return NULL;
    }
    d->store = s;
    d->fallback = fallback;
    if (!decoy_of(d, fallback)) {
        decoy_free(d);
        return NULL;
    }
    if (store_pwcost_mix(s, 0, costs, counts, DECOY_COSTS_MAX, &n) != STORE_OK)
        n = 0;
    for (size_t i = 0; i < n; i++)
        if (crypto_password_cost_ok(costs[i]))
            decoy_of(d, costs[i]);
    return d;
}

void decoy_free(decoy *d)
{
    if (d) {
        pthread_mutex_destroy(&d->lock);
        free(d);
    }
}
