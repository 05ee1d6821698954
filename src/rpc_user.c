/* rpc_user.c - what a user does with their own token (or an admin, acting
 * as a user through the user_id / group_id headers): sign out, list and
 * remove devices, change the password, bind a device token, delete the
 * account. Every change runs on the pool: it writes (and may hash). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "names.h"
#include "rpc.h"
#include "rpc_handlers.h"

typedef struct {
    rpc_task task;
    rpc_auth auth;
    uint32_t sn;
    char old_password[CRYPTO_PASSWORD_MAX + 1];
    char password[CRYPTO_PASSWORD_MAX + 1];
    char device_token[512 + 1];
    char notifier_name[STORE_NAME_MAX + 1];
    throttle *throttle;           /* set when a password guess was counted */
    throttle_ticket ticket;
    char checked[CRYPTO_PWHASH_STRBYTES];  /* the hash the password was checked against */
} user_task;

static user_task *user_task_new(rpc_call *call, const rpc_auth *auth)
{
    user_task *t = rpc_task_new(call, sizeof *t);
    if (t)
        t->auth = *auth;
    return t;
}

/* On the loop once answered: a wrong password keeps its throttle attempt. */
static void wipe(rpc_task *task)
{
    user_task *t = (user_task *)task;
    crypto_wipe(t->old_password, sizeof t->old_password);
    crypto_wipe(t->password, sizeof t->password);
    if (t->throttle && task->status == ST_OK)
        throttle_succeeded(t->throttle, &t->ticket);
    else if (t->throttle && task->status != ST_UNAUTHENTICATED)
        throttle_refund(t->throttle, &t->ticket);
}

/* A password check outside login is a guess like a login's: it takes an
 * attempt from the same buckets (the account's, whatever the form of
 * login, and the client's for a login by this id) before anything is
 * hashed. 0, or -1 with the call answered. */
static int count_guess(rpc_call *call, user_task *t)
{
    char account[32], name[32];
    snprintf(account, sizeof account, "u:%llu", (unsigned long long)t->auth.user_id);
    snprintf(name, sizeof name, "id:%llu", (unsigned long long)t->auth.user_id);
    int wait = throttle_take(call->ctx->throttle, t->auth.app_id, name, account, call->peer, 0,
                             &t->ticket);
    if (wait) {
        call->retry_after = wait;
        rpc_fail(call, ST_RESOURCE_EXHAUSTED,
                 "too many wrong passwords for this account or address: retry in %d s", wait);
        return -1;
    }
    t->throttle = call->ctx->throttle;
    t->task.ticket = &t->ticket;  /* cluster mode: the take happens on the worker */
    return 0;
}

/* An admin's action on behalf of a user goes to the audit log, in the
 * change's own transaction; a user's own action does not. */
static const store_audit *audit_of(user_task *t, const char *action)
{
    if (!t->auth.admin)
        return NULL;
    return rpc_task_audit(&t->task, &t->auth, action, "user_id=%llu device_sn=%u",
                          (unsigned long long)t->auth.user_id, t->sn);
}

/* Checks the user's password (Argon2id: on the pool); the hash checked is
 * kept for the commit, which refuses if it changed meanwhile. */
static int check_password(user_task *t, const char *password)
{
    store_user *u = NULL;
    tokend_ctx *ctx = t->task.call->ctx;
    int rc = store_user_get(ctx->store, t->auth.user_id, &u);
    if (rpc_task_store(&t->task, rc, "user") != 0)
        return -1;
    snprintf(t->checked, sizeof t->checked, "%s", u->password_hash);
    rc = crypto_password_verify(u->password_hash, password, strlen(password));
    protobuf_c_message_free_unpacked(&u->base, NULL);
    if (rc != 0) {
        rpc_task_fail(&t->task, ST_UNAUTHENTICATED, "wrong password");
        return -1;
    }
    return 0;
}

/* A user's own change refused at commit: the session or password it was
 * decided on changed while the password was being checked. */
static void commit_result(rpc_task *task, int rc)
{
    if (rc == STORE_CHANGED)
        rpc_task_fail(task, ST_UNAUTHENTICATED,
                      "the account changed meanwhile (signed out, or a new password): "
                      "nothing was changed; log in again");
    else
        rpc_task_store(task, rc, "user");
}

static void run_logout(rpc_task *task)
{
    user_task *t = (user_task *)task;
    rpc_task_store(task, store_session_revoke(task->call->ctx->store, t->auth.hash, NULL), "session");
}

