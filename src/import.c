/* import.c - users from JSON lines (tokend user import).
 *
 * A line is an ImportedUser (store.proto) in JSON, read by transcode.c:
 * name, optional phone and email, and either a password, hashed here with
 * the data directory's Argon2id cost on every core, or a password_hash to
 * keep: Argon2id as it is, bcrypt ($2b$, $2y$) as it is until the user's
 * next login turns it into Argon2id. Each batch of IMPORT_BATCH lines is
 * checked and hashed first, then written in one write transaction
 * (store_users_import), which also counts the hash costs for the decoy:
 * a crash leaves whole batches, never half of one, and running the same
 * file again with --on-error skip passes over the users already there
 * (their names are taken) and imports the rest. */
#define _GNU_SOURCE   /* pthread_setname_np */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "import.h"
#include "names.h"
#include "transcode.h"
#include "tokend/v1/store.pb-c.h"

typedef struct {
    unsigned long long line;
    store_user user;
    char name[STORE_NAME_MAX + 1], phone[NAMES_PHONE_MAX + 2], email[NAMES_EMAIL_MAX + 1];
    char hash[CRYPTO_PWHASH_STRBYTES];
    Tokend__V1__Store__ImportedUser *in;   /* the parsed line */
    int bad;                               /* reported; not written */
} entry;

typedef struct {
    entry *e;
    size_t n;
    _Atomic size_t next;
    crypto_pwcost cost;
    _Atomic int failed;
} hash_work;

static void *hash_some(void *arg)
{
    hash_work *w = arg;
    size_t i;
    while ((i = atomic_fetch_add(&w->next, 1)) < w->n) {
        entry *e = &w->e[i];
        if (e->bad || !e->in->password[0])
            continue;
        if (crypto_password_hash(e->hash, e->in->password, strlen(e->in->password), w->cost) != 0)
            w->failed = 1;
        crypto_wipe(e->in->password, strlen(e->in->password));
    }
    return NULL;
}

/* Hashes the batch's passwords on `threads` threads (this one included). */
static int hash_all(entry *e, size_t n, crypto_pwcost cost, unsigned threads)
{
    hash_work w = {e, n, 0, cost, 0};
    pthread_t t[256];
    unsigned started = 0;
    for (; started + 1 < threads && started < 256; started++) {
        char name[16];
        if (pthread_create(&t[started], NULL, hash_some, &w) != 0)
            break;
        snprintf(name, sizeof name, "tokend-hash%u", started % 1000);
        pthread_setname_np(t[started], name);
    }
    hash_some(&w);
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    return w.failed ? -1 : 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Checks a parsed line; NULL, or why it is bad. */
static const char *check(entry *e)
{
    const char *why = NULL;
    Tokend__V1__Store__ImportedUser *in = e->in;
    if (names_normalize_username(in->name, e->name, sizeof e->name, &why) != 0)
        return why;
    if (*in->phone && names_normalize_phone(in->phone, e->phone, sizeof e->phone, &why) != 0)
        return why;
    if (*in->email && names_normalize_email(in->email, e->email, sizeof e->email, &why) != 0)
        return why;
    if (in->password[0] && in->password_hash[0])
        return "give password or password_hash, not both";
    if (!in->password[0] && !in->password_hash[0])
        return "password or password_hash is required";
    if (in->password[0])
        return names_check_password(in->password, strlen(in->password), &why) != 0 ? why : NULL;
    if (!crypto_password_hash_valid(in->password_hash))
        return "password_hash is not an Argon2id or bcrypt ($2b$, $2y$) hash this build can check";
    snprintf(e->hash, sizeof e->hash, "%s", in->password_hash);
    return NULL;
}

static void free_entries(entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (e[i].in) {
            crypto_wipe(e[i].in->password, strlen(e[i].in->password));
            protobuf_c_message_free_unpacked(&e[i].in->base, NULL);
        }
        crypto_wipe(e[i].hash, sizeof e[i].hash);
    }
    memset(e, 0, n * sizeof *e);
}

/* Writes one batch; the lines the store refuses (a name taken) count as
 * bad. 0, 1 (a taken name with stop: nothing written), or -1 (store error). */
