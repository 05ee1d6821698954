/* fixture.h - what the unit tests of the store and its callers share: a
 * real store in a fresh temporary directory per test, and the few records
 * (an app, a user, a login) most tests start from; and for tests that
 * drive handlers, a tokend_ctx around a store (fixture_ctx_open).
 *
 * Kept in one header so each test file says only what it tests; every
 * function is static inline, so a test that does not use one pays nothing
 * and gets no unused-function warning. Include after <cmocka.h>. */
#ifndef TOKEND_TEST_FIXTURE_H
#define TOKEND_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "decoy.h"
#include "store.h"
#include "tokend.h"

#define TEST_MAPSIZE ((size_t)64 << 20)

typedef struct {
    char dir[64];
    store *s;
    uint64_t app;      /* set by fixture_setup_app */
} fixture;

/* An LMDB data directory holds exactly these two files. */
static inline void rm_dir(const char *dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

/* A new empty directory in dir[64], or NULL. */
static inline char *make_tmp_dir(char *dir)
{
    strcpy(dir, "/tmp/tokend-test-XXXXXX");
    return mkdtemp(dir);
}

static inline store *open_or_fail(const char *dir, size_t mapsize)
{
    char err[256] = "";
    store *s = NULL;
    int rc = store_open(&s, dir, mapsize, err, sizeof err);
    if (rc != STORE_OK)
        print_error("store_open(%s): %s\n", dir, err);
    assert_int_equal(rc, STORE_OK);
    assert_non_null(s);
    return s;
}

static inline int fixture_setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256];
    if (!f)
        return -1;
    if (!make_tmp_dir(f->dir)) {
        free(f);
        return -1;
    }
    if (store_open(&f->s, f->dir, TEST_MAPSIZE, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "store_open: %s\n", err);
        rm_dir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static inline int fixture_teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    rm_dir(f->dir);
    free(f);
    return 0;
}

static inline int try_app(store *s, const char *name, uint64_t *app_id)
{
    store_app app = TOKEND__V1__STORE__APP__INIT;
    app.name = (char *)name;
    app.token_ttl_ms = 3600000;
    app.open_registration = 1;
    app.created_ms = 1700000000000;
    int rc = store_app_create(s, &app);
    *app_id = app.app_id;
    return rc;
}

static inline uint64_t make_app(store *s, const char *name)
{
    uint64_t id = 0;
    assert_int_equal(try_app(s, name, &id), STORE_OK);
    assert_true(id != 0);
    return id;
}

/* fixture_setup and one app in f->app. */
static inline int fixture_setup_app(void **state)
{
    if (fixture_setup(state) != 0)
        return -1;
    fixture *f = *state;
    if (try_app(f->s, "app", &f->app) != STORE_OK) {
        fixture_teardown(state);
        return -1;
    }
    return 0;
}

/* NULL phone, email or hash: "", "", a fake hash. */
static inline int try_user(store *s, uint64_t app_id, const char *name, const char *phone,
                           const char *email, const char *hash, uint64_t *user_id,
                           const char **conflict)
{
    store_user u = TOKEND__V1__STORE__USER__INIT;
    u.app_id = app_id;
    u.name = (char *)name;
    u.phone = (char *)(phone ? phone : "");
    u.email = (char *)(email ? email : "");
    u.password_hash = (char *)(hash ? hash : "$argon2id$fake");
    u.created_ms = 1700000000123;
    *conflict = NULL;
    int rc = store_user_create(s, &u, conflict, NULL);
    if (user_id)
        *user_id = u.user_id;
    return rc;
}

static inline uint64_t make_user(store *s, uint64_t app_id, const char *name, const char *phone,
                                 const char *email)
{
    uint64_t id = 0;
    const char *conflict = NULL;
    assert_int_equal(try_user(s, app_id, name, phone, email, NULL, &id, &conflict), STORE_OK);
    assert_null(conflict);
    assert_true(id != 0);
    return id;
}

