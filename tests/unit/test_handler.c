/* test_handler.c - handlers driven as the wire layer drives them, with no
 * h2o: a fake event loop (an rpc_loop whose post queues the job for the
 * test thread), a real worker pool and a real store. Writing handlers
 * (CreateUser, DisableUsers of rpc_admin.c) run on the pool and answer
 * through the closure once the test thread has run the loop; refusals
 * answer at once; a call past its deadline changes nothing; a full pool
 * answers UNAVAILABLE with a Retry-After. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "fixture.h"
#include "rpc.h"
#include "tokend/v1/tokend.pb-c.h"

/* --- the fake loop ------------------------------------------------------------ */

typedef struct {
    rpc_loop base;
    pthread_mutex_t lock;
    pthread_cond_t posted;
    pool_job *queue[8];
    size_t queued;
    unsigned posts, inflight;
    pthread_t thread;          /* the loop's thread: the test's */
    int posted_from_loop;      /* a post came from the loop's own thread */
} fake_loop;

static void fake_post(rpc_loop *l, pool_job *job)
{
    fake_loop *f = (fake_loop *)l;
    pthread_mutex_lock(&f->lock);
    assert_true(f->queued < 8);
    f->queue[f->queued++] = job;
    f->posts++;
    if (pthread_equal(pthread_self(), f->thread))
        f->posted_from_loop = 1;
    pthread_cond_signal(&f->posted);
    pthread_mutex_unlock(&f->lock);
}

static void fake_enter(rpc_loop *l)
{
    ((fake_loop *)l)->inflight++;
}

static void fake_leave(rpc_loop *l)
{
    ((fake_loop *)l)->inflight--;
}

/* Waits for one job to come back and hands it over on this thread, as a
 * server loop does. */
static void fake_run_once(fake_loop *f)
{
    pthread_mutex_lock(&f->lock);
    while (!f->queued)
        pthread_cond_wait(&f->posted, &f->lock);
    pool_job *job = f->queue[0];
    memmove(f->queue, f->queue + 1, --f->queued * sizeof *f->queue);
    pthread_mutex_unlock(&f->lock);
    rpc_job_returned(job);
}

/* --- a call, as the wire layer makes one ------------------------------------------ */

typedef struct {
    rpc_call call;             /* first: the closure's data is the call */
    int answered;
    status_code status;
    char message[RPC_MESSAGE_MAX];
    const ProtobufCMessageDescriptor *reply_type;
    int64_t user_id;
    char name[64];
    int value;
} test_call;

/* The closure: records the answer (the reply dies when this returns). */
static void on_answer(const ProtobufCMessage *reply, void *data)
{
    test_call *tc = data;
    tc->answered++;
    tc->status = reply ? ST_OK : tc->call.status;
    snprintf(tc->message, sizeof tc->message, "%s", reply ? "" : tc->call.message);
    if (reply) {
        tc->reply_type = reply->descriptor;
        if (reply->descriptor == &tokend__v1__user__descriptor) {
            const Tokend__V1__User *u = (const Tokend__V1__User *)reply;
            tc->user_id = u->user_id;
            snprintf(tc->name, sizeof tc->name, "%s", u->name);
        } else if (reply->descriptor == &tokend__v1__bool_reply__descriptor) {
            tc->value = ((const Tokend__V1__BoolReply *)reply)->value;
        }
    }
    tc->call.loop->leave(tc->call.loop);
}

typedef struct {
    fixture_ctx fc;
    fake_loop loop;
    char admin_token[CRYPTO_TOKEN_TEXTLEN];
} world;

static void call_init(world *w, test_call *tc)
{
    memset(tc, 0, sizeof *tc);
    tc->call.ctx = &w->fc.ctx;
    tc->call.closure = on_answer;
    tc->call.loop = &w->loop.base;
    tc->call.deadline_ms = rpc_clock_ms() + 30000;
    snprintf(tc->call.access_token, sizeof tc->call.access_token, "%s", w->admin_token);
    tc->call.peer = "127.0.0.1";
}

/* Starts a call of the Tokend service's `method`, as http.c does. */
static void invoke(test_call *tc, const char *method, const ProtobufCMessage *req)
{
    ProtobufCService *svc = rpc_services()[0];
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(svc->descriptor, method);
    assert_non_null(m);
    tc->call.loop->enter(tc->call.loop);
    svc->invoke(svc, (unsigned)(m - svc->descriptor->methods), req, on_answer, tc);
}

