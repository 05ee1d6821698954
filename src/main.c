/* main.c - the tokend command line: `serve` runs the server; the other
 * subcommands administer a data directory directly through the store,
 * which is safe while a server runs on it (LMDB is multi-process). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include "account.h"
#include "config.h"
#include "decoy.h"
#include "log.h"
#include "names.h"
#include "import.h"
#include "options.h"
#include "router.h"
#include "rpc.h"
#include "server.h"
#include "tls.h"
#include "transcode.h"

static void print_error(void *arg, const char *msg)
{
    fprintf(stderr, "tokend: %s\n", msg);
}

static store *open_store_sized(const char *dir, size_t mapsize)
{
    store *st;
    char err[256];
    if (store_open(&st, dir, mapsize, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "tokend: %s\n", err);
        exit(1);
    }
    return st;
}

/* The data directory; with --cluster (or "cluster" in the --config file),
 * as a replica of the cluster, so what a command writes commits in
 * PostgreSQL and every node sees it. */
static store *open_store_cluster(const char *dir, size_t mapsize, const char *url, int flags)
{
    store *st = open_store_sized(dir, mapsize);
    char err[512];
    if (url && store_cluster_join(st, url, flags, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "tokend: %s\n", err);
        store_close(st);
        exit(1);
    }
    return st;
}

static store *open_store_of(const option_values *ov)
{
    return open_store_cluster(options_text(ov, OPT_DATA), 0, options_text(ov, OPT_CLUSTER), 0);
}

/* For a command that only reads: with --cluster, the directory caught up
 * with the cluster first (without its write lock); when it cannot be, it
 * is read as it stands, and the command says so. */
static store *open_store_reading(const option_values *ov)
{
    store *st = open_store_of(ov);
    char err[256] = "", replica[64];
    uint64_t seq = 0;
    if (store_clustered(st) && store_cluster_refresh(st, err, sizeof err) != STORE_OK) {
        store_replica_of(st, replica, sizeof replica, &seq);
        fprintf(stderr, "tokend: %s; read as it stands (at change %llu)\n", err,
                (unsigned long long)seq);
    }
    return st;
}

/* --lock-memory on: the data file read into memory before the port opens
 * (at 10M users, 8.7 GiB; from the disk, seconds to a minute). */
static int keep_resident(store *st)
{
    char err[256];
    size_t bytes;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (store_keep_resident(st, &bytes, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "tokend: %s\n", err);
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    log_event(LOG_INFO, "memory_locked", "store: %.1f MiB of data in memory and locked (%.1f s)",
              bytes / 1048576.0, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}

static int cmd_serve(const option_values *ov)
{
    tokend_config cfg = {0};
    tokend_ctx ctx = {.config = &cfg};
    router *router;
    char err[256];

    if (options_to_config(ov, &cfg, print_error, NULL) != 0)
        return 2;
    cfg.options = ov;
    /* Before any thread is made (the log writer, the feed, the workers):
     * threads inherit the mask, and a SIGHUP or SIGTERM that the kernel
     * handed to one not blocking it would end the process (default action)
     * instead of reaching server_run's sigwait. */
    server_block_signals();
    /* The log first: a log that cannot be opened refuses the start before
     * anything else is made. */
    if (log_start(cfg.log_text ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON, cfg.access_log, err,
                  sizeof err) != 0) {
        fprintf(stderr, "tokend: %s\n", err);
        return 1;
    }
    ctx.store = open_store_cluster(cfg.data_dir, cfg.mapsize, cfg.cluster_url, STORE_CLUSTER_FEED);
    char replica[64];
    uint64_t seq;
    if (!cfg.cluster_url && store_replica_of(ctx.store, replica, sizeof replica, &seq)) {
        fprintf(stderr, "tokend: %s is a replica of cluster %s (at change %llu): serve it with "
                "--cluster URL; alone it would take writes no other node sees\n", cfg.data_dir,
                replica, (unsigned long long)seq);
        store_close(ctx.store);
        log_stop();
        return 1;
    }
    if (cfg.lock_memory && keep_resident(ctx.store) != 0) {
        store_close(ctx.store);
        log_stop();
        /* not allowed to lock: a configuration error a restart will not mend */
        return store_may_lock_memory() ? 1 : 2;
    }
    if (router_create(&router, rpc_services(), tokend_protoset, tokend_protoset_len, err,
                      sizeof err) != 0) {
        fprintf(stderr, "tokend: %s\n", err);
        return 1;
    }
    /* Logins of unknown users verify against a decoy of the cost their
     * account would have, and so take as long as real ones. */
    if (!(ctx.decoy = decoy_create(ctx.store, cfg.pwcost)) ||
        !(ctx.pool = pool_create(cfg.workers, cfg.queue)) ||
        !(ctx.throttle = throttle_create(cfg.throttle))) {
        fprintf(stderr, "tokend: cannot start the worker pool (out of memory?)\n");
        return 1;
    }
    crypto_area_trim(0);  /* the decoys' hash memory: an idle server keeps none */
    if (cfg.cluster_url)  /* every node counts guesses in the same buckets */
        throttle_share(ctx.throttle, ctx.store, ctx.pool);
    pool_set_slow_queue(ctx.pool, cfg.login_queue);
    int rc = server_run(&ctx, router);
    log_stop();
    pool_destroy(ctx.pool);
    throttle_free(ctx.throttle);
    decoy_free(ctx.decoy);
    store_close(ctx.store);
    router_free(router);
    return rc;
}

/* tokend config check FILE: every error with its line, or the effective
 * configuration the file gives (with the defaults). */
static int cmd_config_check(const option_values *args)
{
    option_values ov = {0};
    tokend_config cfg = {0};
    int errors = options_read_file(&ov, args->pos[0], print_error, NULL);
    if (errors >= 0)
        errors += options_to_config(&ov, &cfg, print_error, NULL);
    if (errors == 0 && cfg.tls_cert && cfg.tls_key) {   /* as serve would load them */
        char err[512];
        SSL_CTX *tls = tls_context_new(cfg.tls_cert, cfg.tls_key, err, sizeof err);
        if (!tls) {
            fprintf(stderr, "tokend: %s: %s\n", args->pos[0], err);
            errors++;
        }
        SSL_CTX_free(tls);
    }
    if (errors == 0)
        options_print_config(&ov, stdout);
    else if (errors > 0)
        fprintf(stderr, "tokend: %s: %d error%s\n", args->pos[0], errors, errors == 1 ? "" : "s");
    options_free(&ov);
    return errors == 0 ? 0 : 1;
}

static int cmd_app_create(const option_values *ov)
{
    store_app app = TOKEND__V1__STORE__APP__INIT;
    app.name = (char *)options_text(ov, OPT_NAME);
    app.token_ttl_ms = (int64_t)options_num(ov, OPT_TTL) * 1000;
    app.encrypt_type = (int32_t)options_num(ov, OPT_ENCRYPT_TYPE);
    app.open_registration = ov->v[OPT_OPEN_REGISTRATION].set;
    app.created_ms = rpc_now_ms();
    store *st = open_store_of(ov);
    int rc = store_app_create(st, &app);
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: cannot create the app: %s\n", store_strerror(rc));
        return 1;
    }
    printf("%llu\n", (unsigned long long)app.app_id);
    return 0;
}

/* app list: the counters of each app, then one line an app. */
typedef struct {
    uint64_t app_id, users, sessions, admin_tokens;
} app_count;

typedef struct {
    app_count *c;
    size_t n, cap;
    uint64_t default_app;
} app_listing;

static void collect_count(uint64_t app_id, uint64_t users, uint64_t sessions,
                          uint64_t admin_tokens, void *arg)
{
    app_listing *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        app_count *c = realloc(l->c, cap * sizeof *c);
        if (!c)
            return;   /* that app is listed with zero counts */
        l->c = c, l->cap = cap;
    }
    l->c[l->n++] = (app_count){app_id, users, sessions, admin_tokens};
}

