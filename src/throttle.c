/* throttle.c - two fixed-size, open-addressed tables behind one mutex (a
 * guess costs an Argon2id hash, so this lock is never the bottleneck):
 * token buckets, and the places (account + address) that logged in. When
 * the bucket table is full, the bucket nearest to full - the one that
 * remembers least - is evicted; when the known table is full, the oldest
 * place. Only a right password makes a known place, so guessers cannot
 * flush the owner's places out. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "crypto.h"
#include "pool.h"
#include "store.h"
#include "throttle.h"

#define TABLE_SIZE (1u << 16)
#define KNOWN_SIZE (1u << 14)
#define PROBES 8
#define KNOWN_MS ((int64_t)THROTTLE_KNOWN_DAYS * 24 * 3600 * 1000)

enum { ACCOUNT_ADDRESS, ACCOUNT, ADDRESS };   /* ACCOUNT_ADDRESS: the name's (throttle.h) */

typedef struct {
    uint8_t key[16];
    float tokens;
    int64_t updated_ms;   /* 0: empty slot */
} bucket;

typedef struct {
    uint8_t key[16];
    int64_t seen_ms;      /* 0: empty slot */
} place;

struct throttle {
    pthread_mutex_t lock;
    throttle_config cfg;
    uint8_t key[CRYPTO_KEY_BYTES];
    bucket table[TABLE_SIZE];
    place known[KNOWN_SIZE];
    store *shared;        /* cluster mode: the buckets are in PostgreSQL */
    pool *pool;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_config(throttle *t, throttle_config cfg)
{
    t->cfg = cfg;
    if (!t->cfg.window_s)
        t->cfg.window_s = 900;
}

throttle *throttle_create(throttle_config cfg)
{
    throttle *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        return NULL;
    }
    crypto_random(t->key, sizeof t->key);
    set_config(t, cfg);
    return t;
}

void throttle_free(throttle *t)
{
    if (t) {
        pthread_mutex_destroy(&t->lock);
        crypto_wipe(t->key, sizeof t->key);
        free(t);
    }
}

void throttle_configure(throttle *t, throttle_config cfg)
{
    pthread_mutex_lock(&t->lock);
    set_config(t, cfg);
    pthread_mutex_unlock(&t->lock);
}

static unsigned capacity(const throttle *t, int which)
{
    return which == ACCOUNT_ADDRESS ? t->cfg.account
         : which == ACCOUNT         ? t->cfg.account * 10
                                    : t->cfg.address;
}

static uint32_t slot_of(const uint8_t key[16])
{
    uint32_t h;
    memcpy(&h, key, sizeof h);
    return h;
}

/* The bucket for key, refilled to now; a new one starts full. */
static bucket *find(throttle *t, const uint8_t key[16], unsigned cap, int64_t now)
{
    uint32_t h = slot_of(key);
    bucket *victim = NULL;
    for (unsigned i = 0; i < PROBES; i++) {
        bucket *b = &t->table[(h + i) & (TABLE_SIZE - 1)];
        if (b->updated_ms && memcmp(b->key, key, 16) == 0) {
            float rate = (float)cap / ((float)t->cfg.window_s * 1000.0f);
            b->tokens += (float)(now - b->updated_ms) * rate;
            if (b->tokens > (float)cap)
                b->tokens = (float)cap;
            b->updated_ms = now;
            return b;
        }
        if (!victim || !b->updated_ms || (victim->updated_ms && b->tokens > victim->tokens))
            victim = b;
    }
    memcpy(victim->key, key, 16);
    victim->tokens = (float)cap;
    victim->updated_ms = now;
    return victim;
}

/* The known place for key: found (and still fresh), or NULL. With
 * `add`, a missing one takes an empty or the oldest slot. */
static place *find_place(throttle *t, const uint8_t key[16], int64_t now, int add)
{
    uint32_t h = slot_of(key);
    place *victim = NULL;
    for (unsigned i = 0; i < PROBES; i++) {
        place *p = &t->known[(h + i) & (KNOWN_SIZE - 1)];
        if (p->seen_ms && now - p->seen_ms > KNOWN_MS)
            p->seen_ms = 0;
        if (p->seen_ms && memcmp(p->key, key, 16) == 0)
            return p;
        if (!victim || (victim->seen_ms && p->seen_ms < victim->seen_ms))
            victim = p;
    }
    if (!add)
        return NULL;
    memcpy(victim->key, key, 16);
    return victim;
}

