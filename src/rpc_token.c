/* rpc_token.c - the three documented login RPCs (/token/id, /token/login,
 * /token/user): check the password on the worker pool, then issue a
 * session (access token, file-storage credential, connection key) and, for
 * a named device, a push token bound to it.
 *
 * Unknown users are verified against a decoy hash of the cost a real
 * account of that name would have (decoy.c) and get the same answer as a
 * wrong password, so neither timing nor text tells them apart.
 *
 * The account is read once, on the loop, before the throttle (so that
 * its buckets are the account's, whatever form of name the login used;
 * an admin's login that names its user twice reads the body's too);
 * the commit re-reads it in its write transaction and refuses if it
 * changed meanwhile (deleted, disabled, moved, or a new password). */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "decoy.h"
#include "metrics.h"
#include "names.h"
#include "rpc.h"
#include "rpc_handlers.h"

#define DEFAULT_TTL_MS (7LL * 24 * 3600 * 1000)
#define BAD_CREDENTIALS "invalid credentials: unknown user or wrong password"

/* What names the account: the request's id, or a classified login name. */
typedef struct {
    uint64_t user_id;
    int by_key;
    login_kind kind;
    char key[NAMES_EMAIL_MAX + 2];
    login_kind legacy_kind;
    char legacy[NAMES_EMAIL_MAX + 2];   /* "": none (names_legacy_key) */
} login_name;

typedef struct {
    rpc_task task;
    throttle *throttle;              /* for the finish: the call may be gone */
    metrics_loop *metrics;           /* the loop's counters (NULL: none) */
    throttle_ticket ticket;
    int throttled;                   /* the ticket took attempts */
    int counted;                     /* a password login that reached the pool (metrics) */
    uint64_t app_id;
    int64_t ttl_ms;
    int32_t encrypt_type;
    uint64_t user_id;                /* 0: no such user (the decoy is checked) */
    login_name name;                 /* as given: looked up again after the decoy */
    uint64_t fresh;                  /* cluster mode: the poll to wait for (store_fresh_ticket) */
    char account[NAMES_EMAIL_MAX + 26];  /* who the guess is about: throttle, decoy */
    int disabled;
    char hash[CRYPTO_PWHASH_STRBYTES];   /* the hash checked; the commit insists on it */
    char password[CRYPTO_PASSWORD_MAX + 1];
    size_t password_len;
    char device_guid[STORE_GUID_MAX + 1];
    int32_t platform;
    char user_agent[RPC_AGENT_MAX];
    int trusted;                     /* an admin token vouches: no password */
    rpc_auth auth;                   /* the admin, when trusted */
    Tokend__V1__TokenReply reply;
    char token[CRYPTO_TOKEN_TEXTLEN], store_token[CRYPTO_TOKEN_TEXTLEN];
    char push_token[CRYPTO_TOKEN_TEXTLEN], secret[48], public_key[48];
    char app_public[48];             /* the app's newest key pair, base64 ("" : none) */
    uint32_t app_key_id;
} login_task;

/* Bytes of the per-session connection key for each encrypt_type. */
static size_t session_key_bytes(int32_t encrypt_type)
{
    switch (encrypt_type) {
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_AES_CBC_128: return 16;
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_AES_CBC_256:
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_CUSTOM:
    case TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_XCHACHA20_POLY1305: return 32;
    default: return 0;
    }
}

/* What the login checks of the account it found; u is freed. */
static void take_account(login_task *lt, store_user *u)
{
    lt->user_id = u->user_id;
    lt->disabled = u->disabled;
    snprintf(lt->hash, sizeof lt->hash, "%s", u->password_hash);
    protobuf_c_message_free_unpacked(&u->base, NULL);
}

/* The account a login names: by its id, or by its name's key. A name
 * with an old key (names_legacy_key: only an account made before names
 * were canonical has one) looks there first, so that such an account is
 * found by the bytes it always used even after another took the
 * canonical form of its name. */
