/* main.c - the tokend command line: `serve` runs the server; the other
 * subcommands administer a data directory directly through the store,
 * which is safe while a server runs on it (LMDB is multi-process). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include "account.h"
#include "config.h"
#include "decoy.h"
#include "router.h"
#include "rpc.h"
#include "server.h"

static const char usage[] =
    "usage: tokend COMMAND [OPTIONS]\n"
    "  serve --data DIR [--config FILE] [--listen HOST:PORT] [--threads N] [--workers N] [--queue N]\n"
    "        [--max-body BYTES] [--pwhash-ops N] [--pwhash-mem MIB] [--tls-cert F --tls-key F]\n"
    "        [--map-size MIB] (initial; the map doubles as it fills)\n"
    "        [--max-connections N] [--max-streams N] [--request-timeout SECONDS]\n"
    "        [--deadline SECONDS]  (for calls that set no grpc-timeout)\n"
    "        [--purge-interval SECONDS] [--throttle-account N] [--throttle-address N]\n"
    "        [--throttle-window SECONDS]   (failed logins per window; 0 turns a limit off)\n"
    "  app create --data DIR --name NAME [--ttl SECONDS] [--encrypt-type 0-4] [--open-registration]\n"
    "  admin-token create --data DIR [--app APP_ID] [--label TEXT]   prints the token once\n"
    "  admin-token list --data DIR [--app APP_ID]\n"
    "  admin-token revoke --data DIR --id ID [--app APP_ID]\n"
    "  audit --data DIR        the admin actions, oldest first\n"
    "  user add --data DIR [--app APP_ID] --name NAME [--phone P] [--email E]\n"
    "        [--pwhash-ops N] [--pwhash-mem MIB]     (password on stdin)\n"
    "  user show --data DIR --user USER_ID\n"
    "  protoset [FILE]       write the compiled schema (FileDescriptorSet)\n"
    "  version\n";

typedef struct {
    int argc;
    char **argv;
} args;

/* The value after the first --name, or NULL. Marks every --name pair as
 * used: a later one (from the config file) yields to the first. */
static const char *opt(args *a, const char *name)
{
    const char *v = NULL;
    for (int i = 0; i < a->argc; i++) {
        if (a->argv[i] && strcmp(a->argv[i], name) == 0) {
            if (i + 1 >= a->argc || !a->argv[i + 1]) {
                fprintf(stderr, "tokend: %s needs a value\n", name);
                exit(2);
            }
            if (!v)
                v = a->argv[i + 1];
            a->argv[i] = a->argv[i + 1] = NULL;
        }
    }
    return v;
}

static int flag(args *a, const char *name)
{
    for (int i = 0; i < a->argc; i++)
        if (a->argv[i] && strcmp(a->argv[i], name) == 0) {
            a->argv[i] = NULL;
            return 1;
        }
    return 0;
}

static void no_leftovers(args *a)
{
    for (int i = 0; i < a->argc; i++)
        if (a->argv[i]) {
            fprintf(stderr, "tokend: unknown option %s\n%s", a->argv[i], usage);
            exit(2);
        }
}

static unsigned long long num(args *a, const char *name, unsigned long long dflt,
                              unsigned long long min, unsigned long long max)
{
    const char *v = opt(a, name);
    char *end;
    if (!v)
        return dflt;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || *end || end == v || n < min || n > max || v[0] == '-') {
        fprintf(stderr, "tokend: %s must be a number from %llu to %llu\n", name, min, max);
        exit(2);
    }
    return n;
}

static const char *need(args *a, const char *name)
{
    const char *v = opt(a, name);
    if (!v) {
        fprintf(stderr, "tokend: %s is required\n", name);
        exit(2);
    }
    return v;
}

