/* options.c - the option table and the two ways in: argv and the config file. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cluster.h"
#include "options.h"

#define F OPT_IN_FILE
#define R OPT_RELOAD

const option_spec options[OPT_COUNT] = {
    [OPT_DATA] = {"data", OPT_TEXT, "DIR", 0, 0, 0, NULL, F,
                  "the data directory (an LMDB environment; made if missing)", "/var/lib/tokend"},
    [OPT_CONFIG] = {"config", OPT_TEXT, "FILE", 0, 0, 0, NULL, 0,
                    "read options from FILE, one \"name value\" a line; the command line wins",
                    "/etc/tokend/tokend.conf"},
    [OPT_LISTEN] = {"listen", OPT_TEXT, "HOST:PORT", 0, 0, 0, TOKEND_DEFAULT_LISTEN, F,
                    "the address and TCP port to serve on", "127.0.0.1:8080"},
    [OPT_THREADS] = {"threads", OPT_NUMBER, "N", 1, TOKEND_MAX_THREADS, 1, NULL, F | OPT_CORES,
                     "event-loop threads", "2"},
    [OPT_WORKERS] = {"workers", OPT_NUMBER, "N", 1, TOKEND_MAX_THREADS, 1, NULL, F | OPT_CORES,
                     "worker threads for Argon2id and writes", "2"},
    [OPT_QUEUE] = {"queue", OPT_NUMBER, "N", 0, TOKEND_MAX_QUEUE, TOKEND_DEFAULT_QUEUE, NULL, F,
                   "jobs that may wait for a busy worker (beyond them: 503)", "256"},
    [OPT_LOGIN_QUEUE] = {"login-queue", OPT_NUMBER, "N", 0, TOKEND_MAX_LOGIN_QUEUE,
                         TOKEND_DEFAULT_LOGIN_QUEUE, NULL, F,
                         "password checks that may wait per busy worker (beyond them: 503 at "
                         "once); an accepted login waits for at most N others per worker; one "
                         "fewer while hashing takes CPU from busy event loops", "1"},
    [OPT_MAX_BODY] = {"max-body", OPT_NUMBER, "BYTES", TOKEND_MIN_BODY, TOKEND_MAX_BODY,
                      TOKEND_DEFAULT_BODY, NULL, F | R,
                      "largest request body (larger: 413)", "65536"},
    [OPT_PWHASH_OPS] = {"pwhash-ops", OPT_NUMBER, "N", 1, TOKEND_MAX_PWHASH_OPS,
                        CRYPTO_PWCOST_DEFAULT_OPS, NULL, F,
                        "Argon2id passes of new password hashes (older ones are upgraded)", "2"},
    [OPT_PWHASH_MEM] = {"pwhash-mem", OPT_NUMBER, "MIB", 1, TOKEND_MAX_PWHASH_MEM_MIB,
                        CRYPTO_PWCOST_DEFAULT_MEM_MIB, NULL, F | OPT_MIB,
                        "Argon2id memory of new password hashes, in MiB", "19"},
    [OPT_MAP_SIZE] = {"map-size", OPT_NUMBER, "MIB", 1, TOKEND_MAX_MAP_MIB, TOKEND_DEFAULT_MAP_MIB,
                      NULL, F | OPT_MIB, "initial LMDB map size in MiB (it doubles as it fills)",
                      "1024"},
    [OPT_MAX_CONNECTIONS] = {"max-connections", OPT_NUMBER, "N", 1, TOKEND_MAX_CONNECTIONS,
                             TOKEND_DEFAULT_CONNECTIONS, NULL, F,
                             "open connections over all threads", "10000"},
    [OPT_MAX_STREAMS] = {"max-streams", OPT_NUMBER, "N", 1, TOKEND_MAX_STREAMS,
                         TOKEND_DEFAULT_STREAMS, NULL, F,
                         "concurrent requests on one HTTP/2 connection", "100"},
    [OPT_REQUEST_TIMEOUT] = {"request-timeout", OPT_NUMBER, "SECONDS", 1, TOKEND_MAX_SECONDS, 10,
                             NULL, F, "time for a request to arrive (slow clients); HTTP/2 idle",
                             "10"},
    [OPT_DEADLINE] = {"deadline", OPT_NUMBER, "SECONDS", 1, TOKEND_MAX_SECONDS, 30, NULL, F | R,
                      "time a call may take when it sets no grpc-timeout", "30"},
    [OPT_PURGE_INTERVAL] = {"purge-interval", OPT_NUMBER, "SECONDS", 1, TOKEND_DAY_SECONDS, 60,
                            NULL, F,
                            "time between purges of expired sessions (and of hash memory "
                            "unused that long)", "60"},
    [OPT_THROTTLE_ACCOUNT] = {"throttle-account", OPT_NUMBER, "N", 0, TOKEND_MAX_THROTTLE, 10,
                              NULL, F | R,
                              "failed logins per account and address per window (0: no limit)",
                              "10"},
    [OPT_THROTTLE_ADDRESS] = {"throttle-address", OPT_NUMBER, "N", 0, TOKEND_MAX_THROTTLE, 100,
                              NULL, F | R, "failed logins per client address per window (0: no limit)",
                              "100"},
    [OPT_THROTTLE_WINDOW] = {"throttle-window", OPT_NUMBER, "SECONDS", 1, TOKEND_DAY_SECONDS, 900,
                             NULL, F | R, "the window of the throttle limits", "900"},
    [OPT_TLS_CERT] = {"tls-cert", OPT_TEXT, "FILE", 0, 0, 0, NULL, F,
                      "PEM certificate chain: the port then speaks TLS only (with --tls-key)",
                      "/etc/tokend/cert.pem"},
    [OPT_TLS_KEY] = {"tls-key", OPT_TEXT, "FILE", 0, 0, 0, NULL, F,
                     "PEM private key of --tls-cert", "/etc/tokend/key.pem"},
    [OPT_CLUSTER] = {"cluster", OPT_TEXT, "URL", 0, 0, 0, NULL, F,
                     "cluster mode: PostgreSQL holds the data, --data is this node's replica",
                     "postgresql://tokend@db.example/tokend"},

    [OPT_METRICS_LISTEN] = {"metrics-listen", OPT_TEXT, "HOST:PORT", 0, 0, 0, NULL, F,
                            "serve GET /metrics here only (not on --listen): keep it off the "
                            "internet", "127.0.0.1:9090"},
    [OPT_LOG_FORMAT] = {"log-format", OPT_TEXT, "json|text", 0, 0, 0, "json", F,
                        "request lines and server events as JSON lines or as text", "json"},
    [OPT_ACCESS_LOG] = {"access-log", OPT_TEXT, "off|FILE|stderr", 0, 0, 0, "stderr", F,
                        "where the line of each request goes (events always go to stderr); "
                        "SIGHUP reopens a FILE", "/var/log/tokend/access.log"},
    [OPT_TRUSTED_PROXIES] = {"trusted-proxies", OPT_TEXT, "NET,...", 0, 0, 0, NULL, F,
                             "proxies in front (CIDR networks or addresses): a request they pass "
                             "on is known by the client their --forwarded-header names (throttle, "
                             "logs)",
                             "10.0.0.0/8,127.0.0.1"},
    [OPT_PROXY_PROTOCOL] = {"proxy-protocol", OPT_TEXT, "off|on", 0, 0, 0, "off", F,
                            "on: connections from --trusted-proxies (L4 balancers) may open with "
                            "a PROXY protocol header naming the client, v1 or v2", "on"},
    [OPT_FORWARDED_HEADER] = {"forwarded-header", OPT_TEXT, "x-forwarded-for|forwarded", 0, 0, 0,
                              "x-forwarded-for", F,
                              "the header --trusted-proxies write the client in: "
                              "X-Forwarded-For, or Forwarded's for= (RFC 7239); the other is "
                              "never read", "forwarded"},
    [OPT_LOCK_MEMORY] = {"lock-memory", OPT_TEXT, "off|on", 0, 0, 0, "off", F,
                         "on: keep the data directory's file in memory (read in at start, "
                         "locked with all the server maps), so no call waits for the disk; "
                         "needs the memory, and an unlimited memlock limit or CAP_IPC_LOCK",
                         "on"},

    [OPT_APP] = {"app", OPT_NUMBER, "APP_ID", 1, UINT64_MAX, 0, NULL, 0,
                 "the app (default: the data directory's first app)", "1"},
    [OPT_NAME] = {"name", OPT_TEXT, "NAME", 0, 0, 0, NULL, 0,
                  "the app's name (app create) or the username (user add)", "alice"},
    [OPT_TTL] = {"ttl", OPT_NUMBER, "SECONDS", 1, TOKEND_MAX_TTL_SECONDS,
                 TOKEND_DEFAULT_TTL_SECONDS, NULL, 0, "lifetime of the app's access tokens",
                 "604800"},
    [OPT_ENCRYPT_TYPE] = {"encrypt-type", OPT_NUMBER, "0-4", 0, TOKEND_MAX_ENCRYPT_TYPE, 4, NULL, 0,
                          "connection key method: 0 none, 1 AES-CBC-128, 2 AES-CBC-256, 3 custom, "
                          "4 XChaCha20-Poly1305", "4"},
    [OPT_OPEN_REGISTRATION] = {"open-registration", OPT_FLAG, NULL, 0, 0, 0, NULL, 0,
                               "anyone may call /user/register/v2 (else an admin token)", NULL},
    [OPT_PHONE] = {"phone", OPT_TEXT, "PHONE", 0, 0, 0, NULL, 0,
                   "phone number, a login name too (digits, optional '+')", "+15550100"},
    [OPT_EMAIL] = {"email", OPT_TEXT, "EMAIL", 0, 0, 0, NULL, 0, "email address, a login name too",
                   "alice@example.com"},
    [OPT_USER] = {"user", OPT_NUMBER, "USER_ID", 1, UINT64_MAX, 0, NULL, 0, "the user's id",
                  "10000"},
    [OPT_LABEL] = {"label", OPT_TEXT, "TEXT", 0, TOKEND_MAX_LABEL, 0, NULL, 0,
                   "what the token is for, shown by admin-token list", "chat-service"},
    [OPT_ID] = {"id", OPT_TEXT, "ID", 0, 0, 0, NULL, 0,
                "the admin token's id, as admin-token list shows it", "3f2a9c1e0b7d4a65"},
    [OPT_OUT] = {"out", OPT_TEXT, "FILE", 0, 0, 0, NULL, 0,
                 "the backup file to write (must not exist)", "/var/backups/tokend-2026-11-30.mdb"},
    [OPT_FROM] = {"from", OPT_TEXT, "FILE", 0, 0, 0, NULL, 0, "the backup file to restore",
                  "/var/backups/tokend-2026-11-30.mdb"},
    [OPT_FORCE] = {"force", OPT_FLAG, NULL, 0, 0, 0, NULL, 0,
                   "replace the data of a non-empty directory (never of one in use)", NULL},
    [OPT_DETACH] = {"detach", OPT_FLAG, NULL, 0, 0, 0, NULL, 0,
                    "restore a cluster node's backup as single-node data (to seed a new "
                    "cluster with `cluster init`)", NULL},
    [OPT_ON_ERROR] = {"on-error", OPT_TEXT, "stop|skip", 0, 0, 0, "stop", 0,
                      "a bad line (reported with its number either way): stop before its batch, "
                      "or skip it and go on", "skip"},
    [OPT_LOOKALIKES] = {"allow-lookalikes", OPT_FLAG, NULL, 0, 0, 0, NULL, 0,
                        "import names that look like another account's name in the app (a "
                        "migration's accounts as they were); else such a line is bad", NULL},
};

#undef F
#undef R

static int find(const char *name, size_t len)
{
    for (int i = 0; i < OPT_COUNT; i++)
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return i;
    return -1;
}

static int allowed_has(const option_id *allowed, int id)
{
    for (; *allowed != OPT_COUNT; allowed++)
        if ((int)*allowed == id)
            return 1;
    return 0;
}

/* Checks `text` against the option's limits. Returns 0, or -1 with `why`
 * saying what a good value is. */