static void print_app(const store_app *app, void *arg)
{
    app_listing *l = arg;
    app_count c = {0};
    for (size_t i = 0; i < l->n; i++)
        if (l->c[i].app_id == app->app_id)
            c = l->c[i];
    printf("%-10llu %-7s %8lld %7d %-4s %10llu %10llu %6llu  %s\n", (unsigned long long)app->app_id,
           app->app_id == l->default_app ? "yes" : "no", (long long)(app->token_ttl_ms / 1000),
           app->encrypt_type, app->open_registration ? "yes" : "no", (unsigned long long)c.users,
           (unsigned long long)c.sessions, (unsigned long long)c.admin_tokens, app->name);
}

static int cmd_app_list(const option_values *ov)
{
    app_listing l = {0};
    store *st = open_store_reading(ov);
    if (store_default_app(st, &l.default_app) != STORE_OK)
        l.default_app = 0;
    int rc = store_app_counts(st, collect_count, &l);
    if (rc == STORE_OK) {
        printf("%-10s %-7s %8s %7s %-4s %10s %10s %6s  %s\n", "app_id", "default", "ttl_s", "encrypt",
               "open", "users", "sessions", "admins", "name");
        rc = store_apps_each(st, print_app, &l);
    }
    store_close(st);
    free(l.c);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: cannot list the apps: %s\n", store_strerror(rc));
        return 1;
    }
    return 0;
}