RPC_HANDLER(logout, Empty, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    user_task *t;
    if (rpc_auth_any(call, &auth) != 0)
        return;
    /* Admin tokens are shared by the IM services: one HTTP call must not end them. */
    if (auth.admin) {
        rpc_fail(call, ST_INVALID_ARGUMENT,
                 "Logout ends a user's own token: an admin ends a user's sessions with "
                 "/token/revoke_all and a user_id header, and admin tokens with "
                 "`tokend admin-token revoke`");
        return;
    }
    if ((t = user_task_new(call, &auth)))
        rpc_task_start(&t->task, run_logout);
}

static void run_logout_all(rpc_task *task)
{
    user_task *t = (user_task *)task;
    rpc_task_store(task, store_user_revoke(task->call->ctx->store, t->auth.app_id, t->auth.user_id,
                                           NULL, NULL, audit_of(t, "LogoutAll")),
                   "user");
}

RPC_HANDLER(logout_all, Empty, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    user_task *t;
    if (rpc_auth_user_or_gone(call, &auth) == 0 && (t = user_task_new(call, &auth)))
        rpc_task_start(&t->task, run_logout_all);
}

static int by_sn(const void *a, const void *b)
{
    const Tokend__V1__Device *x = *(Tokend__V1__Device *const *)a, *y = *(Tokend__V1__Device *const *)b;
    return (x->device_sn > y->device_sn) - (x->device_sn < y->device_sn);
}

RPC_HANDLER(list_devices, Empty, DeviceList)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    store_device **devs;
    size_t n;
    if (rpc_auth_user(call, &auth) != 0)
        return;
    int rc = store_devices_list(call->ctx->store, auth.app_id, auth.user_id, &devs, &n);
    if (rc != STORE_OK) {
        rpc_fail(call, ST_UNAVAILABLE, "%s", store_strerror(rc));
        return;
    }
    Tokend__V1__DeviceList reply = TOKEND__V1__DEVICE_LIST__INIT;
    Tokend__V1__Device *d = calloc(n + 1, sizeof *d);
    Tokend__V1__Device **dp = calloc(n + 1, sizeof *dp);
    if (!d || !dp) {
        rpc_fail(call, ST_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            tokend__v1__device__init(&d[i]);
            d[i].device_sn = devs[i]->device_sn;
            d[i].platform = devs[i]->platform;
            d[i].user_agent = devs[i]->user_agent;
            d[i].user_id = (int64_t)devs[i]->user_id;
            dp[i] = &d[i];
        }
        qsort(dp, n, sizeof *dp, by_sn);
        reply.devices = dp;
        reply.n_devices = n;
        closure(&reply, call);
    }
    free(d);
    free(dp);
    store_devices_free(devs, n);
}

static void run_forget(user_task *t, int forget, const char *action)
{
    int rc = store_device_forget(t->task.call->ctx->store, t->auth.app_id, t->auth.user_id, t->sn,
                                 forget, audit_of(t, action));
    if (rc == STORE_NOTFOUND)
        rpc_task_fail(&t->task, ST_NOT_FOUND, "device_sn %u is not a device of this user", t->sn);
    else
        rpc_task_store(&t->task, rc, "device");
}

static void run_remove_device(rpc_task *task)
{
    run_forget((user_task *)task, 1, "RemoveDevice");
}

static void run_kick(rpc_task *task)
{
    run_forget((user_task *)task, 0, "Kick");
}

static void start_device_task(rpc_call *call, uint32_t sn, int sn_required,
                              void (*run)(rpc_task *))
{
    rpc_auth auth;
    user_task *t;
    if (sn_required && sn == 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "device_sn is required (see /user/device/list)");
        return;
    }
    if (rpc_auth_user(call, &auth) == 0 && (t = user_task_new(call, &auth))) {
        t->sn = sn;
        rpc_task_start(&t->task, run);
    }
}

RPC_HANDLER(remove_device, DeviceRef, BoolReply)
{
    rpc_call *call = call_data;
    start_device_task(call, req->device_sn, 1, run_remove_device);
}

RPC_HANDLER(kick, DeviceRef, BoolReply)
{
    rpc_call *call = call_data;
    start_device_task(call, req->device_sn, 0, run_kick);
}

