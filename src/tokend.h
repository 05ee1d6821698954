/* tokend.h - the configuration and the process-wide context handed to
 * every layer explicitly (no hidden globals): the store, the worker pool
 * and the settings. Shared by all event-loop and worker threads: the
 * settings are fixed once serving starts, except those SIGHUP reloads
 * (throttle limits, max_body, deadline), which config.c writes atomically
 * and others read through config_max_body() and config_deadline(). */
#ifndef TOKEND_TOKEND_H
#define TOKEND_TOKEND_H

#include <stddef.h>
#include "crypto.h"
#include "pool.h"
#include "proxies.h"
#include "store.h"
#include "throttle.h"

#define TOKEND_VERSION "0.1.0"

struct option_values;

typedef struct {
    const struct option_values *options;  /* where each setting came from (options.h) */
    const char *data_dir;
    const char *config_file;     /* --config, re-read on SIGHUP */
    const char *listen;          /* HOST:PORT */
    unsigned threads;            /* event loops */
    unsigned workers;            /* pool threads for Argon2id and writes */
    unsigned queue;              /* jobs allowed to wait beyond the busy workers */
    unsigned login_queue;        /* password checks allowed to wait, per worker */
    size_t max_body;             /* bytes; larger request bodies get 413 (reloadable) */
    size_t mapsize;              /* bytes of LMDB map at start */
    unsigned purge_interval;     /* seconds between purges of expired sessions */
    unsigned max_connections;    /* open connections, over all threads */
    unsigned max_streams;        /* concurrent HTTP/2 requests per connection */
    unsigned request_timeout;    /* seconds for a request to arrive; HTTP/2 idle */
    unsigned deadline;           /* seconds a call may take when it sets none (reloadable) */
    crypto_pwcost pwcost;
    const char *tls_cert, *tls_key;
    const char *cluster_url;     /* cluster mode: PostgreSQL's URL, or NULL */
    const char *metrics_listen;  /* HOST:PORT for GET /metrics, or NULL: on `listen` */
    const char *access_log;      /* "off", "stderr" or a file */
    int log_text;                /* --log-format text (else JSON lines) */
    throttle_config throttle;    /* reloadable: throttle_configure() applies it */
    proxies trusted_proxies;     /* --trusted-proxies: n 0 when none */
    int proxy_protocol;          /* --proxy-protocol on: they may open with a PROXY header */
    int lock_memory;             /* --lock-memory on: the data kept in memory */
} tokend_config;

typedef struct {
    tokend_config *config;
    store *store;
    pool *pool;
    throttle *throttle;
    /* Verified against when the user is unknown, so that costs what a
     * wrong password of such an account costs. */
    struct decoy *decoy;
} tokend_ctx;

#endif