static int setup(void **state)
{
    world *w = calloc(1, sizeof *w);
    uint8_t raw[CRYPTO_TOKEN_BYTES], hash[CRYPTO_HASH_BYTES];
    store_session ss = TOKEND__V1__STORE__SESSION__INIT;
    if (!w || fixture_ctx_open(&w->fc, 1, 0) != 0)
        return -1;
    w->loop.base = (rpc_loop){fake_post, fake_enter, fake_leave};
    w->loop.thread = pthread_self();
    if (pthread_mutex_init(&w->loop.lock, NULL) != 0 ||
        pthread_cond_init(&w->loop.posted, NULL) != 0)
        return -1;
    crypto_token_new(raw, w->admin_token);
    crypto_token_hash(hash, raw, store_token_key(w->fc.ctx.store));
    ss.app_id = w->fc.f.app;
    ss.label = "test";
    if (store_admin_token_create(w->fc.ctx.store, hash, &ss, NULL) != STORE_OK)
        return -1;
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world *w = *state;
    fixture_ctx_close(&w->fc);
    pthread_cond_destroy(&w->loop.posted);
    pthread_mutex_destroy(&w->loop.lock);
    free(w);
    return 0;
}

static void create_user(world *w, test_call *tc, const char *name)
{
    Tokend__V1__CreateUserRequest req = TOKEND__V1__CREATE_USER_REQUEST__INIT;
    req.name = (char *)name;
    req.password = "correct horse battery";
    invoke(tc, "CreateUser", &req.base);
}

/* --- tests ------------------------------------------------------------------------- */

/* The work runs on a worker; the answer comes through the loop's post and
 * the closure, on the loop's thread. */
static void test_writing_handler_answers_through_the_loop(void **state)
{
    world *w = *state;
    test_call tc;
    store_user *u = NULL;
    call_init(w, &tc);
    create_user(w, &tc, "alice");
    assert_int_equal(w->loop.inflight, 1);
    fake_run_once(&w->loop);
    assert_int_equal(tc.answered, 1);
    assert_int_equal(tc.status, ST_OK);
    assert_ptr_equal(tc.reply_type, &tokend__v1__user__descriptor);
    assert_string_equal(tc.name, "alice");
    assert_true(tc.user_id > 0);
    assert_int_equal(w->loop.posts, 1);
    assert_false(w->loop.posted_from_loop);   /* posted by the worker */
    assert_int_equal(w->loop.inflight, 0);
    assert_int_equal(store_user_get(w->fc.ctx.store, (uint64_t)tc.user_id, &u), STORE_OK);
    assert_string_equal(u->name, "alice");
    assert_int_equal(u->app_id, w->fc.f.app);
    protobuf_c_message_free_unpacked(&u->base, NULL);
}

/* A second writing handler, on the user the first made: BoolReply true. */
static void test_disable_users(void **state)
{
    world *w = *state;
    test_call tc;
    store_user *u = NULL;
    call_init(w, &tc);
    create_user(w, &tc, "bob");
    fake_run_once(&w->loop);
    assert_int_equal(tc.status, ST_OK);
    int64_t id = tc.user_id;

    Tokend__V1__UserIdList req = TOKEND__V1__USER_ID_LIST__INIT;
    req.list = &id;
    req.n_list = 1;
    call_init(w, &tc);
    invoke(&tc, "DisableUsers", &req.base);
    fake_run_once(&w->loop);
    assert_int_equal(tc.answered, 1);
    assert_int_equal(tc.status, ST_OK);
    assert_ptr_equal(tc.reply_type, &tokend__v1__bool_reply__descriptor);
    assert_int_equal(tc.value, 1);
    assert_int_equal(store_user_get(w->fc.ctx.store, (uint64_t)id, &u), STORE_OK);
    assert_true(u->disabled);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    assert_int_equal(w->loop.inflight, 0);
}

/* A refusal is answered at once, on the loop, and nothing goes to the pool. */
static void test_refusal_answers_at_once(void **state)
{
    world *w = *state;
    test_call tc;
    call_init(w, &tc);
    tc.call.access_token[0] = '\0';
    create_user(w, &tc, "carol");
    assert_int_equal(tc.answered, 1);
    assert_int_equal(tc.status, ST_UNAUTHENTICATED);
    assert_string_equal(tc.message, "access-token header is required");
    assert_int_equal(w->loop.posts, 0);
    assert_int_equal(w->loop.inflight, 0);
}