static int find_account(tokend_ctx *ctx, uint64_t app_id, const login_name *n, const char *device_guid,
                        store_user **u, int *device_known)
{
    int rc = STORE_NOTFOUND;
    if (n->by_key && n->legacy[0])
        rc = store_login_find(ctx->store, app_id, n->legacy_kind, n->legacy, 0, device_guid, u,
                              device_known);
    if (rc == STORE_NOTFOUND)
        rc = store_login_find(ctx->store, app_id, n->by_key ? n->kind : 0, n->key, n->user_id,
                              device_guid, u, device_known);
    return rc;
}

/* Whether n names the account user_id: 1 or 0, or the store's error (a
 * negative STORE_* code). */
static int names_user(tokend_ctx *ctx, uint64_t app_id, const login_name *n, uint64_t user_id)
{
    store_user *u = NULL;
    int device_known;
    int rc = find_account(ctx, app_id, n, NULL, &u, &device_known);
    if (!u)
        return rc == STORE_OK || rc == STORE_NOTFOUND ? 0 : rc;
    rc = u->user_id == user_id;
    protobuf_c_message_free_unpacked(&u->base, NULL);
    return rc;
}

/* The account of a name not found when the login began, if the replica
 * has it now (made on another node a moment before). A known name is read
 * again too, and left as it was checked (the commit insists on that hash):
 * the same work either way. */
static int found_now(login_task *lt, tokend_ctx *ctx)
{
    store_user *u = NULL;
    int device_known;
    if (find_account(ctx, lt->app_id, &lt->name, NULL, &u, &device_known) != STORE_OK || !u)
        return 0;
    if (lt->user_id) {
        protobuf_c_message_free_unpacked(&u->base, NULL);
        return 0;
    }
    take_account(lt, u);
    return 1;
}

/* The password check, on the pool. Unknown users are checked against the
 * decoy hash picked at the start, and fail the same way. */
static int check_password(login_task *lt, tokend_ctx *ctx, char fresh[CRYPTO_PWHASH_STRBYTES])
{
    fresh[0] = '\0';
    if (lt->trusted)
        return 0;
    if (!lt->user_id && decoy_hash(ctx->decoy, lt->app_id, lt->account, lt->hash) != 0) {
        rpc_task_fail(&lt->task, ST_UNAVAILABLE, "cannot check the password now, retry");
        return -1;
    }
    int wrong = crypto_password_verify(lt->hash, lt->password, lt->password_len) != 0;
    /* Cluster mode: what any node committed before this login began is
     * here once the poll of its ticket has ended. Known name or not, the
     * login waits for that after its hash (by then the poll has mostly
     * ended), so an unknown name costs what a known one does; one found
     * only now is checked again, against its own hash. */
    store_fresh_wait(ctx->store, lt->fresh);
    if (lt->fresh) {
        lt->fresh = 0;
        if (found_now(lt, ctx))
            return check_password(lt, ctx, fresh);
    }
    if (wrong || !lt->user_id) {
        rpc_task_fail(&lt->task, ST_UNAUTHENTICATED, BAD_CREDENTIALS);
        return -1;
    }
    if (lt->disabled) {
        rpc_task_fail(&lt->task, ST_PERMISSION_DENIED, "user is disabled");
        return -1;
    }
    /* Upgrade a hash made with an older cost while the password is at
     * hand; the login's own commit stores it. */
    if (crypto_password_needs_rehash(lt->hash, ctx->config->pwcost, lt->password_len) == 1 &&
        crypto_password_hash(fresh, lt->password, lt->password_len, ctx->config->pwcost) != 0)
        fresh[0] = '\0';
    return 0;
}