/* A login index finds want_id, or answers want_rc. */
static inline void assert_lookup(store *s, uint64_t app_id, login_kind kind, const char *key,
                                 int want_rc, uint64_t want_id)
{
    uint64_t id = 0xdeadbeef;
    int rc = store_user_lookup(s, app_id, kind, key, &id);
    if (rc != want_rc)
        print_error("lookup app=%llu kind=%c key=%s: rc %d, want %d\n",
                    (unsigned long long)app_id, (char)kind, key, rc, want_rc);
    assert_int_equal(rc, want_rc);
    if (want_rc == STORE_OK)
        assert_int_equal(id, want_id);
}

/* A made-up token hash, different for each tag. */
static inline void fill_hash(uint8_t h[CRYPTO_HASH_BYTES], uint8_t tag)
{
    for (int i = 0; i < CRYPTO_HASH_BYTES; i++)
        h[i] = (uint8_t)(tag * 31 + i);
}

#define TEST_EXPIRE_MS 1700003600000

/* One login: session hash tagged `tag`, store token tag+100, push token
 * tag+200 (a device only with a guid), expiring at expire_ms; the commit
 * expects the stored hash `expect` and stores `fresh` (either may be NULL). */
static inline int do_login_checked(store *s, uint64_t app_id, uint64_t user_id, const char *guid,
                                   uint8_t tag, int32_t platform, const char *ua, uint32_t *sn,
                                   int64_t expire_ms, const char *expect, const char *fresh)
{
    store_session sess = TOKEND__V1__STORE__SESSION__INIT;
    store_login login;
    memset(&login, 0, sizeof login);
    sess.user_id = user_id;
    sess.app_id = app_id;
    sess.device_guid = (char *)(guid ? guid : "");
    sess.expire_ms = expire_ms;
    sess.access_key_secret = "secret";
    sess.created_ms = 1700000000000 + tag;
    login.session = &sess;
    fill_hash(login.session_hash, tag);
    fill_hash(login.store_token_hash, (uint8_t)(tag + 100));
    login.with_device = guid != NULL;
    fill_hash(login.push_token_hash, (uint8_t)(tag + 200));
    login.platform = platform;
    login.user_agent = ua;
    login.device_sn = 0xFFFFFFFF;
    login.expect_hash = expect;
    login.new_hash = fresh;
    int rc = store_login_commit(s, &login);
    if (sn)
        *sn = login.device_sn;
    return rc;
}

static inline int do_login_until(store *s, uint64_t app_id, uint64_t user_id, const char *guid,
                                 uint8_t tag, int32_t platform, const char *ua, uint32_t *sn,
                                 int64_t expire_ms)
{
    return do_login_checked(s, app_id, user_id, guid, tag, platform, ua, sn, expire_ms, NULL,
                            NULL);
}

static inline int do_login(store *s, uint64_t app_id, uint64_t user_id, const char *guid,
                           uint8_t tag, int32_t platform, const char *ua, uint32_t *sn)
{
    return do_login_until(s, app_id, user_id, guid, tag, platform, ua, sn, TEST_EXPIRE_MS);
}

/* A login that must succeed, on a device (guid) or not (NULL). */
static inline void login_ok(store *s, uint64_t app_id, uint64_t user_id, const char *guid,
                            uint8_t tag)
{
    assert_int_equal(do_login(s, app_id, user_id, guid, tag, 1, "ua", NULL), STORE_OK);
}

/* The push token of login `tag` resolves (or not) to app and guid. */
static inline void assert_push(store *s, uint8_t tag, int want_rc, uint64_t want_app,
                               const char *want_guid)
{
    uint8_t h[CRYPTO_HASH_BYTES];
    uint64_t app = 0;
    char guid[STORE_GUID_MAX + 1] = "";
    fill_hash(h, (uint8_t)(tag + 200));
    int rc = store_push_lookup(s, h, &app, guid, sizeof guid);
    if (rc != want_rc)
        print_error("push lookup of login %u: rc %d, want %d\n", tag, rc, want_rc);
    assert_int_equal(rc, want_rc);
    if (want_rc == STORE_OK) {
        assert_int_equal(app, want_app);
        assert_string_equal(guid, want_guid);
    }
}

