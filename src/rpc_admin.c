/* rpc_admin.c - the app's back end, with an admin token: registering,
 * listing, changing, disabling and deleting users, setting passwords, and
 * group admins. Every change is written to the audit log. Open
 * registration (RegisterUser without a token) is allowed only where the
 * app enables it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "account.h"
#include "names.h"
#include "rpc.h"
#include "rpc_handlers.h"

#define BATCH_MAX 100
#define PAGE_MAX 1000

typedef struct {
    rpc_task task;
    rpc_auth auth;
    account_new in;
    char name[STORE_NAME_MAX + 1], phone[NAMES_PHONE_MAX * 2 + 1], email[NAMES_EMAIL_MAX + 1];
    char password[CRYPTO_PASSWORD_MAX + 1];
    int set_name, set_phone, set_email;
    uint64_t target, group;
    size_t n;
    int64_t *ids;
    int disable;
    /* replies */
    Tokend__V1__RegisterReply registered;
    Tokend__V1__User user;
    char user_text[3][NAMES_EMAIL_MAX + 1];
    Tokend__V1__RegisterBatchReply batch;
    Tokend__V1__RegisterRequest **batch_in;
    throttle_ticket ticket;        /* open registration: settled on the worker (cluster) */
} admin_task;

static void cleanup(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    crypto_wipe(t->password, sizeof t->password);
    free(t->ids);
    if (t->batch.list) {
        for (size_t i = 0; i < t->batch.n_list; i++) {
            free(t->batch.list[i]->username);
            free(t->batch.list[i]->reason);
            free(t->batch.list[i]);
        }
        free(t->batch.list);
    }
    if (t->batch_in) {
        for (size_t i = 0; i < t->n; i++)
            if (t->batch_in[i]) {
                crypto_wipe(t->batch_in[i]->password, strlen(t->batch_in[i]->password));
                protobuf_c_message_free_unpacked(&t->batch_in[i]->base, NULL);
            }
        free(t->batch_in);
    }
}

static admin_task *admin_task_new(rpc_call *call, const rpc_auth *auth)
{
    admin_task *t = rpc_task_new(call, sizeof *t);
    if (t) {
        t->auth = *auth;
        t->task.cleanup = cleanup;
    }
    return t;
}

/* Fills t->user from the stored record (copies: the record is freed). */
static void user_reply(admin_task *t, const store_user *u)
{
    tokend__v1__user__init(&t->user);
    snprintf(t->user_text[0], sizeof t->user_text[0], "%s", u->name);
    snprintf(t->user_text[1], sizeof t->user_text[1], "%s", u->phone);
    snprintf(t->user_text[2], sizeof t->user_text[2], "%s", u->email);
    t->user.user_id = (int64_t)u->user_id;
    t->user.app_id = (int64_t)u->app_id;
    t->user.name = t->user_text[0];
    t->user.phone = t->user_text[1];
    t->user.email = t->user_text[2];
    t->user.disabled = u->disabled;
    t->user.created = u->created_ms;
    t->task.reply = &t->user.base;
}

/* Loads a user of the admin's app into the reply; -1 with the task failed. */
static int load_user(admin_task *t, uint64_t user_id)
{
    store_user *u = NULL;
    int rc = store_user_get(t->task.call->ctx->store, user_id, &u);
    if (rc == STORE_OK && u->app_id != t->auth.app_id)
        rc = STORE_NOTFOUND;
    if (rc == STORE_NOTFOUND) {
        rpc_task_fail(&t->task, ST_NOT_FOUND, "user_id %llu not found", (unsigned long long)user_id);
    } else if (rpc_task_store(&t->task, rc, "user") == 0) {
        user_reply(t, u);
    }
    if (u)
        protobuf_c_message_free_unpacked(&u->base, NULL);
    return t->task.status == ST_OK ? 0 : -1;
}

static status_code create(admin_task *t, uint64_t *user_id)
{
    return account_create(t->task.call->ctx->store, &t->in, t->task.call->ctx->config->pwcost,
                          user_id, t->task.message, sizeof t->task.message);
}

/* --- registration ------------------------------------------------------------ */