static int check_value(const option_spec *o, const char *text, unsigned long long *num,
                       char *why, size_t len)
{
    if (o->kind == OPT_TEXT) {
        if (!*text) {
            snprintf(why, len, "give a non-empty value");
            return -1;
        }
        if (o->max && strlen(text) > o->max) {
            snprintf(why, len, "give at most %llu bytes", o->max);
            return -1;
        }
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || errno || *end || n < o->min || n > o->max) {
        if (o->max == UINT64_MAX)
            snprintf(why, len, "give a whole number from %llu", o->min);
        else
            snprintf(why, len, "give a whole number from %llu to %llu", o->min, o->max);
        return -1;
    }
    *num = n;
    return 0;
}

static void set(option_value *v, const char *text, unsigned long long num, int line)
{
    v->set = 1, v->text = text, v->num = num, v->line = line;
}

int options_parse_args(option_values *ov, const option_id *allowed, int argc, char **argv,
                       int *help, char *err, size_t errlen)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = 1;
            continue;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (ov->npos == TOKEND_MAX_POSITIONAL) {
                snprintf(err, errlen, "unexpected argument \"%s\"", a);
                return -1;
            }
            ov->pos[ov->npos++] = a;
            continue;
        }
        const char *name = a[1] == '-' ? a + 2 : a + 1, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        int id = a[1] == '-' ? find(name, nlen) : -1;
        if (id < 0 || !allowed_has(allowed, id)) {
            snprintf(err, errlen, id < 0 ? "unknown option %.*s" : "%.*s is not an option of this command",
                     (int)(name - a + nlen), a);
            return -1;
        }
        const option_spec *o = &options[id];
        const char *text;
        if (o->kind == OPT_FLAG) {
            if (eq) {
                snprintf(err, errlen, "--%s takes no value: give just --%s", o->name, o->name);
                return -1;
            }
            text = "yes";
        } else {
            text = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            /* "--data --listen X": the value was forgotten. */
            if (!text || (!eq && text[0] == '-' && text[1] == '-' && find(text + 2, strlen(text + 2)) >= 0)) {
                snprintf(err, errlen, "--%s needs a value: --%s %s (e.g. --%s %s)", o->name, o->name,
                         o->metavar, o->name, o->example);
                return -1;
            }
        }
        unsigned long long num = 1;
        char why[128];
        if (o->kind != OPT_FLAG && check_value(o, text, &num, why, sizeof why) != 0) {
            snprintf(err, errlen, "bad value \"%s\" for --%s: %s (e.g. --%s %s)", text, o->name, why,
                     o->name, o->example);
            return -1;
        }
        if (!ov->v[id].set)  /* the first one wins */
            set(&ov->v[id], text, num, 0);
    }
    return 0;
}