/* Whether the session of login `tag` is still there. */
static inline int session_exists(store *s, uint8_t tag)
{
    uint8_t h[CRYPTO_HASH_BYTES];
    store_session *ss = NULL;
    fill_hash(h, tag);
    int rc = store_session_get(s, h, &ss);
    assert_true(rc == STORE_OK || rc == STORE_NOTFOUND);
    if (ss)
        protobuf_c_message_free_unpacked(&ss->base, NULL);
    return rc == STORE_OK;
}

/* What an admin action hands the store to record. */
static inline store_audit test_audit(uint64_t app_id, const char *action)
{
    store_audit e = TOKEND__V1__STORE__AUDIT_ENTRY__INIT;
    e.time_ms = 1700000000999;
    e.app_id = app_id;
    e.actor = "cli";
    e.action = (char *)action;
    e.detail = "";
    return e;
}

/* The audit log, one "action detail" line an entry, oldest first. */
typedef struct {
    size_t n;
    char line[16][96];
} audit_log;

static inline void audit_collect(const store_audit *e, void *arg)
{
    audit_log *log = arg;
    if (log->n < 16)
        snprintf(log->line[log->n], sizeof log->line[0], "%s %s", e->action, e->detail);
    log->n++;
}

static inline void read_audit(store *s, audit_log *log)
{
    memset(log, 0, sizeof *log);
    assert_int_equal(store_audit_list(s, audit_collect, log), STORE_OK);
}

/* --- a tokend_ctx, for tests that drive handlers ---------------------------- */

#define TEST_PWCOST ((crypto_pwcost){1, 8u * 1024 * 1024})

typedef struct {
    fixture f;             /* the store, with one app in f.app */
    tokend_config config;
    tokend_ctx ctx;
} fixture_ctx;

/* A store with one app, a pool of `workers` threads and `queue` waiting
 * places, the default throttle limits, a cheap Argon2id (and decoy). 0 or -1. */
static inline int fixture_ctx_open(fixture_ctx *fc, unsigned workers, unsigned queue)
{
    char err[256];
    memset(fc, 0, sizeof *fc);
    if (crypto_init() != 0 || !make_tmp_dir(fc->f.dir))
        return -1;
    if (store_open(&fc->f.s, fc->f.dir, TEST_MAPSIZE, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "store_open: %s\n", err);
        rm_dir(fc->f.dir);
        return -1;
    }
    fc->config.data_dir = fc->f.dir;
    fc->config.workers = workers;
    fc->config.queue = queue;
    fc->config.max_body = 64 * 1024;
    fc->config.deadline = 30;
    fc->config.pwcost = TEST_PWCOST;
    fc->config.throttle = (throttle_config){10, 100, 900};
    fc->ctx.config = &fc->config;
    fc->ctx.store = fc->f.s;
    fc->ctx.pool = pool_create(workers, queue);
    fc->ctx.throttle = throttle_create(fc->config.throttle);
    fc->ctx.decoy = decoy_create(fc->f.s, TEST_PWCOST);
    if (!fc->ctx.pool || !fc->ctx.throttle || !fc->ctx.decoy ||
        try_app(fc->f.s, "app", &fc->f.app) != STORE_OK) {
        pool_destroy(fc->ctx.pool);
        throttle_free(fc->ctx.throttle);
        decoy_free(fc->ctx.decoy);
        store_close(fc->f.s);
        rm_dir(fc->f.dir);
        return -1;
    }
    return 0;
}

static inline void fixture_ctx_close(fixture_ctx *fc)
{
    pool_destroy(fc->ctx.pool);
    throttle_free(fc->ctx.throttle);
    decoy_free(fc->ctx.decoy);
    store_close(fc->f.s);
    rm_dir(fc->f.dir);
}

#endif