static void run_register(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    uint64_t id = 0;
    t->in.audit = rpc_task_audit(task, &t->auth, "RegisterUser", "%s", "");
    if ((task->status = create(t, &id)) != ST_OK)
        return;
    tokend__v1__register_reply__init(&t->registered);
    t->registered.user_id = (int64_t)id;
    /* the name as stored (its canonical form: names.h) */
    const char *why = NULL;
    if (names_normalize_username(t->name, t->name, sizeof t->name, &why) != 0)
        return;   /* account_create took it: cannot happen */
    t->registered.username = t->name;
    task->reply = &t->registered.base;
}

RPC_HANDLER(register_user, RegisterRequest, RegisterReply)
{
    rpc_call *call = call_data;
    rpc_auth auth = {0};
    store_app *app = NULL;
    admin_task *t;
    throttle_ticket ticket;
    int ticketed = 0;
    if (!req->username[0] || !req->password[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s is required", req->username[0] ? "password" : "username");
        return;
    }
    if (call->access_token[0]) {
        if (rpc_auth_admin(call, &auth) != 0)
            return;
    } else {
        if (rpc_app(call, &app) != 0)
            return;
        int open = app->open_registration;
        auth.app_id = app->app_id;
        snprintf(auth.actor, sizeof auth.actor, "open-registration");
        protobuf_c_message_free_unpacked(&app->base, NULL);
        if (!open) {
            rpc_fail(call, ST_UNAUTHENTICATED,
                     "registration needs an admin token: this app has no open registration");
            return;
        }
        /* Anyone may register, but no address fast: every attempt counts
         * against the address bucket of the login limits. */
        int wait = throttle_take_address(call->ctx->throttle, auth.app_id, call->peer, &ticket);
        ticketed = 1;
        if (wait) {
            call->retry_after = wait;
            rpc_fail(call, ST_RESOURCE_EXHAUSTED,
                     "too many registrations from this address: retry in %d s", wait);
            return;
        }
    }
    if (!(t = admin_task_new(call, &auth)))
        return;
    if (ticketed) {
        t->ticket = ticket;
        t->task.ticket = &t->ticket;  /* cluster mode: the take happens on the worker */
    }
    if (rpc_copy_field(call, t->name, sizeof t->name, req->username, "username") != 0 ||
        rpc_copy_field(call, t->password, sizeof t->password, req->password, "password") != 0) {
        cleanup(&t->task);
        free(t);
        return;
    }
    t->in = (account_new){auth.app_id, t->name, NULL, NULL, t->password, strlen(t->password)};
    rpc_task_start(&t->task, run_register);
}

static void run_register_batch(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    Tokend__V1__RegisterResult **out = calloc(t->n + 1, sizeof *out);
    if (!out) {
        rpc_task_fail(task, ST_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    t->batch.list = out;
    for (size_t i = 0; i < t->n; i++) {
        Tokend__V1__RegisterRequest *r = t->batch_in[i];
        Tokend__V1__RegisterResult *res = calloc(1, sizeof *res);
        uint64_t id = 0;
        if (!res)
            break;
        tokend__v1__register_result__init(res);
        t->in = (account_new){t->auth.app_id, r->username, NULL, NULL, r->password,
                              strlen(r->password),
                              rpc_task_audit(task, &t->auth, "RegisterUsers", "%s", "")};
        status_code st = create(t, &id);
        res->user_id = (int64_t)id;
        res->username = strdup(r->username);
        res->success = st == ST_OK;
        res->reason = strdup(st == ST_OK ? "" : task->message);
        out[t->batch.n_list++] = res;
    }
    task->message[0] = '\0';
    task->status = ST_OK;
    task->reply = &t->batch.base;
}

RPC_HANDLER(register_users, RegisterBatchRequest, RegisterBatchReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    admin_task *t;
    if (req->n_list == 0 || req->n_list > BATCH_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "list must hold 1 to %d users", BATCH_MAX);
        return;
    }
    if (rpc_auth_admin(call, &auth) != 0 || !(t = admin_task_new(call, &auth)))
        return;
    tokend__v1__register_batch_reply__init(&t->batch);
    t->n = req->n_list;
    t->batch_in = calloc(req->n_list, sizeof *t->batch_in);
    /* The request dies with the call's HTTP request: keep copies. */
    for (size_t i = 0; t->batch_in && i < req->n_list; i++) {
        uint8_t buf[4096];
        size_t len = protobuf_c_message_get_packed_size(&req->list[i]->base);
        if (len <= sizeof buf) {
            protobuf_c_message_pack(&req->list[i]->base, buf);
            t->batch_in[i] = tokend__v1__register_request__unpack(NULL, len, buf);
        }
        if (!t->batch_in[i]) {
            rpc_fail(call, ST_INVALID_ARGUMENT, "list[%zu] is too large", i);
            cleanup(&t->task);
            free(t);
            return;
        }
    }
    rpc_task_start(&t->task, run_register_batch);
}

/* --- passwords, status ----------------------------------------------------------- */

static void run_set_password(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    tokend_ctx *ctx = task->call->ctx;
    char hash[CRYPTO_PWHASH_STRBYTES];
    if (crypto_password_hash(hash, t->password, strlen(t->password), ctx->config->pwcost) != 0) {
        rpc_task_fail(task, ST_RESOURCE_EXHAUSTED, "cannot hash the password, retry");
        return;
    }
    rpc_task_store(task, store_user_set_password(ctx->store, t->auth.user_id, hash, NULL, NULL,
                                                 rpc_task_audit(task, &t->auth, "SetPassword",
                                                                "user_id=%llu",
                                                                (unsigned long long)t->auth.user_id)),
                   "user");
}

RPC_HANDLER(set_password, SetPasswordRequest, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    admin_task *t;
    const char *why;
    if (names_check_password(req->password, strlen(req->password), &why) != 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "password: %s", why);
        return;
    }
    if (rpc_auth_user(call, &auth) != 0)
        return;
    if (!auth.admin) {
        rpc_fail(call, ST_PERMISSION_DENIED, "this call needs an admin token (users use /user/change_password)");
        return;
    }
    if (!(t = admin_task_new(call, &auth)))
        return;
    strcpy(t->password, req->password);
    rpc_task_start(&t->task, run_set_password);
}

static void run_set_disabled(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    store *st = task->call->ctx->store;
    /* Every id is checked first, to name one that is not a user; the change
     * itself is one transaction, all of them or none. */
    for (size_t i = 0; i < t->n; i++)
        if (load_user(t, (uint64_t)t->ids[i]) != 0)
            return;
    task->reply = NULL;
    store_audit *audits = calloc(t->n, sizeof *audits);
    char (*details)[sizeof task->audit_detail] = calloc(t->n, sizeof *details);
    uint64_t *ids = calloc(t->n, sizeof *ids);
    if (!audits || !details || !ids) {
        rpc_task_fail(task, ST_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        for (size_t i = 0; i < t->n; i++) {
            ids[i] = (uint64_t)t->ids[i];
            rpc_audit_fill(&audits[i], details[i], sizeof details[i], &t->auth,
                           t->disable ? "DisableUsers" : "EnableUsers", "user_id=%lld",
                           (long long)t->ids[i]);
        }
        rpc_task_store(task, store_users_set_disabled(st, t->auth.app_id, ids, t->n, t->disable, audits),
                       "user");
    }
    free(audits);
    free(details);
    free(ids);
}

static void start_set_disabled(rpc_call *call, const Tokend__V1__UserIdList *req, int disable)
{
    rpc_auth auth;
    admin_task *t;
    if (req->n_list == 0 || req->n_list > PAGE_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "list must hold 1 to %d user ids", PAGE_MAX);
        return;
    }
    if (rpc_auth_admin(call, &auth) != 0 || !(t = admin_task_new(call, &auth)))
        return;
    t->disable = disable;
    t->n = req->n_list;
    t->ids = malloc(req->n_list * sizeof *t->ids);
    if (!t->ids) {
        rpc_fail(call, ST_RESOURCE_EXHAUSTED, "out of memory");
        free(t);
        return;
    }
    memcpy(t->ids, req->list, req->n_list * sizeof *t->ids);
    rpc_task_start(&t->task, run_set_disabled);
}

RPC_HANDLER(disable_users, UserIdList, BoolReply)
{
    rpc_call *call = call_data;
    start_set_disabled(call, req, 1);
}

RPC_HANDLER(enable_users, UserIdList, BoolReply)
{
    rpc_call *call = call_data;
    start_set_disabled(call, req, 0);
}

/* --- reading users ------------------------------------------------------------------ */

/* A page of users: a walk of the app's user index, on the pool (a large
 * page_num skips many keys). page_token seeks straight to the page. */
typedef struct {
    rpc_task task;
    uint64_t app_id, after;
    size_t offset, size;
    Tokend__V1__UserList list;
    Tokend__V1__UserSummary *rows;
    char next[24];
    store_user **users;
    size_t n;
} list_task;

static void list_cleanup(rpc_task *task)
{
    list_task *t = (list_task *)task;
    free(t->rows);
    free(t->list.users);
    store_users_free(t->users, t->n);
}

static void run_list_users(rpc_task *task)
{
    list_task *t = (list_task *)task;
    int more = 0;
    int rc = store_users_list(task->call->ctx->store, t->app_id, t->after, t->offset, t->size,
                              &t->users, &t->n, &more);
    if (rpc_task_store(task, rc, "app") != 0)
        return;
    t->rows = calloc(t->n + 1, sizeof *t->rows);
    t->list.users = calloc(t->n + 1, sizeof *t->list.users);
    if (!t->rows || !t->list.users) {
        rpc_task_fail(task, ST_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        tokend__v1__user_summary__init(&t->rows[i]);
        t->rows[i].user_id = (int64_t)t->users[i]->user_id;
        t->rows[i].username = t->users[i]->name;
        t->rows[i].status = t->users[i]->disabled ? 1 : 0;
        t->list.users[i] = &t->rows[i];
    }
    t->list.n_users = t->n;
    if (more && t->n)
        snprintf(t->next, sizeof t->next, "%llu",
                 (unsigned long long)t->users[t->n - 1]->user_id);
    t->list.next_page_token = t->next;
    task->reply = &t->list.base;
}

RPC_HANDLER(list_users, ListUsersRequest, UserList)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    list_task *t;
    uint64_t after = 0;
    int32_t page = req->page_num > 0 ? req->page_num : 1;
    int32_t size = req->page_size > 0 ? req->page_size : 20;
    if (size > PAGE_MAX) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "page_size must be at most %d", PAGE_MAX);
        return;
    }
    /* The token is the last user id of the page before: opaque to clients. */
    if (req->page_token[0]) {
        char *end;
        unsigned long long v = strtoull(req->page_token, &end, 10);
        if (*end || req->page_token[0] < '1' || req->page_token[0] > '9' || v == 0) {
            rpc_fail(call, ST_INVALID_ARGUMENT,
                     "page_token is not one this server gave: send the next_page_token of the "
                     "page before, or leave it out for the first page");
            return;
        }
        after = v;
        page = 1;
    }
    if (rpc_auth_admin(call, &auth) != 0 || !(t = rpc_task_new(call, sizeof *t)))
        return;
    tokend__v1__user_list__init(&t->list);
    t->app_id = auth.app_id;
    t->after = after;
    t->offset = (size_t)(page - 1) * (size_t)size;
    t->size = (size_t)size;
    t->task.cleanup = list_cleanup;
    rpc_task_start(&t->task, run_list_users);
}