static void run_login(rpc_task *task)
{
    login_task *lt = (login_task *)task;
    rpc_call *call = task->call;
    tokend_ctx *ctx = call->ctx;
    uint8_t raw[CRYPTO_TOKEN_BYTES];
    uint8_t sealed[CRYPTO_TOKEN_TEXTLEN - 1 + CRYPTO_SEAL_OVERHEAD];
    char fresh[CRYPTO_PWHASH_STRBYTES];
    store_session session = TOKEND__V1__STORE__SESSION__INIT;
    store_login login = {.session = &session, .platform = lt->platform,
                         .user_agent = lt->user_agent};
    size_t key_bytes = session_key_bytes(lt->encrypt_type);

    int checked = check_password(lt, ctx, fresh);
    crypto_wipe(lt->password, sizeof lt->password);
    pool_job_waits();   /* the hash is done: what is left waits for the commit */
    if (checked != 0)
        return;
    /* The commit refuses if the account changed since it was read. */
    login.expect_hash = lt->trusted ? NULL : lt->hash;
    login.new_hash = fresh[0] ? fresh : NULL;
    /* The newest token-hash key, as it is now (`app rotate-key` may have
     * added one from another process): new sessions use it at once. */
    store_keys_refresh(ctx->store);
    const store_keyring *ring = store_keys(ctx->store);
    const uint8_t *key = ring->keys[0].key;
    session.key_id = ring->keys[0].id;
    /* A token an admin obtained for a user is an admin action. */
    if (lt->trusted)
        login.audit = rpc_task_audit(task, &lt->auth, "IssueToken", "user_id=%llu",
                                     (unsigned long long)lt->user_id);

    crypto_token_new(raw, lt->token);
    crypto_token_hash(login.session_hash, raw, key);
    crypto_token_new(raw, lt->store_token);
    crypto_token_hash(login.store_token_hash, raw, key);
    crypto_random_base64(lt->secret, sizeof lt->secret, 32);
    lt->public_key[0] = '\0';
    if (lt->encrypt_type == TOKEND__V1__ENCRYPT_TYPE__ENCRYPT_XCHACHA20_POLY1305 &&
        lt->app_public[0]) {
        /* the app's key pair: its public half, and which pair it is */
        memcpy(lt->public_key, lt->app_public, sizeof lt->public_key);
        session.app_key_id = lt->app_key_id;
    } else if (key_bytes) {
        crypto_random_base64(lt->public_key, sizeof lt->public_key, key_bytes);
    }
    lt->push_token[0] = '\0';
    if (lt->device_guid[0]) {
        login.with_device = 1;
        crypto_token_new(raw, lt->push_token);
        crypto_token_hash(login.push_token_hash, raw, key);
        crypto_seal(sealed, lt->push_token, CRYPTO_TOKEN_TEXTLEN - 1, key);
        login.push_token_sealed = sealed;
        login.push_token_sealed_len = sizeof sealed;
    }
    crypto_wipe(raw, sizeof raw);

    session.user_id = lt->user_id;
    session.app_id = lt->app_id;
    session.device_guid = lt->device_guid;
    session.created_ms = rpc_now_ms();
    session.expire_ms = session.created_ms + lt->ttl_ms;
    session.access_key_secret = lt->secret;
    session.encrypt_type = lt->encrypt_type;
    session.public_key = lt->public_key;
    if (rpc_past_deadline(call)) {
        rpc_task_fail(task, ST_DEADLINE_EXCEEDED, "deadline exceeded");
        return;
    }
    int rc = store_login_commit(ctx->store, &login);
    crypto_wipe(fresh, sizeof fresh);
    if (rc == STORE_NOTFOUND) {
        rpc_task_fail(task, lt->trusted ? ST_NOT_FOUND : ST_UNAUTHENTICATED, "%s",
                      lt->trusted ? "unknown user_id" : BAD_CREDENTIALS);
        return;
    }
    if (rc == STORE_CHANGED) {
        rpc_task_fail(task, ST_UNAUTHENTICATED,
                      "the account changed during the login (password changed, account "
                      "disabled or deleted): log in again");
        return;
    }
    if (rc != STORE_OK) {
        rpc_task_fail(task, ST_UNAVAILABLE, "%s", store_strerror(rc));
        return;
    }
    call->log_app_id = lt->app_id;
    call->log_user_id = lt->user_id;
    tokend__v1__token_reply__init(&lt->reply);
    lt->reply.user_id = (int64_t)lt->user_id;
    lt->reply.token = lt->token;
    lt->reply.expire = session.expire_ms;
    lt->reply.store_token = lt->store_token;
    lt->reply.access_key_secret = lt->secret;
    lt->reply.encrypt_type = lt->encrypt_type;
    lt->reply.public_key = lt->public_key;
    lt->reply.push_token = lt->push_token;
    task->reply = &lt->reply.base;
}