/* The password is one line on stdin, so it stays out of argv and history. */
static size_t read_password(char *buf, size_t len)
{
    struct termios saved, quiet;
    int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (tty) {
        /* A person typing: ask, and do not echo the password. */
        fputs("password: ", stderr);
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *got = fgets(buf, (int)len, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fputc('\n', stderr);
    }
    if (!got) {
        fprintf(stderr, "tokend: expected the password on stdin\n");
        exit(2);
    }
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if (n == len - 1) {
        fprintf(stderr, "tokend: the password must be at most %d bytes\n", CRYPTO_PASSWORD_MAX);
        exit(2);
    }
    if (n && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return n;
}

static int cmd_user_add(const option_values *ov)
{
    account_new in = {0};
    char pw[CRYPTO_PASSWORD_MAX + 2], msg[256];
    uint64_t uid;

    in.name = options_text(ov, OPT_NAME);
    in.phone = options_text(ov, OPT_PHONE);
    in.email = options_text(ov, OPT_EMAIL);
    crypto_pwcost cost = {options_num(ov, OPT_PWHASH_OPS),
                          (size_t)options_num(ov, OPT_PWHASH_MEM) << 20};
    in.app_id = options_num(ov, OPT_APP);
    in.password_len = read_password(pw, sizeof pw);
    in.password = pw;
    store *st = open_store_of(ov);
    if (!in.app_id && store_default_app(st, &in.app_id) != STORE_OK) {
        fprintf(stderr, "tokend: --app is required (the data directory has no app yet)\n");
        store_close(st);
        return 2;
    }
    status_code sc = account_create(st, &in, cost, &uid, msg, sizeof msg);
    crypto_wipe(pw, sizeof pw);
    store_close(st);
    if (sc != ST_OK) {
        fprintf(stderr, "tokend: cannot add the user: %s\n", msg);
        return 1;
    }
    printf("%llu\n", (unsigned long long)uid);
    return 0;
}

static int cmd_user_import(const option_values *ov)
{
    import_options o = {0};
    import_result r;
    const char *on_error = options_text(ov, OPT_ON_ERROR);
    const char *path = ov->npos > 0 ? ov->pos[0] : NULL;
    if (on_error && strcmp(on_error, "stop") != 0 && strcmp(on_error, "skip") != 0) {
        fprintf(stderr, "tokend: --on-error must be stop or skip\n");
        return 2;
    }
    FILE *in = path && strcmp(path, "-") != 0 ? fopen(path, "r") : stdin;
    if (!in) {
        fprintf(stderr, "tokend: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    o.skip_bad = on_error && strcmp(on_error, "skip") == 0;
    o.lookalikes_ok = options_text(ov, OPT_LOOKALIKES) != NULL;
    o.cost = (crypto_pwcost){options_num(ov, OPT_PWHASH_OPS),
                             (size_t)options_num(ov, OPT_PWHASH_MEM) << 20};
    o.progress = isatty(STDERR_FILENO) ? stderr : NULL;
    store *st = open_store_of(ov);
    o.app_id = options_num(ov, OPT_APP);
    if (!o.app_id && store_default_app(st, &o.app_id) != STORE_OK) {
        fprintf(stderr, "tokend: --app is required (the data directory has no app yet)\n");
        store_close(st);
        return 2;
    }
    int rc = import_users(st, &o, in, stderr, &r);
    store_close(st);
    if (in != stdin)
        fclose(in);
    printf("imported %llu users from %llu lines; %llu left out\n", r.imported, r.lines, r.skipped);
    if (r.stopped || rc != 0)
        printf("stopped: lines 1 to %llu are written (whole batches); fix the line reported and "
               "resume from line %llu (tail -n +%llu FILE), or run again with --on-error skip\n",
               r.committed_line, r.committed_line + 1, r.committed_line + 1);
    return rc != 0 || r.stopped || r.skipped ? 1 : 0;
}

static int cmd_user_show(const option_values *ov)
{
    uint64_t id = options_num(ov, OPT_USER);
    store_user *u;
    char cost[64] = "?";
    store *st = open_store_reading(ov);
    int rc = store_user_get(st, id, &u);
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: user %llu: %s\n", (unsigned long long)id, store_strerror(rc));
        return 1;
    }
    crypto_password_describe(u->password_hash, cost, sizeof cost);
    printf("user_id: %llu\napp_id: %llu\nname: %s\nphone: %s\nemail: %s\ndisabled: %s\n"
           "password: %s\n",
           (unsigned long long)u->user_id, (unsigned long long)u->app_id, u->name, u->phone,
           u->email, u->disabled ? "yes" : "no", cost);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    return 0;
}

/* The app a command names, or the data directory's default app. */
static uint64_t app_of(const option_values *ov, store *st)
{
    uint64_t id = options_num(ov, OPT_APP);
    if (!id && store_default_app(st, &id) != STORE_OK) {
        fprintf(stderr, "tokend: --app is required (the data directory has no app yet)\n");
        exit(2);
    }
    return id;
}

/* The audit record of a CLI action, appended with the change itself. */
static const store_audit *audit_cli(store_audit *e, uint64_t app_id, const char *action,
                                    const char *detail)
{
    tokend__v1__store__audit_entry__init(e);
    e->time_ms = rpc_now_ms();
    e->app_id = app_id;
    e->actor = "cli";
    e->action = (char *)action;
    e->detail = (char *)detail;
    return e;
}

static void token_id(const uint8_t hash[CRYPTO_HASH_BYTES], char id[17])
{
    for (int i = 0; i < 8; i++)
        sprintf(id + 2 * i, "%02x", hash[i]);
}

/* --- a user in an incident: cut off, signed out, given a new password --------- */

/* Runs one change to the user --user names (change gets the open store, the
 * user and its audit record), and says what was done. */
typedef int (*user_change)(store *st, const store_user *u, const store_audit *audit, void *arg,
                           char *done, size_t donelen);

static int change_user(const option_values *ov, const char *action, user_change change, void *arg)
{
    uint64_t id = options_num(ov, OPT_USER);
    char detail[40], done[128] = "";
    store_audit entry;
    store_user *u = NULL;
    store *st = open_store_of(ov);
    /* With --cluster, the user as the cluster has it, not as this directory
     * last saw it (the change's own write would catch up only after). */
    int rc = store_catch_up(st);
    if (rc == STORE_OK)
        rc = store_user_get(st, id, &u);
    if (rc == STORE_OK) {
        snprintf(detail, sizeof detail, "user_id=%llu", (unsigned long long)id);
        rc = change(st, u, audit_cli(&entry, u->app_id, action, detail), arg, done, sizeof done);
        protobuf_c_message_free_unpacked(&u->base, NULL);
    }
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: user %llu: %s\n", (unsigned long long)id, store_strerror(rc));
        return 1;
    }
    printf("user %llu: %s\n", (unsigned long long)id, done);
    return 0;
}

static int disable(store *st, const store_user *u, const store_audit *audit, void *arg, char *done,
                   size_t donelen)
{
    int off = *(int *)arg;
    snprintf(done, donelen, off ? "disabled: it cannot log in, and its sessions are revoked"
                                : "enabled: it can log in again");
    return store_user_set_disabled(st, u->app_id, u->user_id, off, audit);
}

static int cmd_user_disable(const option_values *ov)
{
    int off = 1;
    return change_user(ov, "user disable", disable, &off);
}

static int cmd_user_enable(const option_values *ov)
{
    int off = 0;
    return change_user(ov, "user enable", disable, &off);
}

static int logout(store *st, const store_user *u, const store_audit *audit, void *arg, char *done,
                  size_t donelen)
{
    size_t n = 0;
    (void)arg;
    int rc = store_user_revoke(st, 0, u->user_id, NULL, &n, audit);
    snprintf(done, donelen, "%zu session%s revoked (every device logs in again)", n, n == 1 ? "" : "s");
    return rc;
}

static int cmd_user_logout(const option_values *ov)
{
    return change_user(ov, "user logout", logout, NULL);
}

static int set_password(store *st, const store_user *u, const store_audit *audit, void *arg,
                        char *done, size_t donelen)
{
    snprintf(done, donelen, "password set; its sessions are revoked");
    return store_user_set_password(st, u->user_id, arg, NULL, NULL, audit);
}

static int cmd_user_set_password(const option_values *ov)
{
    char pw[CRYPTO_PASSWORD_MAX + 2], hash[CRYPTO_PWHASH_STRBYTES];
    const char *why = NULL;
    crypto_pwcost cost = {options_num(ov, OPT_PWHASH_OPS),
                          (size_t)options_num(ov, OPT_PWHASH_MEM) << 20};
    size_t n = read_password(pw, sizeof pw);
    if (names_check_password(pw, n, &why) != 0) {
        crypto_wipe(pw, sizeof pw);
        fprintf(stderr, "tokend: %s\n", why);
        return 2;
    }
    int rc = crypto_password_hash(hash, pw, n, cost);
    crypto_wipe(pw, sizeof pw);
    if (rc != 0) {
        fprintf(stderr, "tokend: cannot hash the password: out of memory?\n");
        return 1;
    }
    return change_user(ov, "user set-password", set_password, hash);
}

static int cmd_admin_token_create(const option_values *ov)
{
    store *st = open_store_of(ov);
    store_session ss = TOKEND__V1__STORE__SESSION__INIT;
    uint8_t raw[CRYPTO_TOKEN_BYTES], hash[CRYPTO_HASH_BYTES];
    char text[CRYPTO_TOKEN_TEXTLEN], id[17], detail[64];
    const char *label = options_text(ov, OPT_LABEL);  /* at most TOKEND_MAX_LABEL bytes */
    ss.app_id = app_of(ov, st);
    ss.label = (char *)(label ? label : "");
    ss.created_ms = rpc_now_ms();
    ss.key_id = store_token_key_id(st);
    crypto_token_new(raw, text);
    crypto_token_hash(hash, raw, store_token_key(st));
    store_audit entry;
    token_id(hash, id);
    snprintf(detail, sizeof detail, "id=%s", id);
    int rc = store_admin_token_create(st, hash, &ss,
                                      audit_cli(&entry, ss.app_id, "admin-token create", detail));
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: cannot create the admin token: %s\n",
                rc == STORE_NOTFOUND ? "unknown app" : store_strerror(rc));
        return 1;
    }
    printf("%s\n", text);
    fprintf(stderr, "admin token %s for app %llu: keep it secret, it is shown only once\n", id,
            (unsigned long long)ss.app_id);
    return 0;
}