/* Work that reaches a worker after its deadline is not done. */
static void test_past_deadline_changes_nothing(void **state)
{
    world *w = *state;
    test_call tc;
    uint64_t id = 0;
    call_init(w, &tc);
    tc.call.deadline_ms = rpc_clock_ms() - 1;
    create_user(w, &tc, "dave");
    fake_run_once(&w->loop);
    assert_int_equal(tc.answered, 1);
    assert_int_equal(tc.status, ST_DEADLINE_EXCEEDED);
    assert_int_equal(store_user_lookup(w->fc.ctx.store, w->fc.f.app, LOGIN_NAME, "dave", &id),
                     STORE_NOTFOUND);
}

/* --- a full pool ------------------------------------------------------------------------ */

typedef struct {
    pool_job job;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int started, release;
} blocker;

static void block_work(pool_job *job)
{
    blocker *b = (blocker *)job;
    pthread_mutex_lock(&b->lock);
    b->started = 1;
    pthread_cond_broadcast(&b->cond);
    while (!b->release)
        pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
}

static void block_post(pool_job *job)
{
}

/* One worker, no queue, the worker busy: the call is refused at once. */
static void test_full_pool_answers_unavailable(void **state)
{
    world *w = *state;
    blocker b = {.job = {.work = block_work, .post = block_post}};
    test_call tc;
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    assert_int_equal(pool_submit(w->fc.ctx.pool, &b.job), 0);
    pthread_mutex_lock(&b.lock);
    while (!b.started)
        pthread_cond_wait(&b.cond, &b.lock);
    pthread_mutex_unlock(&b.lock);

    call_init(w, &tc);
    create_user(w, &tc, "erin");
    assert_int_equal(tc.answered, 1);
    assert_int_equal(tc.status, ST_UNAVAILABLE);
    assert_int_equal(tc.call.retry_after, 1);
    assert_int_equal(w->loop.posts, 0);

    pthread_mutex_lock(&b.lock);
    b.release = 1;
    pthread_cond_broadcast(&b.cond);
    pthread_mutex_unlock(&b.lock);
    pool_destroy(w->fc.ctx.pool);   /* joins the worker: b is done with */
    w->fc.ctx.pool = NULL;
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);
}

/* --- Verify and the cache of checked admin tokens ------------------------------------ */

/* A new admin token of the fixture's app: its text, and its hash in hash. */
static void new_admin(world *w, char text[CRYPTO_TOKEN_TEXTLEN], uint8_t hash[CRYPTO_HASH_BYTES])
{
    uint8_t raw[CRYPTO_TOKEN_BYTES];
    store_session ss = TOKEND__V1__STORE__SESSION__INIT;
    crypto_token_new(raw, text);
    crypto_token_hash(hash, raw, store_token_key(w->fc.ctx.store));
    ss.app_id = w->fc.f.app;
    ss.label = "verify";
    assert_int_equal(store_admin_token_create(w->fc.ctx.store, hash, &ss, NULL), STORE_OK);
}

static status_code verify(world *w, const char *caller, const char *token)
{
    test_call tc;
    Tokend__V1__VerifyRequest req = TOKEND__V1__VERIFY_REQUEST__INIT;
    call_init(w, &tc);
    snprintf(tc.call.access_token, sizeof tc.call.access_token, "%s", caller);
    req.token = (char *)token;
    invoke(&tc, "Verify", &req.base);
    assert_int_equal(tc.answered, 1);   /* Verify answers on the loop, at once */
    return tc.status;
}

static int cached(world *w, const char *caller)
{
    test_call tc;
    call_init(w, &tc);
    snprintf(tc.call.access_token, sizeof tc.call.access_token, "%s", caller);
    return rpc_admin_cache_find(&tc.call) != NULL;
}

/* A checked admin token is reused until any admin token ends; its own
 * revocation (by any writer: here the store, as the CLI would) refuses it
 * at the next call, cached or not. */