static void run_change_password(rpc_task *task)
{
    user_task *t = (user_task *)task;
    tokend_ctx *ctx = task->call->ctx;
    char hash[CRYPTO_PWHASH_STRBYTES];
    if (check_password(t, t->old_password) != 0)
        return;
    if (crypto_password_hash(hash, t->password, strlen(t->password), ctx->config->pwcost) != 0) {
        rpc_task_fail(task, ST_RESOURCE_EXHAUSTED, "cannot hash the password, retry");
        return;
    }
    store_expect expect = {t->checked, t->auth.hash};
    commit_result(task, store_user_set_password(ctx->store, t->auth.user_id, hash, t->auth.hash,
                                                &expect, NULL));
}

RPC_HANDLER(change_password, ChangePasswordRequest, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    user_task *t;
    const char *why;
    if (!req->old_password[0] || !req->new_password[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s is required",
                 req->old_password[0] ? "new_password" : "old_password");
        return;
    }
    if (names_check_password(req->new_password, strlen(req->new_password), &why) != 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "new_password: %s", why);
        return;
    }
    if (strlen(req->old_password) > CRYPTO_PASSWORD_MAX) {
        rpc_fail(call, ST_UNAUTHENTICATED, "wrong password");
        return;
    }
    if (rpc_auth_user(call, &auth) != 0)
        return;
    if (auth.admin) {
        rpc_fail(call, ST_PERMISSION_DENIED,
                 "an admin sets passwords with /user/change_password_admin (SetPassword)");
        return;
    }
    if (!(t = user_task_new(call, &auth)))
        return;
    if (count_guess(call, t) != 0) {
        free(t);
        return;
    }
    strcpy(t->old_password, req->old_password);
    strcpy(t->password, req->new_password);
    t->task.cleanup = wipe;
    rpc_task_start(&t->task, run_change_password);
}

static void run_bind(rpc_task *task)
{
    user_task *t = (user_task *)task;
    int rc = store_device_bind(task->call->ctx->store, t->auth.app_id, t->auth.user_id, t->sn,
                               t->device_token, t->notifier_name,
                               audit_of(t, t->device_token[0] ? "BindDeviceToken"
                                                              : "UnbindDeviceToken"));
    if (rc == STORE_NOTFOUND)
        rpc_task_fail(task, ST_NOT_FOUND, "device_sn %u is not a device of this user", t->sn);
    else
        rpc_task_store(task, rc, "device");
}

RPC_HANDLER(bind_device_token, BindDeviceTokenRequest, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    user_task *t;
    if (!req->device_sn || !req->device_token[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s is required",
                 req->device_sn ? "device_token" : "device_sn");
        return;
    }
    if (rpc_auth_user(call, &auth) != 0 || !(t = user_task_new(call, &auth)))
        return;
    t->sn = req->device_sn;
    if (rpc_copy_field(call, t->device_token, sizeof t->device_token, req->device_token,
                  "device_token") != 0 ||
        rpc_copy_field(call, t->notifier_name, sizeof t->notifier_name, req->notifier_name,
                  "notifier_name") != 0) {
        free(t);
        return;
    }
    rpc_task_start(&t->task, run_bind);
}

RPC_HANDLER(unbind_device_token, UnbindDeviceTokenRequest, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    user_task *t;
    if (!req->devicesn) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "deviceSn is required");
        return;
    }
    if (rpc_auth_user(call, &auth) == 0 && (t = user_task_new(call, &auth))) {
        t->sn = req->devicesn;
        rpc_task_start(&t->task, run_bind);
    }
}

static void run_delete_user(rpc_task *task)
{
    user_task *t = (user_task *)task;
    store_expect expect = {t->checked, t->auth.hash};
    if (!t->auth.admin && check_password(t, t->password) != 0)
        return;
    commit_result(task, store_user_delete(task->call->ctx->store, t->auth.user_id,
                                          t->auth.admin ? NULL : &expect,
                                          audit_of(t, "DeleteUser")));
}

RPC_HANDLER(delete_user, DeleteUserRequest, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    user_task *t;
    if (rpc_auth_user(call, &auth) != 0)
        return;
    if (!auth.admin && !req->password[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "password is required to delete your own account");
        return;
    }
    if (strlen(req->password) > CRYPTO_PASSWORD_MAX) {
        rpc_fail(call, ST_UNAUTHENTICATED, "wrong password");
        return;
    }
    if (!(t = user_task_new(call, &auth)))
        return;
    if (!auth.admin && count_guess(call, t) != 0) {
        free(t);
        return;
    }
    strcpy(t->password, req->password);
    t->task.cleanup = wipe;
    rpc_task_start(&t->task, run_delete_user);
}