typedef struct {
    const char *want;  /* revoke: the id to find */
    uint8_t hash[CRYPTO_HASH_BYTES];
    int found;
} token_walk;

static void print_admin_token(const uint8_t hash[CRYPTO_HASH_BYTES], const store_session *ss,
                              void *arg)
{
    token_walk *w = arg;
    char id[17];
    token_id(hash, id);
    if (w->want) {
        if (strcmp(id, w->want) == 0) {
            memcpy(w->hash, hash, CRYPTO_HASH_BYTES);
            w->found = 1;
        }
        return;
    }
    printf("%s  created_ms=%lld  %s\n", id, (long long)ss->created_ms, ss->label);
    w->found++;
}

static int admin_token_walk(const option_values *ov, int revoke)
{
    /* a revoke is a write: caught up as writes are (a snapshot if need be) */
    store *st = revoke ? open_store_of(ov) : open_store_reading(ov);
    if (revoke && store_catch_up(st) != STORE_OK) {
        fprintf(stderr, "tokend: cannot catch up with the cluster: the database is unavailable\n");
        store_close(st);
        return 1;
    }
    token_walk w = {revoke ? options_text(ov, OPT_ID) : NULL, {0}, 0};
    uint64_t app = app_of(ov, st);
    int rc = store_admin_tokens_list(st, app, print_admin_token, &w);
    if (rc == STORE_OK && revoke && !w.found) {
        fprintf(stderr, "tokend: no admin token %s in app %llu\n", w.want, (unsigned long long)app);
        store_close(st);
        return 1;
    }
    if (rc == STORE_OK && revoke) {
        char detail[64];
        store_audit entry;
        snprintf(detail, sizeof detail, "id=%s", w.want);
        rc = store_session_revoke(st, w.hash, audit_cli(&entry, app, "admin-token revoke", detail));
        if (rc == STORE_OK)
            printf("revoked %s\n", w.want);
    }
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: %s\n", store_strerror(rc));
        return 1;
    }
    return 0;
}

static void print_audit(const store_audit *e, void *arg)
{
    printf("%lld app=%llu %s %s %s\n", (long long)e->time_ms, (unsigned long long)e->app_id,
           e->actor, e->action, e->detail);
}

static int cmd_admin_token_list(const option_values *ov)
{
    return admin_token_walk(ov, 0);
}

static int cmd_admin_token_revoke(const option_values *ov)
{
    return admin_token_walk(ov, 1);
}

static int cmd_audit(const option_values *ov)
{
    store *st = open_store_reading(ov);
    int rc = store_audit_list(st, print_audit, NULL);
    store_close(st);
    return rc == STORE_OK ? 0 : 1;
}

static int cmd_cluster_init(const option_values *ov)
{
    char msg[512];
    store *st = open_store_sized(options_text(ov, OPT_DATA), 0);
    int rc = store_cluster_init(st, options_text(ov, OPT_CLUSTER), msg, sizeof msg);
    store_close(st);
    fprintf(rc == STORE_OK ? stdout : stderr, "%s%s\n", rc == STORE_OK ? "" : "tokend: ", msg);
    return rc == STORE_OK ? 0 : 1;
}