static void run_get_user(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    load_user(t, t->target);
}

RPC_HANDLER(get_user, UserRef, User)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    admin_task *t;
    if (req->user_id <= 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "user_id is required");
        return;
    }
    /* A read, but it shares load_user with the writers: a task keeps one path. */
    if (rpc_auth_admin(call, &auth) != 0 || !(t = admin_task_new(call, &auth)))
        return;
    t->target = (uint64_t)req->user_id;
    rpc_task_start(&t->task, run_get_user);
}

/* --- changing users ------------------------------------------------------------------ */

static void run_create_user(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    uint64_t id = 0;
    t->in.audit = rpc_task_audit(task, &t->auth, "CreateUser", "%s", "");
    if ((task->status = create(t, &id)) != ST_OK)
        return;
    load_user(t, id);
}

RPC_HANDLER(create_user, CreateUserRequest, User)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    admin_task *t;
    if (!req->name[0] || !req->password[0]) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s is required", req->name[0] ? "password" : "name");
        return;
    }
    if (rpc_auth_admin(call, &auth) != 0 || !(t = admin_task_new(call, &auth)))
        return;
    if (rpc_copy_field(call, t->name, sizeof t->name, req->name, "name") != 0 ||
        rpc_copy_field(call, t->phone, sizeof t->phone, req->phone, "phone") != 0 ||
        rpc_copy_field(call, t->email, sizeof t->email, req->email, "email") != 0 ||
        rpc_copy_field(call, t->password, sizeof t->password, req->password, "password") != 0) {
        cleanup(&t->task);
        free(t);
        return;
    }
    t->in = (account_new){auth.app_id, t->name, t->phone, t->email, t->password, strlen(t->password)};
    rpc_task_start(&t->task, run_create_user);
}