static void test_admin_cache_revocation(void **state)
{
    world *w = *state;
    char target[CRYPTO_TOKEN_TEXTLEN], other[CRYPTO_TOKEN_TEXTLEN];
    uint8_t target_hash[CRYPTO_HASH_BYTES], other_hash[CRYPTO_HASH_BYTES], mine[CRYPTO_HASH_BYTES];
    uint8_t raw[CRYPTO_TOKEN_BYTES];
    uint64_t gen0, gen1;

    rpc_admin_cache_clear();
    new_admin(w, target, target_hash);
    new_admin(w, other, other_hash);
    assert_int_equal(crypto_token_parse(raw, w->admin_token, strlen(w->admin_token)), 0);
    crypto_token_hash(mine, raw, store_token_key(w->fc.ctx.store));

    assert_false(cached(w, w->admin_token));
    assert_int_equal(verify(w, w->admin_token, target), ST_OK);
    assert_true(cached(w, w->admin_token));
    assert_int_equal(verify(w, w->admin_token, target), ST_OK);

    /* Another admin token ends: the generation moves, the entry is dropped
     * and the caller checked afresh (still good, so cached again). */
    assert_int_equal(store_sessions_get_gen(w->fc.ctx.store, &gen0, 0, NULL, NULL, NULL), STORE_OK);
    assert_int_equal(store_session_revoke(w->fc.ctx.store, other_hash, NULL), STORE_OK);
    assert_int_equal(store_sessions_get_gen(w->fc.ctx.store, &gen1, 0, NULL, NULL, NULL), STORE_OK);
    assert_true(gen1 != gen0);
    assert_int_equal(verify(w, w->admin_token, target), ST_OK);
    assert_true(cached(w, w->admin_token));

    /* The caller's own token is revoked: refused at once, and forgotten. */
    assert_int_equal(store_session_revoke(w->fc.ctx.store, mine, NULL), STORE_OK);
    assert_int_equal(verify(w, w->admin_token, target), ST_UNAUTHENTICATED);
    assert_false(cached(w, w->admin_token));
    assert_int_equal(verify(w, w->admin_token, target), ST_UNAUTHENTICATED);
}

/* The cache keeps the per-call checks: another app_id is refused; a user's
 * logout does not move the admin generation; a token of another store (a
 * second data directory in the same process) never matches. */
static void test_admin_cache_checks_each_call(void **state)
{
    world *w = *state;
    char target[CRYPTO_TOKEN_TEXTLEN];
    uint8_t target_hash[CRYPTO_HASH_BYTES];
    uint64_t gen0, gen1;
    test_call tc;
    Tokend__V1__VerifyRequest req = TOKEND__V1__VERIFY_REQUEST__INIT;

    rpc_admin_cache_clear();
    new_admin(w, target, target_hash);
    assert_int_equal(verify(w, w->admin_token, target), ST_OK);
    assert_true(cached(w, w->admin_token));

    call_init(w, &tc);
    tc.call.app_id = w->fc.f.app + 1;
    req.token = target;
    invoke(&tc, "Verify", &req.base);
    assert_int_equal(tc.status, ST_UNAUTHENTICATED);
    assert_non_null(strstr(tc.message, "app_id"));

    /* A user session's end leaves the generation alone. */
    uint64_t uid = make_user(w->fc.ctx.store, w->fc.f.app, "gen-user", NULL, NULL);
    uint8_t h[CRYPTO_HASH_BYTES];
    login_ok(w->fc.ctx.store, w->fc.f.app, uid, "dev-1", 7);
    fill_hash(h, 7);
    assert_int_equal(store_sessions_get_gen(w->fc.ctx.store, &gen0, 0, NULL, NULL, NULL), STORE_OK);
    assert_int_equal(store_session_revoke(w->fc.ctx.store, h, NULL), STORE_OK);
    assert_int_equal(store_sessions_get_gen(w->fc.ctx.store, &gen1, 0, NULL, NULL, NULL), STORE_OK);
    assert_true(gen0 == gen1);

    /* Another store: the cached entry is not its. */
    fixture_ctx other;
    assert_int_equal(fixture_ctx_open(&other, 1, 0), 0);
    call_init(w, &tc);
    tc.call.ctx = &other.ctx;
    assert_null(rpc_admin_cache_find(&tc.call));
    fixture_ctx_close(&other);
}

/* A call the cache lets through records for the access log what a full
 * check does: the admin's app, and no user. */
