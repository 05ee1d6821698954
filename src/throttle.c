/* throttle.c - a fixed-size, open-addressed table of token buckets behind
 * one mutex (a login costs an Argon2id hash, so this lock is never the
 * bottleneck). When the table is full, the bucket nearest to full - the
 * one that remembers least - is evicted. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "crypto.h"
#include "throttle.h"

#define TABLE_SIZE (1u << 16)
#define PROBES 8

typedef struct {
    uint8_t key[16];
    float tokens;
    int64_t updated_ms;   /* 0: empty slot */
} bucket;

struct throttle {
    pthread_mutex_t lock;
    throttle_config cfg;
    bucket table[TABLE_SIZE];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

throttle *throttle_create(throttle_config cfg)
{
    throttle *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->lock, NULL);
    t->cfg = cfg;
    if (!t->cfg.window_s)
        t->cfg.window_s = 900;
    return t;
}

void throttle_free(throttle *t)
{
    if (t) {
        pthread_mutex_destroy(&t->lock);
        free(t);
    }
}

void throttle_configure(throttle *t, throttle_config cfg)
{
    pthread_mutex_lock(&t->lock);
    t->cfg = cfg;
    if (!t->cfg.window_s)
        t->cfg.window_s = 900;
    pthread_mutex_unlock(&t->lock);
}

static unsigned capacity(const throttle *t, int which)
{
    return which == 0 ? t->cfg.account : which == 1 ? t->cfg.account * 10 : t->cfg.address;
}

/* The bucket for key, refilled to now; a new one starts full. */
static bucket *find(throttle *t, const uint8_t key[16], unsigned cap, int64_t now)
{
    uint32_t h;
    bucket *victim = NULL;
    memcpy(&h, key, sizeof h);
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

static void make_key(uint8_t out[16], int which, uint64_t app_id, const char *account,
                     const char *address)
{
    char buf[600];
    int n = snprintf(buf, sizeof buf, "%d|%llu|%s|%s", which, (unsigned long long)app_id,
                     which == 2 ? "" : account, which == 1 ? "" : address);
    crypto_digest(out, buf, n > 0 && (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

int throttle_take(throttle *t, uint64_t app_id, const char *account, const char *address,
                  throttle_ticket *ticket)
{
    bucket *b[THROTTLE_BUCKETS] = {NULL};
    int64_t now = now_ms();
    int wait = 0;
    for (int i = 0; i < THROTTLE_BUCKETS; i++)
        make_key(ticket->keys[i], i, app_id, account, address ? address : "");
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < THROTTLE_BUCKETS; i++) {
        unsigned cap = capacity(t, i);
        if (!cap)
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
            if (b[i])
                b[i]->tokens -= 1.0f;
    pthread_mutex_unlock(&t->lock);
    return wait;
}

void throttle_refund(throttle *t, const throttle_ticket *ticket)
{
    int64_t now = now_ms();
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < THROTTLE_BUCKETS; i++) {
        unsigned cap = capacity(t, i);
        if (cap) {
            bucket *b = find(t, ticket->keys[i], cap, now);
            b->tokens = b->tokens + 1.0f > (float)cap ? (float)cap : b->tokens + 1.0f;
        }
    }
    pthread_mutex_unlock(&t->lock);
}