static void report_line(option_error_fn *report, void *arg, const char *path, int line,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void report_line(option_error_fn *report, void *arg, const char *path, int line,
                        const char *fmt, ...)
{
    char text[384], msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!path) {   /* the command line: the reporter names tokend */
        report(arg, text);
        return;
    }
    /* What went wrong is kept whole; a path too long for the rest loses
     * its start, not its end (the file's name). */
    size_t room = sizeof msg - strlen(text) - 24, plen = strlen(path);
    const char *cut = plen > room ? "..." : "";
    const char *tail = plen > room ? path + plen - (room - 3) : path;
    if (line)
        snprintf(msg, sizeof msg, "%s%s:%d: %s", cut, tail, line, text);
    else
        snprintf(msg, sizeof msg, "%s%s: %s", cut, tail, text);
    report(arg, msg);
}

/* The whole file in one NUL-terminated block, or NULL with errno set. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (!f)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            if (cap >= (1u << 20)) {  /* a config file is small: this is not one */
                errno = EFBIG;
                break;
            }
            char *n = realloc(buf, cap = cap ? cap * 2 : 4096);
            if (!n)
                break;
            buf = n;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                break;
            fclose(f);
            buf[len] = '\0';
            return buf;
        }
    }
    int saved = errno;
    fclose(f);
    free(buf);
    errno = saved;
    return NULL;
}