void throttle_address_prefix(char *out, size_t outlen, const char *address)
{
    struct in6_addr a6;
    if (inet_pton(AF_INET6, address, &a6) == 1) {
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a6.s6_addr, v4mapped, 12) == 0) {
            inet_ntop(AF_INET, a6.s6_addr + 12, out, (socklen_t)outlen);
            return;
        }
        memset(a6.s6_addr + 8, 0, 8);
        char text[INET6_ADDRSTRLEN];
        inet_ntop(AF_INET6, &a6, text, sizeof text);
        snprintf(out, outlen, "%s/64", text);
        return;
    }
    snprintf(out, outlen, "%s", address);
}

static void make_key(throttle *t, uint8_t out[16], int which, uint64_t app_id,
                     const char *account, const char *address)
{
    char buf[640];
    int n = snprintf(buf, sizeof buf, "%d|%llu|%s|%s", which, (unsigned long long)app_id,
                     which == ADDRESS ? "" : account, which == ACCOUNT ? "" : address);
    crypto_digest(out, buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, t->key);
}

/* Takes from the buckets in `mask` (1 << ACCOUNT_ADDRESS, ...). */
static int take(throttle *t, unsigned mask, uint64_t app_id, const char *name, const char *account,
                const char *address, int known_device, throttle_ticket *ticket)
{
    bucket *b[THROTTLE_BUCKETS] = {NULL};
    char prefix[INET6_ADDRSTRLEN + 4];
    int64_t now = now_ms();
    int wait = 0;

    throttle_address_prefix(prefix, sizeof prefix, address ? address : "");
    for (int i = 0; i < THROTTLE_BUCKETS; i++)
        make_key(t, ticket->keys[i], i, app_id, i == ACCOUNT_ADDRESS ? name : account, prefix);
    /* The account+address digest names the place; a separate domain byte
     * keeps it apart from the bucket of the same text. */
    make_key(t, ticket->known, 9, app_id, account, prefix);
    memset(ticket->taken, 0, sizeof ticket->taken);
    ticket->deferred = 0;
    if (t->shared) {
        ticket->deferred = 1;
        ticket->mask = mask;
        ticket->known_device = known_device != 0;
        return 0;
    }

    pthread_mutex_lock(&t->lock);
    int known = known_device || find_place(t, ticket->known, now, 0) != NULL;
    for (int i = 0; i < THROTTLE_BUCKETS; i++) {
        unsigned cap = capacity(t, i);
        if (!cap || !(mask & 1u << i) || (i == ACCOUNT && known))
            continue;
        b[i] = find(t, ticket->keys[i], cap, now);
        if (b[i]->tokens < 1.0f) {
            float ms = (1.0f - b[i]->tokens) * (float)t->cfg.window_s * 1000.0f / (float)cap;
            int s = (int)(ms / 1000.0f) + 1;
            if (s > wait)
                wait = s;
        }
    }
    if (!wait)
        for (int i = 0; i < THROTTLE_BUCKETS; i++)
            if (b[i]) {
                b[i]->tokens -= 1.0f;
                ticket->taken[i] = 1;
            }
    pthread_mutex_unlock(&t->lock);
    return wait;
}

int throttle_take(throttle *t, uint64_t app_id, const char *name, const char *account,
                  const char *address, int known_device, throttle_ticket *ticket)
{
    return take(t, 1u << ACCOUNT_ADDRESS | 1u << ACCOUNT | 1u << ADDRESS, app_id, name, account,
                address, known_device, ticket);
}

int throttle_take_address(throttle *t, uint64_t app_id, const char *address,
                          throttle_ticket *ticket)
{
    return take(t, 1u << ADDRESS, app_id, "", "", address, 0, ticket);
}

/* Gives back what the ticket took; the lock is held. */
static void give_back(throttle *t, const throttle_ticket *ticket, int64_t now)
{
    for (int i = 0; i < THROTTLE_BUCKETS; i++) {
        unsigned cap = capacity(t, i);
        if (cap && ticket->taken[i]) {
            bucket *b = find(t, ticket->keys[i], cap, now);
            b->tokens = b->tokens + 1.0f > (float)cap ? (float)cap : b->tokens + 1.0f;
        }
    }
}

/* --- shared (cluster) mode ------------------------------------------------------ */

void throttle_share(throttle *t, store *s, pool *p)
{
    static const char domain[] = "tokend throttle keys v1";
    /* From the first token key, not the newest: every node must derive the
     * same bucket keys whenever it started, rotations or not (a cluster
     * never rotated keeps its buckets: its newest key is the first). */
    uint8_t first[CRYPTO_KEY_BYTES];
    if (store_first_key(s, first) != STORE_OK)
        memcpy(first, store_token_key(s), sizeof first);
    pthread_mutex_lock(&t->lock);
    crypto_digest(t->key, domain, sizeof domain - 1, first);
    crypto_digest(t->key + 16, domain, sizeof domain - 2, first);
    crypto_wipe(first, sizeof first);
    t->shared = s;
    t->pool = p;
    pthread_mutex_unlock(&t->lock);
}