static int cmd_app_rotate_key(const option_values *ov)
{
    store *st = open_store_of(ov);
    uint64_t app = app_of(ov, st);
    uint32_t token_id = 0, pair_id = 0;
    int rc = store_rotate_keys(st, app, &token_id, &pair_id);
    if (rc == STORE_FULL) {
        fprintf(stderr, "tokend: %d token-hash keys are all still used by sessions: wait for "
                "them to expire (or revoke them; admin tokens never expire) and rotate again\n",
                STORE_KEYS_MAX);
        store_close(st);
        return 1;
    }
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: cannot rotate the keys: %s\n",
                rc == STORE_NOTFOUND ? "unknown app" : store_strerror(rc));
        return 1;
    }
    printf("token-hash key %u, app %llu key pair %u\n", token_id, (unsigned long long)app,
           pair_id);
    return 0;
}

static int cmd_backup(const option_values *ov)
{
    char err[512];
    const char *out = options_text(ov, OPT_OUT);
    char replica[64];
    uint64_t seq = 0;
    store *st = open_store_sized(options_text(ov, OPT_DATA), 0);
    int is_replica = store_replica_of(st, replica, sizeof replica, &seq);
    int rc = store_backup(st, out, err, sizeof err);
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: %s\n", err);
        return 1;
    }
    fprintf(stderr, "backup of %s written to %s: it holds the token-hash key, guard it as the "
            "data directory\n", options_text(ov, OPT_DATA), out);
    if (is_replica)
        fprintf(stderr, "%s is a replica of cluster %s at change %llu: PostgreSQL is the system "
                "of record (back it up with pg_dump); this file restores a node that catches "
                "up from the cluster when it starts\n", options_text(ov, OPT_DATA), replica,
                (unsigned long long)seq);
    return 0;
}

static int cmd_restore(const option_values *ov)
{
    char err[512];
    const char *dir = options_text(ov, OPT_DATA), *from = options_text(ov, OPT_FROM);
    if (store_restore(from, dir, ov->v[OPT_FORCE].set, err, sizeof err) != STORE_OK) {
        fprintf(stderr, "tokend: %s\n", err);
        return 1;
    }
    /* Opened once: the restored environment must be usable as it stands. */
    store *st = open_store_sized(dir, 0);
    char replica[64];
    uint64_t seq = 0;
    int is_replica = store_replica_of(st, replica, sizeof replica, &seq), rc = 0;
    if (is_replica && ov->v[OPT_DETACH].set && store_replica_detach(st) != STORE_OK) {
        fprintf(stderr, "tokend: restored %s into %s, but cannot detach it from its cluster\n",
                from, dir);
        rc = 1;
    }
    store_close(st);
    if (rc)
        return rc;
    fprintf(stderr, "restored %s into %s\n", from, dir);
    if (is_replica && ov->v[OPT_DETACH].set)
        fprintf(stderr, "detached from cluster %s (it was at change %llu): single-node data now; "
                "`tokend cluster init` copies it into a new, empty cluster\n", replica,
                (unsigned long long)seq);
    else if (is_replica)
        fprintf(stderr, "a replica of cluster %s at change %llu: start it with --cluster URL "
                "and it catches up from the change log (or reloads a snapshot when the log no "
                "longer reaches back that far, or when the database is older than it); "
                "without --cluster it serves nothing\n", replica, (unsigned long long)seq);
    return 0;
}

static int cmd_protoset(const option_values *ov)
{
    const char *path = ov->npos > 0 ? ov->pos[0] : NULL;
    FILE *f = path ? fopen(path, "wb") : stdout;
    if (!f || fwrite(tokend_protoset, 1, tokend_protoset_len, f) != tokend_protoset_len ||
        (path && fclose(f) != 0)) {
        fprintf(stderr, "tokend: cannot write %s: %s\n", path ? path : "stdout", strerror(errno));
        return 1;
    }
    return 0;
}

static int cmd_version(const option_values *ov)
{
    printf("tokend %s\n", TOKEND_VERSION);
    return 0;
}

/* --- the commands ------------------------------------------------------ */

typedef struct {
    const char *name;            /* "admin-token create" */
    int (*run)(const option_values *ov);
    const option_id *opts;       /* the options it takes, ending with OPT_COUNT */
    const option_id *required;   /* those it needs, ending with OPT_COUNT */
    const char *args;            /* positional arguments: "FILE", "[FILE]" or NULL */
    int min_args, max_args;
    const char *summary;         /* one line, for `tokend help` */
    const char *about;           /* a paragraph, for COMMAND --help */
    const char *example;
} command;

#define OPTS(...) ((const option_id[]){__VA_ARGS__, OPT_COUNT})
#define NONE ((const option_id[]){OPT_COUNT})