static void run_update_user(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    const char *conflict = "name";
    if (load_user(t, t->target) != 0)
        return;
    int rc = store_user_update(task->call->ctx->store, t->target, t->set_name ? t->name : NULL,
                               t->set_phone ? t->phone : NULL, t->set_email ? t->email : NULL,
                               &conflict, rpc_task_audit(task, &t->auth, "UpdateUser", "user_id=%llu",
                                                         (unsigned long long)t->target));
    if (rc == STORE_EXISTS) {
        rpc_task_fail(task, ST_ALREADY_EXISTS, "%s is already taken in this app", conflict);
        return;
    }
    if (rpc_task_store(task, rc, "user") != 0)
        return;
    load_user(t, t->target);
}

RPC_HANDLER(update_user, UpdateUserRequest, User)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    admin_task *t;
    const char *why = NULL;
    if (req->user_id <= 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "user_id is required");
        return;
    }
    if (rpc_auth_admin(call, &auth) != 0 || !(t = admin_task_new(call, &auth)))
        return;
    t->target = (uint64_t)req->user_id;
    if ((t->set_name = req->name[0] != '\0'))
        names_normalize_username(req->name, t->name, sizeof t->name, &why);
    if (!why && (t->set_phone = req->phone[0] || req->clear_phone) && req->phone[0])
        names_normalize_phone(req->phone, t->phone, sizeof t->phone, &why);
    if (!why && (t->set_email = req->email[0] || req->clear_email) && req->email[0])
        names_normalize_email(req->email, t->email, sizeof t->email, &why);
    if (why) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s", why);
        free(t);
        return;
    }
    rpc_task_start(&t->task, run_update_user);
}

static void run_set_group_admin(rpc_task *task)
{
    admin_task *t = (admin_task *)task;
    if (load_user(t, t->target) != 0)
        return;
    task->reply = NULL;
    rpc_task_store(task, store_group_set(task->call->ctx->store, t->auth.app_id, t->group,
                                         t->target,
                                         rpc_task_audit(task, &t->auth, "SetGroupAdmin",
                                                        "group_id=%llu user_id=%llu",
                                                        (unsigned long long)t->group,
                                                        (unsigned long long)t->target)),
                   "group");
}

RPC_HANDLER(set_group_admin, SetGroupAdminRequest, BoolReply)
{
    rpc_call *call = call_data;
    rpc_auth auth;
    admin_task *t;
    if (req->group_id <= 0 || req->user_id <= 0) {
        rpc_fail(call, ST_INVALID_ARGUMENT, "%s is required", req->group_id > 0 ? "user_id" : "group_id");
        return;
    }
    if (rpc_auth_admin(call, &auth) != 0 || !(t = admin_task_new(call, &auth)))
        return;
    t->group = (uint64_t)req->group_id;
    t->target = (uint64_t)req->user_id;
    rpc_task_start(&t->task, run_set_group_admin);
}