int throttle_settle(throttle *t, throttle_ticket *ticket)
{
    uint8_t keys[THROTTLE_BUCKETS][16];
    unsigned caps[THROTTLE_BUCKETS], window;
    int which[THROTTLE_BUCKETS], n = 0, known = ticket->known_device, wait = 0;
    double tokens[THROTTLE_BUCKETS];
    if (!ticket->deferred)
        return 0;
    ticket->deferred = 0;
    if (!known && (ticket->mask & 1u << ACCOUNT) &&
        store_place_known(t->shared, ticket->known, KNOWN_MS, &known) != STORE_OK)
        return -1;
    pthread_mutex_lock(&t->lock);
    window = t->cfg.window_s;
    for (int i = 0; i < THROTTLE_BUCKETS; i++) {
        unsigned cap = capacity(t, i);
        if (!cap || !(ticket->mask & 1u << i) || (i == ACCOUNT && known))
            continue;
        memcpy(keys[n], ticket->keys[i], 16);
        caps[n] = cap;
        which[n++] = i;
    }
    pthread_mutex_unlock(&t->lock);
    if (!n)
        return 0;
    if (store_throttle_buckets(t->shared, (size_t)n, (const uint8_t(*)[16])keys, caps,
                               window * 1000, 0, tokens) != STORE_OK)
        return -1;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 1.0) {
            double ms = (1.0 - tokens[i]) * window * 1000.0 / caps[i];
            int s = (int)(ms / 1000.0) + 1;
            wait = s > wait ? s : wait;
        }
    if (!wait)
        for (int i = 0; i < n; i++)
            ticket->taken[which[i]] = 1;
    return wait;
}

typedef struct {
    pool_job job;
    throttle *t;
    throttle_ticket ticket;
    int seen;
} give_job;

static void give_work(pool_job *job)
{
    give_job *g = (give_job *)job;
    uint8_t keys[THROTTLE_BUCKETS][16];
    unsigned caps[THROTTLE_BUCKETS], window;
    double tokens[THROTTLE_BUCKETS];
    size_t n = 0;
    pthread_mutex_lock(&g->t->lock);
    window = g->t->cfg.window_s;
    for (int i = 0; i < THROTTLE_BUCKETS; i++)
        if (g->ticket.taken[i] && capacity(g->t, i)) {
            memcpy(keys[n], g->ticket.keys[i], 16);
            caps[n++] = capacity(g->t, i);
        }
    pthread_mutex_unlock(&g->t->lock);
    if (n)
        store_throttle_buckets(g->t->shared, n, (const uint8_t(*)[16])keys, caps, window * 1000, 1,
                               tokens);
    if (g->seen)
        store_place_seen(g->t->shared, g->ticket.known);
}

static void give_done(pool_job *job)
{
    free(job);
}

/* A refund (and a known place) as a job of the pool: a full pool drops it,
 * which leaves one attempt taken - the tolerance of the shared buckets. */
static void give_shared(throttle *t, const throttle_ticket *ticket, int seen)
{
    int any = seen;
    for (int i = 0; i < THROTTLE_BUCKETS; i++)
        any |= ticket->taken[i];
    if (!any || ticket->deferred)
        return;
    give_job *g = calloc(1, sizeof *g);
    if (!g)
        return;
    g->job.work = give_work;
    g->job.post = give_done;
    g->t = t;
    g->ticket = *ticket;
    g->seen = seen;
    if (pool_submit(t->pool, &g->job) != 0)
        free(g);
}

void throttle_refund(throttle *t, const throttle_ticket *ticket)
{
    int64_t now = now_ms();
    if (t->shared) {
        give_shared(t, ticket, 0);
        return;
    }
    pthread_mutex_lock(&t->lock);
    give_back(t, ticket, now);
    pthread_mutex_unlock(&t->lock);
}

void throttle_succeeded(throttle *t, const throttle_ticket *ticket)
{
    int64_t now = now_ms();
    if (t->shared) {
        give_shared(t, ticket, 1);
        return;
    }
    pthread_mutex_lock(&t->lock);
    give_back(t, ticket, now);
    find_place(t, ticket->known, now, 1)->seen_ms = now;
    pthread_mutex_unlock(&t->lock);
}