/* On the loop, once answered (or refused by a full pool): only a wrong
 * password keeps its throttle attempt; a right one makes the address known. */
static void login_cleanup(rpc_task *task)
{
    login_task *lt = (login_task *)task;
    if (lt->metrics && !lt->trusted && lt->counted) {
        if (task->status == ST_OK)
            METRIC_ADD(lt->metrics->logins_ok, 1);
        else
            METRIC_ADD(lt->metrics->logins_failed, 1);
    }
    if (lt->throttled) {
        if (task->status == ST_OK)
            throttle_succeeded(lt->throttle, &lt->ticket);
        else if (task->status != ST_UNAUTHENTICATED)
            throttle_refund(lt->throttle, &lt->ticket);
    }
    crypto_wipe(lt->password, sizeof lt->password);
    crypto_wipe(lt->hash, sizeof lt->hash);
}

/* The account key of the throttle: the account a name resolved to, so all
 * its login forms share one bucket; else the name, so that unknown names
 * are limited too. With user_id 0, the name as given: the key of the
 * client's own bucket, whether or not an account has it (throttle.h). */
static void throttle_account(char *out, size_t outlen, const login_name *n, uint64_t user_id)
{
    if (user_id)
        snprintf(out, outlen, "u:%llu", (unsigned long long)user_id);
    else if (n->by_key)
        snprintf(out, outlen, "%c:%s", (char)n->kind, n->key);
    else
        snprintf(out, outlen, "id:%llu", (unsigned long long)n->user_id);
}

/* Checks what all three logins share, reads the account (one read
 * transaction; two for an admin's with a body naming its user), takes a
 * throttle attempt and sends the task to the pool.
 * An admin's login (user_id or group_id header) whose body names a user
 * too (`body`, from its field `body_field`) must name the same one: a back
 * end that names two users has a bug, and a token for either could be the
 * wrong one. */