static const command commands[] = {
    {"serve", cmd_serve,
     OPTS(OPT_DATA, OPT_CONFIG, OPT_LISTEN, OPT_THREADS, OPT_WORKERS, OPT_QUEUE, OPT_LOGIN_QUEUE,
          OPT_MAX_BODY,
          OPT_PWHASH_OPS, OPT_PWHASH_MEM, OPT_MAP_SIZE, OPT_MAX_CONNECTIONS, OPT_MAX_STREAMS,
          OPT_REQUEST_TIMEOUT, OPT_DEADLINE, OPT_PURGE_INTERVAL, OPT_THROTTLE_ACCOUNT,
          OPT_THROTTLE_ADDRESS, OPT_THROTTLE_WINDOW, OPT_TLS_CERT, OPT_TLS_KEY, OPT_CLUSTER,
          OPT_METRICS_LISTEN, OPT_LOG_FORMAT, OPT_ACCESS_LOG, OPT_TRUSTED_PROXIES,
          OPT_PROXY_PROTOCOL, OPT_FORWARDED_HEADER, OPT_LOCK_MEMORY),
     OPTS(OPT_DATA), NULL, 0, 0, "run the server (JSON, gRPC, gRPC-Web, protobuf on one port)",
     "Serves the data directory on one port: JSON on the vendor's paths, native gRPC (h2c, or\n"
     "TLS with --tls-cert/--tls-key), gRPC-Web and binary protobuf. Every option may also stand\n"
     "in the --config file without its dashes (\"max-body 65536\"); the command line wins.\n"
     "SIGHUP re-reads the file and applies the options marked so; SIGTERM stops accepting,\n"
     "lets calls in flight finish (at most 10 s) and exits 0. With --cluster, writes commit in\n"
     "PostgreSQL first and the data directory is this node's replica (README: Deployment).",
     "tokend serve --data /var/lib/tokend --listen 127.0.0.1:8080 --config /etc/tokend/tokend.conf"},
    {"app create", cmd_app_create, OPTS(OPT_DATA, OPT_NAME, OPT_TTL, OPT_ENCRYPT_TYPE,
                                        OPT_OPEN_REGISTRATION, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_NAME), NULL, 0, 0, "create an app; prints its app_id",
     "Creates an app in the data directory and prints its app_id. The first app is the one\n"
     "used when a request names none (no app_id header).",
     "tokend app create --data /var/lib/tokend --name chat --ttl 86400"},
    {"app list", cmd_app_list, OPTS(OPT_DATA, OPT_CLUSTER, OPT_CONFIG), OPTS(OPT_DATA), NULL, 0, 0,
     "list the apps, with their users and sessions",
     "Prints one line an app: its app_id, whether it is the default (the app of a request\n"
     "that names none), its token lifetime in seconds, encrypt_type, open registration, its\n"
     "users, sessions (expired ones count until purged) and admin tokens (counters every\n"
     "write keeps), and its name.",
     "tokend app list --data /var/lib/tokend"},
    {"app rotate-key", cmd_app_rotate_key, OPTS(OPT_DATA, OPT_APP, OPT_CLUSTER, OPT_CONFIG), OPTS(OPT_DATA), NULL, 0, 0,
     "new token-hash key and app key pair; old sessions keep theirs",
     "Adds a token-hash key to the data directory (new tokens are hashed and push tokens\n"
     "sealed with it at once, in a running server too; tokens of older keys keep working until\n"
     "they expire, and a key no session uses is retired at the next purge; at most 4 keys)\n"
     "and a key pair to the app (logins of encrypt_type 4 hand out its public half at once;\n"
     "older sessions keep the public key they were given). Clients see no other change.",
     "tokend app rotate-key --data /var/lib/tokend --app 1000"},
    {"user add", cmd_user_add, OPTS(OPT_DATA, OPT_APP, OPT_NAME, OPT_PHONE, OPT_EMAIL,
                                    OPT_PWHASH_OPS, OPT_PWHASH_MEM, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_NAME), NULL, 0, 0, "add a user (password on stdin); prints its user_id",
     "Adds a user to an app and prints the user_id. The password is one line on stdin, so it\n"
     "stays out of argv and the shell's history; on a terminal it is asked for without echo.",
     "printf '%s\\n' 'a long passphrase' | tokend user add --data /var/lib/tokend --name alice "
     "--phone +15550100"},
    {"user import", cmd_user_import,
     OPTS(OPT_DATA, OPT_APP, OPT_ON_ERROR, OPT_LOOKALIKES, OPT_PWHASH_OPS, OPT_PWHASH_MEM, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA), "[FILE]", 0, 1, "add users from JSON lines (FILE or stdin)",
     "Adds users from JSON lines, one user a line: {\"name\": ..., \"phone\": ..., \"email\": ...,\n"
     "\"password\": ...} or, instead of the password, \"password_hash\": an Argon2id string\n"
     "(kept as it is) or a bcrypt one ($2b$, $2y$: kept, and made Argon2id at the user's next\n"
     "login). Passwords are hashed on every core. Each batch of 1000 lines is one transaction:\n"
     "after a crash the data holds whole batches, and running the file again with\n"
     "--on-error skip passes over the users already there. Bad lines are reported with their\n"
     "number; exit 1 if any line was left out. A name that looks like another account's in\n"
     "the app ('Alice' for 'alice', Cyrillic letters for Latin) is a bad line, unless\n"
     "--allow-lookalikes (accounts of a migration as they were). A progress line shows on a\n"
     "terminal.",
     "tokend user import --data /var/lib/tokend --on-error skip users.jsonl"},
    {"user show", cmd_user_show, OPTS(OPT_DATA, OPT_USER, OPT_CLUSTER, OPT_CONFIG), OPTS(OPT_DATA, OPT_USER), NULL, 0, 0,
     "show a user (no secret)",
     "Prints a user's ids, login names, state and password hash parameters (not the hash).",
     "tokend user show --data /var/lib/tokend --user 10000"},
    {"user disable", cmd_user_disable, OPTS(OPT_DATA, OPT_USER, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_USER), NULL, 0, 0, "disable a user: no login, every session revoked",
     "Disables a user at once: its logins are refused and every session it has is revoked\n"
     "(a running server sees it on the next request). Recorded in the audit log.",
     "tokend user disable --data /var/lib/tokend --user 10000"},
    {"user enable", cmd_user_enable, OPTS(OPT_DATA, OPT_USER, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_USER), NULL, 0, 0, "enable a disabled user",
     "Lets a disabled user log in again. Recorded in the audit log.",
     "tokend user enable --data /var/lib/tokend --user 10000"},
    {"user logout", cmd_user_logout, OPTS(OPT_DATA, OPT_USER, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_USER), NULL, 0, 0, "revoke every session of a user",
     "Revokes every session (every device, every token) of a user at once and prints how\n"
     "many; the user may log in again. Recorded in the audit log.",
     "tokend user logout --data /var/lib/tokend --user 10000"},
    {"user set-password", cmd_user_set_password,
     OPTS(OPT_DATA, OPT_USER, OPT_PWHASH_OPS, OPT_PWHASH_MEM, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_USER), NULL, 0, 0, "set a user's password (on stdin); revokes its sessions",
     "Sets a user's password, read as one line on stdin (asked for without echo on a\n"
     "terminal), and revokes every session the user has. Recorded in the audit log.",
     "printf '%s\\n' 'a new long passphrase' | tokend user set-password --data /var/lib/tokend "
     "--user 10000"},
    {"admin-token create", cmd_admin_token_create,
     OPTS(OPT_DATA, OPT_APP, OPT_LABEL, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA), NULL, 0, 0, "create an admin token; prints it once",
     "Creates an admin token of an app, for the platform's services (Verify, store, push) and\n"
     "the app's back end. The token is printed once on stdout; only its hash is kept.",
     "tokend admin-token create --data /var/lib/tokend --label chat-service"},
    {"admin-token list", cmd_admin_token_list, OPTS(OPT_DATA, OPT_APP, OPT_CLUSTER, OPT_CONFIG), OPTS(OPT_DATA), NULL, 0,
     0, "list an app's admin tokens (ids, not tokens)",
     "Lists the admin tokens of an app: id, creation time and label.",
     "tokend admin-token list --data /var/lib/tokend"},
    {"admin-token revoke", cmd_admin_token_revoke,
     OPTS(OPT_DATA, OPT_ID, OPT_APP, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_ID), NULL, 0, 0, "revoke an admin token by its id",
     "Revokes the admin token with this id (as admin-token list shows it) at once.",
     "tokend admin-token revoke --data /var/lib/tokend --id 3f2a9c1e0b7d4a65"},
    {"audit", cmd_audit, OPTS(OPT_DATA, OPT_CLUSTER, OPT_CONFIG), OPTS(OPT_DATA), NULL, 0, 0,
     "print the audit log, oldest first",
     "Prints the audit log of every admin action (over the API and from this CLI), oldest\n"
     "first: time in ms, app, actor, action, detail.",
     "tokend audit --data /var/lib/tokend"},
    {"cluster init", cmd_cluster_init, OPTS(OPT_DATA, OPT_CLUSTER, OPT_CONFIG),
     OPTS(OPT_DATA, OPT_CLUSTER), NULL, 0, 0,
     "create or upgrade a cluster's schema; copy a data directory into it",
     "Creates the cluster's tables in PostgreSQL, or upgrades them (versioned migrations; safe\n"
     "to run again, and from several hosts at once). When the cluster holds no data yet, copies\n"
     "the data directory into it - users, sessions, devices, admin tokens and the token key -\n"
     "so every token it issued verifies on every node; the directory becomes the cluster's\n"
     "first replica. A new node needs no init: it starts from an empty directory.",
     "tokend cluster init --data /var/lib/tokend --cluster postgresql://tokend@db/tokend"},
    {"backup", cmd_backup, OPTS(OPT_DATA, OPT_OUT), OPTS(OPT_DATA, OPT_OUT), NULL, 0, 0,
     "write a consistent, compacted copy of the data to a file (while serving)",
     "Copies the data directory's LMDB environment into FILE in one read transaction: a\n"
     "consistent snapshot of the last commit, compacted, taken while a server runs and writes.\n"
     "FILE must not exist; it is written beside as FILE.partial, synced, then renamed. It holds\n"
     "the key of the token hashes: keep it as guarded as the data directory.",
     "tokend backup --data /var/lib/tokend --out /var/backups/tokend-$(date +%F).mdb"},
    {"restore", cmd_restore, OPTS(OPT_DATA, OPT_FROM, OPT_FORCE, OPT_DETACH),
     OPTS(OPT_DATA, OPT_FROM), NULL,
     0, 0, "put a backup in place as a data directory (not one in use)",
     "Makes DIR the data directory of the backup FILE. Refused when a server or a command has\n"
     "DIR open (even with --force: stop it first), when FILE is not a tokend backup, and when\n"
     "DIR holds anything, unless --force. Sessions come back as they were at the backup:\n"
     "tokens revoked since work again until they expire. The backup of a cluster node is a\n"
     "replica: restored, it catches up from the cluster when started with --cluster (so what\n"
     "was revoked since stays revoked); --detach makes it single-node data instead, to seed a\n"
     "new cluster with `cluster init` when PostgreSQL and its dumps are lost.",
     "tokend restore --from /var/backups/tokend-2026-11-30.mdb --data /var/lib/tokend-restored"},
    {"config check", cmd_config_check, NONE, NONE, "FILE", 1, 1,
     "check a config file; print the effective configuration",
     "Reads a configuration file as `tokend serve --config FILE` would. Prints the effective\n"
     "configuration (each value with where it comes from: a line or the default), or each\n"
     "error with its line number and exits 1.",
     "tokend config check /etc/tokend/tokend.conf"},
    {"protoset", cmd_protoset, NONE, NONE, "[FILE]", 0, 1,
     "write the compiled schema (FileDescriptorSet)",
     "Writes the schema compiled into this binary, a FileDescriptorSet with its imports, to\n"
     "FILE or stdout: for grpcurl -protoset and other generic gRPC tools.",
     "tokend protoset tokend.protoset && grpcurl -protoset tokend.protoset list"},
    {"version", cmd_version, NONE, NONE, NULL, 0, 0, "print the version",
     "Prints the version of tokend.", "tokend version"},
};
static const size_t ncommands = sizeof commands / sizeof commands[0];