int options_read_file(option_values *ov, const char *path, option_error_fn *report, void *arg)
{
    char *buf = slurp(path);
    int errors = 0, lineno = 0;
    int first_line[OPT_COUNT] = {0};
    if (!buf) {
        report_line(report, arg, path, 0, "cannot read the config file: %s", strerror(errno));
        return -1;
    }
    free(ov->strings);
    ov->strings = buf;
    ov->file = path;
    for (char *line = buf, *next; line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (strlen(line) > TOKEND_CONFIG_LINE_MAX) {
            report_line(report, arg, path, lineno, "line longer than %d bytes", TOKEND_CONFIG_LINE_MAX);
            errors++;
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *words[3], *save = NULL;
        int n = 0;
        for (char *w = strtok_r(line, " \t\r\v\f", &save); w; w = strtok_r(NULL, " \t\r\v\f", &save))
            if (n < 3)
                words[n++] = w;
            else
                n = 4;
        if (n == 0)
            continue;
        if (words[0][0] == '-') {
            report_line(report, arg, path, lineno, "write \"%s\" without its dashes",
                        words[0] + strspn(words[0], "-"));
            errors++;
            continue;
        }
        int id = find(words[0], strlen(words[0]));
        if (id < 0 || !(options[id].flags & OPT_IN_FILE)) {
            report_line(report, arg, path, lineno,
                        id < 0 ? "unknown option \"%s\" (tokend help serve lists them)"
                               : "\"%s\" cannot be set in the config file", words[0]);
            errors++;
            continue;
        }
        const option_spec *o = &options[id];
        if (n != 2) {
            report_line(report, arg, path, lineno, "%s takes one value: \"%s %s\" (e.g. \"%s %s\")",
                        o->name, o->name, o->metavar, o->name, o->example);
            errors++;
            continue;
        }
        unsigned long long num = 0;
        char why[128];
        if (check_value(o, words[1], &num, why, sizeof why) != 0) {
            report_line(report, arg, path, lineno, "bad value \"%s\" for %s: %s (e.g. \"%s %s\")",
                        words[1], o->name, why, o->name, o->example);
            errors++;
            continue;
        }
        if (first_line[id]) {
            report_line(report, arg, path, lineno, "%s is set again (first at line %d): keep one",
                        o->name, first_line[id]);
            errors++;
            continue;
        }
        first_line[id] = lineno;
        if (!ov->v[id].set)  /* the command line wins */
            set(&ov->v[id], words[1], num, lineno);
    }
    return errors;
}

void options_free(option_values *ov)
{
    free(ov->strings);
    ov->strings = NULL;
}

static unsigned long long cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > TOKEND_MAX_THREADS ? TOKEND_MAX_THREADS : (unsigned long long)n;
}