static crypto_pwcost pwcost(args *a)
{
    crypto_pwcost c = CRYPTO_PWCOST_DEFAULT;
    c.ops = num(a, "--pwhash-ops", c.ops, 1, 100);
    c.mem = (size_t)num(a, "--pwhash-mem", c.mem >> 20, 1, 4096) << 20;
    return c;
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

static store *open_store(const char *dir)
{
    return open_store_sized(dir, 0);
}

static int cmd_serve(args *a)
{
    tokend_config cfg = {0};
    tokend_ctx ctx = {.config = &cfg};
    router *router;
    char err[256];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    char **owned = NULL;
    cfg.config_file = opt(a, "--config");
    if (cfg.config_file) {
        /* The file's options go after the command line's, which win. */
        if (config_read(cfg.config_file, &a->argc, &a->argv, &owned, err, sizeof err) != 0) {
            fprintf(stderr, "tokend: %s\n", err);
            return 2;
        }
    }
    cfg.data_dir = need(a, "--data");
    cfg.listen = opt(a, "--listen");
    if (!cfg.listen)
        cfg.listen = "127.0.0.1:8080";
    cfg.threads = (unsigned)num(a, "--threads", cores > 0 ? (unsigned long long)cores : 1, 1, 256);
    cfg.workers = (unsigned)num(a, "--workers", cores > 0 ? (unsigned long long)cores : 1, 1, 256);
    cfg.queue = (unsigned)num(a, "--queue", 256, 0, 1000000);
    cfg.max_body = (size_t)num(a, "--max-body", 64 * 1024, 64, 16 << 20);
    cfg.pwcost = pwcost(a);
    cfg.mapsize = (size_t)num(a, "--map-size", 1024, 1, 1u << 20) << 20;
    cfg.purge_interval = (unsigned)num(a, "--purge-interval", 60, 1, 86400);
    cfg.max_connections = (unsigned)num(a, "--max-connections", 10000, 1, 1000000);
    cfg.max_streams = (unsigned)num(a, "--max-streams", 100, 1, 256);
    cfg.request_timeout = (unsigned)num(a, "--request-timeout", 10, 1, 3600);
    cfg.deadline = (unsigned)num(a, "--deadline", 30, 1, 3600);
    cfg.throttle.account = (unsigned)num(a, "--throttle-account", 10, 0, 1000000);
    cfg.throttle.address = (unsigned)num(a, "--throttle-address", 100, 0, 1000000);
    cfg.throttle.window_s = (unsigned)num(a, "--throttle-window", 900, 1, 86400);
    cfg.tls_cert = opt(a, "--tls-cert");
    cfg.tls_key = opt(a, "--tls-key");
    no_leftovers(a);
    if (!cfg.tls_cert != !cfg.tls_key) {
        fprintf(stderr, "tokend: --tls-cert and --tls-key go together\n");
        return 2;
    }
    ctx.store = open_store_sized(cfg.data_dir, cfg.mapsize);
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
    int rc = server_run(&ctx, router);
    pool_destroy(ctx.pool);
    throttle_free(ctx.throttle);
    decoy_free(ctx.decoy);
    store_close(ctx.store);
    router_free(router);
    if (cfg.config_file) {
        config_free(owned);
        free(a->argv);
    }
    return rc;
}

static int cmd_app_create(args *a)
{
    store_app app = TOKEND__V1__STORE__APP__INIT;
    const char *dir = need(a, "--data");
    app.name = (char *)need(a, "--name");
    app.token_ttl_ms = (int64_t)num(a, "--ttl", 7 * 24 * 3600, 1, 10ull * 365 * 24 * 3600) * 1000;
    app.encrypt_type = (int32_t)num(a, "--encrypt-type", 4, 0, 4);
    app.open_registration = flag(a, "--open-registration");
    app.created_ms = rpc_now_ms();
    no_leftovers(a);
    store *st = open_store(dir);
    int rc = store_app_create(st, &app);
    store_close(st);
    if (rc != STORE_OK) {
        fprintf(stderr, "tokend: cannot create the app: %s\n", store_strerror(rc));
        return 1;
    }
    printf("%llu\n", (unsigned long long)app.app_id);
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
        fprintf(stderr, "tokend: password must be at most 1024 bytes\n");
        exit(2);
    }
    if (n && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return n;
}

static int cmd_user_add(args *a)
{
    account_new in = {0};
    char pw[CRYPTO_PASSWORD_MAX + 2], msg[256];
    const char *dir = need(a, "--data");
    uint64_t uid;

    in.name = need(a, "--name");
    in.phone = opt(a, "--phone");
    in.email = opt(a, "--email");
    crypto_pwcost cost = pwcost(a);
    in.app_id = num(a, "--app", 0, 1, UINT64_MAX);
    no_leftovers(a);
    in.password_len = read_password(pw, sizeof pw);
    in.password = pw;
    store *st = open_store(dir);
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

static int cmd_user_show(args *a)
{
    const char *dir = need(a, "--data");
    uint64_t id = num(a, "--user", 0, 1, UINT64_MAX);
    store_user *u;
    char cost[64] = "?";
    no_leftovers(a);
    if (!id) {
        fprintf(stderr, "tokend: --user is required\n");
        return 2;
    }
    store *st = open_store(dir);
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
static uint64_t app_of(args *a, store *st)
{
    uint64_t id = num(a, "--app", 0, 1, UINT64_MAX);
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

static int cmd_admin_token_create(args *a)
{
    store *st = open_store(need(a, "--data"));
    store_session ss = TOKEND__V1__STORE__SESSION__INIT;
    uint8_t raw[CRYPTO_TOKEN_BYTES], hash[CRYPTO_HASH_BYTES];
    char text[CRYPTO_TOKEN_TEXTLEN], id[17], detail[64];
    const char *label = opt(a, "--label");
    ss.app_id = app_of(a, st);
    no_leftovers(a);
    if (label && strlen(label) > 128) {
        fprintf(stderr, "tokend: --label must be at most 128 bytes\n");
        store_close(st);
        return 2;
    }
    ss.label = (char *)(label ? label : "");
    ss.created_ms = rpc_now_ms();
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

static int cmd_admin_token_list(args *a, int revoke)
{
    store *st = open_store(need(a, "--data"));
    token_walk w = {revoke ? need(a, "--id") : NULL, {0}, 0};
    uint64_t app = app_of(a, st);
    no_leftovers(a);
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

static int cmd_audit(args *a)
{
    store *st = open_store(need(a, "--data"));
    no_leftovers(a);
    int rc = store_audit_list(st, print_audit, NULL);
    store_close(st);
    return rc == STORE_OK ? 0 : 1;
}

static int cmd_protoset(args *a)
{
    const char *path = a->argc > 0 ? a->argv[0] : NULL;
    FILE *f = path ? fopen(path, "wb") : stdout;
    if (!f || fwrite(tokend_protoset, 1, tokend_protoset_len, f) != tokend_protoset_len ||
        (path && fclose(f) != 0)) {
        fprintf(stderr, "tokend: cannot write %s: %s\n", path ? path : "stdout", strerror(errno));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (crypto_init() != 0) {
        fprintf(stderr, "tokend: libsodium failed to initialise\n");
        return 1;
    }
    const char *cmd = argc > 1 ? argv[1] : "";
    const char *sub = argc > 2 ? argv[2] : "";
    args a = {argc - 2, argv + 2};
    args a2 = {argc - 3, argv + 3};

    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(&a);
    if (strcmp(cmd, "app") == 0 && strcmp(sub, "create") == 0)
        return cmd_app_create(&a2);
    if (strcmp(cmd, "user") == 0 && strcmp(sub, "add") == 0)
        return cmd_user_add(&a2);
    if (strcmp(cmd, "user") == 0 && strcmp(sub, "show") == 0)
        return cmd_user_show(&a2);
    if (strcmp(cmd, "admin-token") == 0 && strcmp(sub, "create") == 0)
        return cmd_admin_token_create(&a2);
    if (strcmp(cmd, "admin-token") == 0 && strcmp(sub, "list") == 0)
        return cmd_admin_token_list(&a2, 0);
    if (strcmp(cmd, "admin-token") == 0 && strcmp(sub, "revoke") == 0)
        return cmd_admin_token_list(&a2, 1);
    if (strcmp(cmd, "audit") == 0)
        return cmd_audit(&a);
    if (strcmp(cmd, "protoset") == 0)
        return cmd_protoset(&a);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("tokend %s\n", TOKEND_VERSION);
        return 0;
    }
    fputs(usage, strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ? stdout : stderr);
    return strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ? 0 : 2;
}