static void test_admin_cache_logs_the_app(void **state)
{
    world *w = *state;
    char target[CRYPTO_TOKEN_TEXTLEN];
    uint8_t target_hash[CRYPTO_HASH_BYTES];
    Tokend__V1__VerifyRequest req = TOKEND__V1__VERIFY_REQUEST__INIT;

    rpc_admin_cache_clear();
    new_admin(w, target, target_hash);
    req.token = target;
    for (int i = 0; i < 3; i++) {
        test_call tc;
        call_init(w, &tc);
        snprintf(tc.call.access_token, sizeof tc.call.access_token, "%s", w->admin_token);
        invoke(&tc, "Verify", &req.base);
        assert_int_equal(tc.status, ST_OK);
        assert_int_equal(cached(w, w->admin_token), 1);
        assert_int_equal(tc.call.log_app_id, w->fc.f.app);
        assert_int_equal(tc.call.log_user_id, 0);
    }
}

/* Only the cached token's exact text finds its entry (the find measures
 * nothing: it compares the token and its NUL): not the text with a
 * character more, nor its first 42 with the rest of it still in the
 * array past the NUL, nor an empty text over an array of zeros. */
static void test_admin_cache_exact_text(void **state)
{
    world *w = *state;
    char target[CRYPTO_TOKEN_TEXTLEN], longer[CRYPTO_TOKEN_TEXTLEN + 1];
    uint8_t target_hash[CRYPTO_HASH_BYTES];
    test_call tc;

    rpc_admin_cache_clear();
    new_admin(w, target, target_hash);
    call_init(w, &tc);
    assert_null(rpc_admin_cache_find(&tc.call));   /* an empty cache: its slots are zeros */
    assert_int_equal(verify(w, w->admin_token, target), ST_OK);
    assert_true(cached(w, w->admin_token));

    snprintf(longer, sizeof longer, "%sA", w->admin_token);
    assert_false(cached(w, longer));
    call_init(w, &tc);
    tc.call.access_token[CRYPTO_TOKEN_TEXTLEN - 2] = '\0';
    assert_null(rpc_admin_cache_find(&tc.call));
    memset(tc.call.access_token, 0, sizeof tc.call.access_token);
    assert_null(rpc_admin_cache_find(&tc.call));
    assert_int_equal(verify(w, longer, target), ST_UNAUTHENTICATED);
    assert_true(cached(w, w->admin_token));
}

/* The user agent and the peer are read from the request until the call
 * outlives it: rpc_call_keep copies them, so the request's bytes may go.
 * The agent comes out printable ASCII and cut, kept or not. */
static void test_call_keeps_agent_and_peer(void **state)
{
    static const char head[] = "Mozilla/5.0 (X11)\ttab caf\xe9 \x7f\x01~";
    static const char want_head[] = "Mozilla/5.0 (X11)?tab caf? ??~";
    char ua[RPC_AGENT_MAX + 40], peer[64];
    rpc_call c;

    rpc_call_clear(&c);
    assert_string_equal(rpc_user_agent(&c), "");
    assert_string_equal(c.peer, "");

    memset(ua, 'a', sizeof ua);
    memcpy(ua, head, sizeof head - 1);
    snprintf(peer, sizeof peer, "192.0.2.7");
    c.agent_src = ua, c.agent_len = sizeof ua;
    c.peer = peer;
    rpc_call_keep(&c);
    memset(ua, 'x', sizeof ua);                      /* the request is gone */
    snprintf(peer, sizeof peer, "198.51.100.1");
    assert_string_equal(c.peer, "192.0.2.7");
    const char *got = rpc_user_agent(&c);
    assert_int_equal(strlen(got), RPC_AGENT_MAX - 1);
    assert_memory_equal(got, want_head, sizeof want_head - 1);
    for (size_t i = sizeof want_head - 1; i < RPC_AGENT_MAX - 1; i++)
        assert_int_equal(got[i], 'a');

    /* not kept: read at first use, then the copy stays */
    rpc_call_clear(&c);
    memcpy(ua, "short/1\x80", 8);
    c.agent_src = ua, c.agent_len = 8;
    assert_string_equal(rpc_user_agent(&c), "short/1?");
    ua[0] = 'S';
    assert_string_equal(rpc_user_agent(&c), "short/1?");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_writing_handler_answers_through_the_loop),
        T(test_disable_users),
        T(test_refusal_answers_at_once),
        T(test_past_deadline_changes_nothing),
        T(test_full_pool_answers_unavailable),
        T(test_admin_cache_revocation),
        T(test_admin_cache_checks_each_call),
        T(test_admin_cache_exact_text),
        T(test_admin_cache_logs_the_app),
        T(test_call_keeps_agent_and_peer),
    };
    return cmocka_run_group_tests_name("handler", tests, NULL, NULL);
}