static void login_start(rpc_call *call, login_task *lt, const login_name *name,
                        const login_name *body, const char *body_field,
                        const char *password, const char *device_guid, int32_t platform,
                        const char *user_agent)
{
    tokend_ctx *ctx = call->ctx;
    store_app *app = NULL;
    store_user *u = NULL;
    int device_known = 0, rc;
    size_t pwlen = strlen(password), guidlen = strlen(device_guid);

    if (pwlen == 0 && !lt->trusted) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "password is required");
        goto refused;
    }
    if (pwlen > CRYPTO_PASSWORD_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "password must be at most %d bytes", CRYPTO_PASSWORD_MAX);
        goto refused;
    }
    if (platform < 0 || platform > RPC_PLATFORM_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT,
                 "platform must be 1 ios, 2 android, 3 windows, 4 mac, 5 linux or 6 web");
        goto refused;
    }
    if (guidlen > STORE_GUID_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "device_guid must be at most %d bytes", STORE_GUID_MAX);
        goto refused;
    }
    if (rpc_app(call, &app) != 0)
        goto refused;
    lt->app_id = app->app_id;
    lt->ttl_ms = app->token_ttl_ms > 0 ? app->token_ttl_ms : DEFAULT_TTL_MS;
    lt->encrypt_type = app->encrypt_type;
    if (app->n_keys) {
        const Tokend__V1__Store__AppKey *k = app->keys[app->n_keys - 1];
        if (crypto_base64_encode(lt->app_public, sizeof lt->app_public, k->public_key.data,
                                 k->public_key.len, CRYPTO_BASE64) == 0)
            lt->app_key_id = k->key_id;
        else
            lt->app_public[0] = '\0';
    }
    protobuf_c_message_free_unpacked(&app->base, NULL);

    rc = find_account(ctx, lt->app_id, name, device_guid, &u, &device_known);
    if (rc != STORE_OK && rc != STORE_NOTFOUND) {
        rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
        goto refused;
    }
    /* Cluster mode: an account another node made a moment ago. An admin's
     * login is parked (the handler runs again from the start: nothing was
     * taken yet); a password login is not, so that an unknown name takes
     * no longer than a known one: it looks again after its hash. */
    if (rc == STORE_NOTFOUND && lt->trusted && rpc_wait_fresh(call))
        goto refused;
    if (lt->trusted && !u) {
        rpc_fail(call, ST_NOT_FOUND, "unknown user_id");
        goto refused;
    }
    if (lt->trusted && body && (rc = names_user(ctx, lt->app_id, body, u->user_id)) != 1) {
        unsigned long long header_user = u->user_id;
        protobuf_c_message_free_unpacked(&u->base, NULL);
        /* Cluster mode: the name may be a rename another node made a
         * moment ago; the handler runs again once the replica has it. */
        if (rc == 0 && rpc_wait_fresh(call))
            goto refused;
        if (rc < 0)
            rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
        else
            rpc_fail(call, ST_INVALID_ARGUMENT,
                     "%s in the body names another user than the user_id or group_id header (%llu)",
                     body_field, header_user);
        goto refused;
    }
    if (u)
        take_account(lt, u);
    /* An admin's login hashes nothing: a disabled user is refused here,
     * as the password login refuses them once the password is right. */
    if (lt->trusted && lt->disabled) {
        rpc_fail(call, ST_PERMISSION_DENIED, "user is disabled");
        goto refused;
    }
    if (!lt->trusted) {
        char given[sizeof lt->account];
        throttle_account(given, sizeof given, name, 0);
        throttle_account(lt->account, sizeof lt->account, name, lt->user_id);
        int wait = throttle_take(ctx->throttle, lt->app_id, given, lt->account, call->peer,
                                 device_known, &lt->ticket);
        if (wait) {
            if (call->loop && call->loop->metrics)
                METRIC_ADD(call->loop->metrics->logins_throttled, 1);
            call->retry_after = wait;
            rpc_fail(call, ST_RESOURCE_EXHAUSTED,
                     "too many failed logins for this account or address: retry in %d s", wait);
            goto refused;
        }
        lt->throttled = 1;
        lt->throttle = ctx->throttle;
        lt->task.ticket = &lt->ticket;  /* cluster mode: the take happens on the worker */
    }
    memcpy(lt->password, password, pwlen + 1);
    lt->password_len = pwlen;
    memcpy(lt->device_guid, device_guid, guidlen + 1);
    lt->platform = platform ? platform : call->platform;
    snprintf(lt->user_agent, sizeof lt->user_agent, "%s", *user_agent ? user_agent : rpc_user_agent(call));
    lt->name = *name;
    lt->fresh = lt->trusted ? 0 : store_fresh_ticket(ctx->store);
    lt->task.cleanup = login_cleanup;
    lt->metrics = call->loop ? call->loop->metrics : NULL;
    lt->counted = 1;
    /* A password check waits behind at most one other per worker, or is
     * refused at once: a login storm gets quick 503s, not a long queue. */
    lt->task.job.slow = !lt->trusted;
    rpc_task_start(&lt->task, run_login);  /* a full pool answers, refunds and frees */
    return;
refused:
    login_cleanup(&lt->task);
    free(lt);
}

/* A login may carry an admin token with a user_id or group_id header: the
 * app's server getting a token for its user, without the password. A user
 * token with those headers is refused; one without them is ignored. */