static void print_help(const command *c, FILE *out)
{
    char syn[64];
    fprintf(out, "usage: tokend %s", c->name);
    for (const option_id *o = c->required; *o != OPT_COUNT; o++)
        fprintf(out, " %s", options_synopsis(*o, syn, sizeof syn));
    if (c->opts[0] != OPT_COUNT && c->opts[1] != OPT_COUNT)
        fputs(" [OPTIONS]", out);
    fprintf(out, "%s%s\n\n%s\n", c->args ? " " : "", c->args ? c->args : "", c->about);
    fputs("\noptions:\n", out);
    for (const option_id *o = c->opts; *o != OPT_COUNT; o++) {
        int req = 0;
        for (const option_id *q = c->required; *q != OPT_COUNT; q++)
            req |= *q == *o;
        options_print_help(*o, req, out);
    }
    fprintf(out, "  %-26s %s\n\nexample:\n  %s\n", "--help", "this help", c->example);
}

static void print_usage(FILE *out)
{
    fputs("usage: tokend COMMAND [OPTIONS]\n\ncommands:\n", out);
    for (size_t i = 0; i < ncommands; i++)
        fprintf(out, "  %-20s %s\n", commands[i].name, commands[i].summary);
    fputs("\n`tokend help COMMAND` or `tokend COMMAND --help` describes a command and its options.\n"
          "example:\n  tokend serve --data /var/lib/tokend --listen 127.0.0.1:8080\n", out);
}