static int write_batch(store *st, const import_options *o, entry *e, size_t n, FILE *err,
                       import_result *r)
{
    store_user *users[IMPORT_BATCH];
    int rcs[IMPORT_BATCH];
    const char *conflict[IMPORT_BATCH];
    size_t m = 0;
    int64_t created = (int64_t)time(NULL) * 1000;

    if (hash_all(e, n, o->cost, o->threads) != 0) {
        fprintf(err, "tokend: cannot hash the passwords (out of memory?)\n");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (e[i].bad)
            continue;
        store_user *u = &e[i].user;
        tokend__v1__store__user__init(u);
        u->name = e[i].name;
        u->phone = e[i].phone;
        u->email = e[i].email;
        u->password_hash = e[i].hash;
        u->created_ms = created;
        users[m++] = u;
    }
    /* With stop, a taken name refuses the whole batch. */
    int rc = m ? store_users_import(st, o->app_id, users, m, !o->skip_bad, o->lookalikes_ok, rcs, conflict)
               : STORE_OK;
    if (rc == STORE_NOTFOUND) {
        fprintf(err, "tokend: unknown app_id %llu\n", (unsigned long long)o->app_id);
        return -1;
    }
    if (rc == STORE_EXISTS) {
        for (size_t i = 0, j = 0; i < n; i++)
            if (!e[i].bad && rcs[j++] == STORE_EXISTS) {
                fprintf(err, "line %llu: %s is already taken in this app\n", e[i].line,
                        conflict[j - 1]);
                r->skipped++;
            }
        r->stopped = 1;
        return 1;
    }
    if (rc != STORE_OK) {
        fprintf(err, "tokend: cannot write lines %llu to %llu: %s\n", e[0].line, e[n - 1].line,
                store_strerror(rc));
        return -1;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].bad)
            continue;
        if (rcs[j] == STORE_EXISTS) {
            fprintf(err, "line %llu: %s is already taken in this app\n", e[i].line, conflict[j]);
            r->skipped++;
        } else {
            r->imported++;
        }
        j++;
    }
    r->committed_line = e[n - 1].line;
    return 0;
}

int import_users(store *st, const import_options *o, FILE *in, FILE *err, import_result *r)
{
    entry *batch = calloc(IMPORT_BATCH, sizeof *batch);
    char *line = NULL;
    size_t cap = 0, n = 0;
    ssize_t len;
    int rc = 0;
    double t0 = now_s(), shown = 0;
    import_options opt = *o;

    memset(r, 0, sizeof *r);
    if (!batch)
        return -1;
    if (!opt.threads) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        opt.threads = c > 0 ? (unsigned)c : 1;
    }
    for (;;) {
        len = getline(&line, &cap, in);
        if (len >= 0) {
            r->lines++;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                len--;
            size_t k = strspn(line, " \t");
            if ((size_t)len == k)
                continue;   /* blank lines are nothing */
            entry *e = &batch[n++];
            char why[TRANSCODE_ERRLEN];
            const char *bad = NULL;
            e->line = r->lines;
            if (transcode_from_json(&tokend__v1__store__imported_user__descriptor, line,
                                    (size_t)len, (ProtobufCMessage **)&e->in, why) != 0)
                bad = why;
            else
                bad = check(e);
            crypto_wipe(line, (size_t)len);
            if (bad) {
                fprintf(err, "line %llu: %s\n", e->line, bad);
                e->bad = 1;
                r->skipped++;
                if (!opt.skip_bad) {
                    r->stopped = 1;
                    break;   /* nothing of this batch is written */
                }
            }
        }
        if (n && (n == IMPORT_BATCH || len < 0)) {
            if ((rc = write_batch(st, &opt, batch, n, err, r)) != 0)
                break;
            free_entries(batch, n);
            n = 0;
            double t = now_s();
            if (opt.progress && (t - shown > 0.5 || len < 0)) {
                fprintf(opt.progress, "\rimported %llu users, %llu lines left out, %.0f/s   ",
                        r->imported, r->skipped, r->imported / (t - t0 > 0 ? t - t0 : 1));
                fflush(opt.progress);
                shown = t;
            }
        }
        if (len < 0)
            break;
    }
    if (opt.progress && r->lines)
        fputc('\n', opt.progress);
    free_entries(batch, n);
    free(batch);
    free(line);
    return rc < 0 ? -1 : 0;
}