static login_task *login_new(rpc_call *call, login_name *name)
{
    rpc_auth auth;
    login_task *lt;
    int trusted = call->access_token[0] && (call->as_user_id || call->as_group_id);
    memset(name, 0, sizeof *name);
    if (trusted) {
        if (rpc_auth_user(call, &auth) != 0)
            return NULL;
        if (!auth.admin) {
            rpc_fail(call, ST_PERMISSION_DENIED, "user_id and group_id headers need an admin token");
            return NULL;
        }
    }
    if (!(lt = rpc_task_new(call, sizeof *lt)))
        return NULL;
    if (trusted) {
        lt->trusted = 1;
        lt->auth = auth;
        name->user_id = auth.user_id;
        call->app_id = auth.app_id;
    }
    return lt;
}

/* Classifies `text` into the name's lookup key; 0, or -1 with the call failed. */
static int set_login_key(rpc_call *call, login_name *n, const char *field, const char *text,
                         int username_only)
{
    const char *why = NULL;
    size_t len = strlen(text);
    if (len == 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s is required", field);
        return -1;
    }
    if (names_classify(text, len, &n->kind, n->key, sizeof n->key, &why) != 0 ||
        (username_only && n->kind != LOGIN_NAME)) {
        /* A name no user can have is still just a failed login. */
        n->kind = LOGIN_NAME;
        n->key[0] = '\0';
    }
    if (!names_legacy_key(text, len, n->kind, n->key, &n->legacy_kind, n->legacy, sizeof n->legacy) ||
        (username_only && n->legacy_kind != LOGIN_NAME))
        n->legacy[0] = '\0';
    n->by_key = 1;
    return 0;
}

RPC_HANDLER(token_by_id, TokenByIdRequest, TokenReply)
{
    rpc_call *call = call_data;
    login_name name;
    login_task *lt = login_new(call, &name);
    if (!lt)
        return;
    login_name body = {.user_id = (uint64_t)req->user_id};
    if (!lt->trusted) {
        if (req->user_id <= 0) {
            free(lt);
            rpc_fail(call, ST_INVALID_ARGUMENT, "user_id is required (a positive integer)");
            return;
        }
        name.user_id = (uint64_t)req->user_id;
    }
    login_start(call, lt, &name, lt->trusted && req->user_id ? &body : NULL, "user_id", req->password,
                req->device_guid, req->platform, req->user_agent);
}

RPC_HANDLER(token_by_login, TokenByLoginRequest, TokenReply)
{
    rpc_call *call = call_data;
    login_name name;
    login_task *lt = login_new(call, &name);
    if (!lt)
        return;
    login_name body = {0};
    int named = req->login_name[0] != '\0';
    if ((!lt->trusted || named) &&
        set_login_key(call, lt->trusted ? &body : &name, "login_name", req->login_name, 0) != 0) {
        free(lt);
        return;
    }
    login_start(call, lt, &name, lt->trusted && named ? &body : NULL, "login_name", req->password,
                req->device_guid, req->platform, req->user_agent);
}

RPC_HANDLER(token_by_name, TokenByNameRequest, TokenReply)
{
    rpc_call *call = call_data;
    login_name name;
    login_task *lt = login_new(call, &name);
    if (!lt)
        return;  /* answered: req may be gone */
    login_name body = {0};
    int by_name = req->name[0] != '\0', named = by_name || req->mobile[0] != '\0';
    const char *field = by_name ? "name" : "mobile";
    /* The vendor SDK sends "mobile" in place of "name": it may hold a phone. */
    if ((!lt->trusted || named) &&
        set_login_key(call, lt->trusted ? &body : &name, "name", by_name ? req->name : req->mobile,
                      by_name) != 0) {
        free(lt);
        return;
    }
    login_start(call, lt, &name, lt->trusted && named ? &body : NULL, field, req->password,
                req->device_guid, req->platform, req->user_agent);
}