unsigned long long options_num(const option_values *ov, option_id id)
{
    if (ov->v[id].set)
        return ov->v[id].num;
    return options[id].flags & OPT_CORES ? cores() : options[id].dflt;
}

const char *options_text(const option_values *ov, option_id id)
{
    return ov->v[id].set ? ov->v[id].text : options[id].dflt_text;
}

/* HOST:PORT with a port of 1 to 65535 (getaddrinfo would take 65616 as
 * port 80). */
static int port_ok(const char *hostport)
{
    const char *p = strrchr(hostport, ':');
    unsigned long port = 0;
    if (!p || !p[1] || strlen(p + 1) > 5)
        return 0;
    for (p++; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    return port >= 1 && port <= 65535;
}

/* "bad value V for NAME: FIX", NAME as it was given: a line of the file, or
 * a --flag. Returns 1, options_to_config's refusal. */
static int bad_value(const option_values *ov, option_id id, const char *value, const char *fix,
                     option_error_fn *report, void *arg)
{
    const option_value *given = &ov->v[id];
    if (given->line)
        report_line(report, arg, ov->file, given->line, "bad value \"%s\" for %s: %s", value,
                    options[id].name, fix);
    else
        report_line(report, arg, NULL, 0, "bad value \"%s\" for --%s: %s", value, options[id].name,
                    fix);
    return 1;
}

int options_to_config(const option_values *ov, tokend_config *cfg, option_error_fn *report,
                      void *arg)
{
    cfg->data_dir = options_text(ov, OPT_DATA);
    cfg->config_file = options_text(ov, OPT_CONFIG);
    cfg->listen = options_text(ov, OPT_LISTEN);
    cfg->threads = (unsigned)options_num(ov, OPT_THREADS);
    cfg->workers = (unsigned)options_num(ov, OPT_WORKERS);
    cfg->queue = (unsigned)options_num(ov, OPT_QUEUE);
    cfg->login_queue = (unsigned)options_num(ov, OPT_LOGIN_QUEUE);
    cfg->max_body = (size_t)options_num(ov, OPT_MAX_BODY);
    cfg->pwcost.ops = options_num(ov, OPT_PWHASH_OPS);
    cfg->pwcost.mem = (size_t)options_num(ov, OPT_PWHASH_MEM) << 20;
    cfg->mapsize = (size_t)options_num(ov, OPT_MAP_SIZE) << 20;
    cfg->max_connections = (unsigned)options_num(ov, OPT_MAX_CONNECTIONS);
    cfg->max_streams = (unsigned)options_num(ov, OPT_MAX_STREAMS);
    cfg->request_timeout = (unsigned)options_num(ov, OPT_REQUEST_TIMEOUT);
    cfg->deadline = (unsigned)options_num(ov, OPT_DEADLINE);
    cfg->purge_interval = (unsigned)options_num(ov, OPT_PURGE_INTERVAL);
    cfg->throttle.account = (unsigned)options_num(ov, OPT_THROTTLE_ACCOUNT);
    cfg->throttle.address = (unsigned)options_num(ov, OPT_THROTTLE_ADDRESS);
    cfg->throttle.window_s = (unsigned)options_num(ov, OPT_THROTTLE_WINDOW);
    cfg->tls_cert = options_text(ov, OPT_TLS_CERT);
    cfg->tls_key = options_text(ov, OPT_TLS_KEY);
    cfg->cluster_url = options_text(ov, OPT_CLUSTER);
    cfg->metrics_listen = options_text(ov, OPT_METRICS_LISTEN);
    cfg->access_log = options_text(ov, OPT_ACCESS_LOG);
    static const int addresses[] = {OPT_LISTEN, OPT_METRICS_LISTEN};
    for (size_t i = 0; i < sizeof addresses / sizeof *addresses; i++) {
        const char *a = options_text(ov, addresses[i]);
        if (!a || port_ok(a))
            continue;
        const option_value *given = &ov->v[addresses[i]];
        if (given->line)
            report_line(report, arg, ov->file, given->line,
                        "bad value \"%s\" for %s: give HOST:PORT with a port from 1 to 65535", a,
                        options[addresses[i]].name);
        else
            report_line(report, arg, NULL, 0,
                        "bad value \"%s\" for --%s: give HOST:PORT with a port from 1 to 65535", a,
                        options[addresses[i]].name);
        return 1;
    }
    const char *tp = options_text(ov, OPT_TRUSTED_PROXIES);
    char why[160];
    cfg->trusted_proxies.n = 0;
    if (tp && proxies_parse(&cfg->trusted_proxies, tp, why, sizeof why) != 0) {
        const option_value *given = &ov->v[OPT_TRUSTED_PROXIES];
        if (given->line)
            report_line(report, arg, ov->file, given->line, "bad value for trusted-proxies: %s", why);
        else
            report_line(report, arg, NULL, 0, "bad value for --trusted-proxies: %s", why);
        return 1;
    }
    /* Only the header the proxies write: the other passes through them
     * as the client sent it, forged or not. */
    const char *fh = options_text(ov, OPT_FORWARDED_HEADER);
    cfg->trusted_proxies.rfc7239 = strcmp(fh, "forwarded") == 0;
    if (!cfg->trusted_proxies.rfc7239 && strcmp(fh, "x-forwarded-for") != 0)
        return bad_value(ov, OPT_FORWARDED_HEADER, fh, "give x-forwarded-for or forwarded", report, arg);
    const char *pp = options_text(ov, OPT_PROXY_PROTOCOL);
    /* v1 and v2 were this option's values before: either now reads both */
    cfg->proxy_protocol = strcmp(pp, "on") == 0 || strcmp(pp, "v1") == 0 || strcmp(pp, "v2") == 0;
    if ((!cfg->proxy_protocol && strcmp(pp, "off") != 0) || (cfg->proxy_protocol && !tp))
        return bad_value(ov, OPT_PROXY_PROTOCOL, pp,
                         cfg->proxy_protocol ? "it needs trusted-proxies: the balancers' addresses"
                                             : "give off or on", report, arg);
    const char *lm = options_text(ov, OPT_LOCK_MEMORY);
    cfg->lock_memory = strcmp(lm, "on") == 0;
    if (!cfg->lock_memory && strcmp(lm, "off") != 0)
        return bad_value(ov, OPT_LOCK_MEMORY, lm, "give off or on", report, arg);
    const char *lf = options_text(ov, OPT_LOG_FORMAT);
    cfg->log_text = strcmp(lf, "text") == 0;
    if (strcmp(lf, "json") != 0 && strcmp(lf, "text") != 0) {
        const option_value *given = &ov->v[OPT_LOG_FORMAT];
        if (given->line)
            report_line(report, arg, ov->file, given->line,
                        "bad value \"%s\" for log-format: give json or text (e.g. \"log-format json\")",
                        lf);
        else
            report_line(report, arg, NULL, 0,
                        "bad value \"%s\" for --log-format: give json or text (e.g. --log-format json)",
                        lf);
        return 1;
    }
    if (!cfg->tls_cert != !cfg->tls_key) {
        const option_value *given = &ov->v[cfg->tls_cert ? OPT_TLS_CERT : OPT_TLS_KEY];
        const char *missing = cfg->tls_cert ? "tls-key" : "tls-cert";
        if (given->line)
            report_line(report, arg, ov->file, given->line,
                        "tls-cert and tls-key go together: add \"%s FILE\"", missing);
        else
            report_line(report, arg, NULL, 0,
                        "--tls-cert and --tls-key go together: add --%s FILE", missing);
        return 1;
    }
    return 0;
}

void options_print_config(const option_values *ov, FILE *out)
{
    fprintf(out, "# tokend serve: the effective configuration%s%s\n", ov->file ? " of " : "",
            ov->file ? ov->file : "");
    for (int i = 0; i < OPT_COUNT; i++) {
        const option_spec *o = &options[i];
        const option_value *v = &ov->v[i];
        char value[TOKEND_CONFIG_LINE_MAX + 32], line[TOKEND_CONFIG_LINE_MAX + 64];
        if (!(o->flags & OPT_IN_FILE))
            continue;
        const char *where = v->set ? (v->line ? "line" : "command line")
                                   : o->flags & OPT_CORES ? "default: the online cores"
                                                          : "default";
        if (o->kind == OPT_NUMBER)
            snprintf(value, sizeof value, "%llu", options_num(ov, (option_id)i));
        else if (options_text(ov, (option_id)i)) {
            /* config check's output is pasted into tickets and logs */
            if (i == OPT_CLUSTER)
                cluster_conninfo_masked(options_text(ov, (option_id)i), value, sizeof value);
            else
                snprintf(value, sizeof value, "%s", options_text(ov, (option_id)i));
        } else {
            fprintf(out, "# %s %s  (not set%s)\n", o->name, o->metavar,
                    i == OPT_DATA ? ": required, here or as --data" : "");
            continue;
        }
        snprintf(line, sizeof line, "%s %s", o->name, value);
        if (v->set && v->line)
            fprintf(out, "%-40s # line %d%s\n", line, v->line,
                    o->flags & OPT_RELOAD ? ", SIGHUP applies it" : "");
        else
            fprintf(out, "%-40s # %s%s\n", line, where,
                    o->flags & OPT_RELOAD ? ", SIGHUP applies it" : "");
    }
}

const char *options_synopsis(option_id id, char *buf, size_t len)
{
    const option_spec *o = &options[id];
    if (o->kind == OPT_FLAG)
        snprintf(buf, len, "--%s", o->name);
    else
        snprintf(buf, len, "--%s %s", o->name, o->metavar);
    return buf;
}

void options_print_help(option_id id, int required, FILE *out)
{
    const option_spec *o = &options[id];
    char syn[64], extra[160] = "";
    size_t n = 0;
    if (required)
        n += (size_t)snprintf(extra + n, sizeof extra - n, "required");
    if (o->kind == OPT_NUMBER && o->max != UINT64_MAX)
        n += (size_t)snprintf(extra + n, sizeof extra - n, "%s%llu to %llu", n ? "; " : "", o->min,
                              o->max);
    if (o->kind == OPT_TEXT && o->max)
        n += (size_t)snprintf(extra + n, sizeof extra - n, "%sat most %llu bytes", n ? "; " : "",
                              o->max);
    if (o->flags & OPT_CORES)
        n += (size_t)snprintf(extra + n, sizeof extra - n, "%sdefault: the online cores",
                              n ? "; " : "");
    else if (o->kind == OPT_NUMBER && !required && o->dflt)
        n += (size_t)snprintf(extra + n, sizeof extra - n, "%sdefault %llu", n ? "; " : "", o->dflt);
    else if (o->dflt_text)
        n += (size_t)snprintf(extra + n, sizeof extra - n, "%sdefault %s", n ? "; " : "",
                              o->dflt_text);
    if (o->flags & OPT_RELOAD)
        snprintf(extra + n, sizeof extra - n, "%sSIGHUP applies it", n ? "; " : "");
    options_synopsis(id, syn, sizeof syn);
    fprintf(out, "  %-26s %s%s%s%s\n", syn, o->help, *extra ? " (" : "", extra, *extra ? ")" : "");
}