/* The command named by the words of argv, or NULL; *used: how many words. */
static const command *find_command(int argc, char **argv, int *used)
{
    for (size_t i = 0; i < ncommands; i++) {
        const char *n = commands[i].name, *sp = strchr(n, ' ');
        size_t len = sp ? (size_t)(sp - n) : strlen(n);
        if (argc < 1 || strlen(argv[0]) != len || memcmp(argv[0], n, len) != 0)
            continue;
        if (!sp) {
            *used = 1;
            return &commands[i];
        }
        if (argc >= 2 && strcmp(argv[1], sp + 1) == 0) {
            *used = 2;
            return &commands[i];
        }
    }
    return NULL;
}

/* `tokend user` alone: the commands of the group. Returns how many. */
static int print_group(const char *group, FILE *out)
{
    int n = 0;
    size_t len = strlen(group);
    for (size_t i = 0; i < ncommands; i++)
        if (strncmp(commands[i].name, group, len) == 0 && commands[i].name[len] == ' ') {
            if (!n++)
                fprintf(out, "usage: tokend %s SUBCOMMAND [OPTIONS]\n\nsubcommands:\n", group);
            fprintf(out, "  %-20s %s\n", commands[i].name, commands[i].summary);
        }
    if (n)
        fprintf(out, "\n`tokend %s SUBCOMMAND --help` describes one.\n", group);
    return n;
}

static int run(int argc, char **argv)
{
    option_values ov = {0};
    char err[512];
    int used = 0, help = 0;
    const char *word = argc > 0 ? argv[0] : "";

    if (strcmp(word, "help") == 0 || strcmp(word, "--help") == 0 || strcmp(word, "-h") == 0) {
        if (argc < 2) {
            print_usage(stdout);
            return 0;
        }
        const command *c = find_command(argc - 1, argv + 1, &used);
        if (c && used == argc - 1) {
            print_help(c, stdout);
            return 0;
        }
        if (argc == 2 && print_group(argv[1], stdout))
            return 0;
        fprintf(stderr, "tokend: no command \"%s%s%s\": `tokend help` lists them\n", argv[1],
                argc > 2 ? " " : "", argc > 2 ? argv[2] : "");
        return 2;
    }
    if (strcmp(word, "--version") == 0)
        return cmd_version(&ov);
    const command *c = find_command(argc, argv, &used);
    if (!c) {
        if (argc == 0) {
            print_usage(stderr);
            return 2;
        }
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) &&
            print_group(argv[0], stdout))
            return 0;
        if (argc == 1 && print_group(argv[0], stderr))
            return 2;
        fprintf(stderr, "tokend: no command \"%s%s%s\": `tokend help` lists them\n", argv[0],
                argc > 1 && argv[1][0] != '-' ? " " : "",
                argc > 1 && argv[1][0] != '-' ? argv[1] : "");
        return 2;
    }
    if (options_parse_args(&ov, c->opts, argc - used, argv + used, &help, err, sizeof err) != 0) {
        fprintf(stderr, "tokend %s: %s\n(`tokend %s --help` lists the options)\n", c->name, err,
                c->name);
        return 2;
    }
    if (help) {
        print_help(c, stdout);
        return 0;
    }
    int rc = 2;
    if (ov.v[OPT_CONFIG].set &&
        options_read_file(&ov, ov.v[OPT_CONFIG].text, print_error, NULL) != 0)
        goto done;
    for (const option_id *o = c->required; *o != OPT_COUNT; o++)
        if (!ov.v[*o].set) {
            fprintf(stderr, "tokend %s: --%s is required: add --%s %s (e.g. --%s %s)\n", c->name,
                    options[*o].name, options[*o].name, options[*o].metavar, options[*o].name,
                    options[*o].example);
            goto done;
        }
    if (ov.npos < c->min_args || ov.npos > c->max_args) {
        fprintf(stderr, "tokend %s: %s\nusage: tokend %s%s%s\n", c->name,
                ov.npos < c->min_args ? "missing argument" : "too many arguments", c->name,
                c->args ? " " : "", c->args ? c->args : "");
        goto done;
    }
    rc = c->run(&ov);
done:
    options_free(&ov);
    return rc;
}

int main(int argc, char **argv)
{
    if (crypto_init() != 0) {
        fprintf(stderr, "tokend: libsodium failed to initialise\n");
        return 1;
    }
    transcode_init();
    return run(argc - 1, argv + 1);
}
