/* options.h - every option of tokend, written once: its name, the kind of
 * value, its limits and default, where it may stand and its help. The
 * command line (`--max-body 65536`) and the configuration file of
 * `tokend serve --config FILE` (`max-body 65536`: one option a line, the
 * name without its dashes, '#' starting a comment) are both read through
 * this table, and `--help`, `tokend config check` and the SIGHUP reload
 * describe and check the values from it. */
#ifndef TOKEND_OPTIONS_H
#define TOKEND_OPTIONS_H

#include <stdio.h>
#include "tokend.h"

/* --- Platform and size limits ------------------------------------------ */
#define TOKEND_DEFAULT_LISTEN "127.0.0.1:8080"
#define TOKEND_MAX_THREADS 256            /* event loops; also worker threads */
#define TOKEND_MAX_QUEUE 1000000          /* jobs waiting for a worker */
#define TOKEND_DEFAULT_QUEUE 256
#define TOKEND_MAX_LOGIN_QUEUE 1000       /* password checks waiting, per worker */
#define TOKEND_DEFAULT_LOGIN_QUEUE 1
#define TOKEND_MIN_BODY 64                /* bytes */
#define TOKEND_MAX_BODY (16u << 20)       /* h2o itself refuses 16 x max-body */
#define TOKEND_DEFAULT_BODY (64u << 10)
#define TOKEND_MAX_PWHASH_OPS 100         /* Argon2id passes */
#define TOKEND_MAX_PWHASH_MEM_MIB 4096
#define TOKEND_MAX_MAP_MIB (1u << 20)     /* 1 TiB of LMDB map at start */
#define TOKEND_DEFAULT_MAP_MIB 1024
#define TOKEND_MAX_CONNECTIONS 1000000
#define TOKEND_DEFAULT_CONNECTIONS 10000
#define TOKEND_MAX_STREAMS 256            /* concurrent HTTP/2 streams per connection */
#define TOKEND_DEFAULT_STREAMS 100
#define TOKEND_MAX_SECONDS 3600           /* request timeout, default deadline */
#define TOKEND_DAY_SECONDS 86400          /* purge interval, throttle window */
#define TOKEND_MAX_THROTTLE 1000000       /* failed logins per window */
#define TOKEND_MAX_TTL_SECONDS (10ull * 365 * 24 * 3600)
#define TOKEND_DEFAULT_TTL_SECONDS (7ull * 24 * 3600)
#define TOKEND_MAX_ENCRYPT_TYPE 4         /* 0 none ... 4 XChaCha20-Poly1305 */
#define TOKEND_MAX_LABEL 128              /* admin token label, bytes */
#define TOKEND_CONFIG_LINE_MAX 1024       /* bytes in one line of the config file */
#define TOKEND_MAX_POSITIONAL 4

typedef enum {
    /* tokend serve (all but --config may also stand in the config file) */
    OPT_DATA, OPT_CONFIG, OPT_LISTEN, OPT_THREADS, OPT_WORKERS, OPT_QUEUE, OPT_LOGIN_QUEUE,
    OPT_MAX_BODY,
    OPT_PWHASH_OPS, OPT_PWHASH_MEM, OPT_MAP_SIZE, OPT_MAX_CONNECTIONS, OPT_MAX_STREAMS,
    OPT_REQUEST_TIMEOUT, OPT_DEADLINE, OPT_PURGE_INTERVAL, OPT_THROTTLE_ACCOUNT,
    OPT_THROTTLE_ADDRESS, OPT_THROTTLE_WINDOW, OPT_TLS_CERT, OPT_TLS_KEY, OPT_CLUSTER, OPT_METRICS_LISTEN,
    OPT_LOG_FORMAT, OPT_ACCESS_LOG, OPT_TRUSTED_PROXIES, OPT_PROXY_PROTOCOL, OPT_FORWARDED_HEADER,
    OPT_LOCK_MEMORY,
    /* the administration commands */
    OPT_APP, OPT_NAME, OPT_TTL, OPT_ENCRYPT_TYPE, OPT_OPEN_REGISTRATION, OPT_PHONE, OPT_EMAIL,
    OPT_USER, OPT_LABEL, OPT_ID, OPT_OUT, OPT_FROM, OPT_FORCE, OPT_DETACH, OPT_ON_ERROR, OPT_LOOKALIKES,
    OPT_COUNT
} option_id;

typedef enum {
    OPT_TEXT,    /* max: the longest value in bytes, 0 for any */
    OPT_NUMBER,  /* a decimal integer from min to max */
    OPT_FLAG     /* no value */
} option_kind;

enum {
    OPT_IN_FILE = 1,     /* may stand in the config file */
    OPT_RELOAD = 2,      /* SIGHUP applies a new value */
    OPT_CORES = 4,       /* the default is the number of online cores */
    OPT_MIB = 8          /* given in MiB, kept in bytes */
};

typedef struct {
    const char *name;       /* "max-body": --max-body on the command line */
    option_kind kind;
    const char *metavar;    /* "BYTES" */
    unsigned long long min, max, dflt;
    const char *dflt_text;  /* OPT_TEXT: the default, or NULL */
    unsigned flags;
    const char *help;       /* one line */
    const char *example;    /* a valid value */
} option_spec;

extern const option_spec options[OPT_COUNT];

typedef struct {
    int set;
    const char *text;          /* as given (OPT_FLAG: "yes") */
    unsigned long long num;    /* OPT_NUMBER: within the limits */
    int line;                  /* the config file's line, 0 for the command line */
} option_value;

typedef struct option_values {
    option_value v[OPT_COUNT];
    const char *file;          /* the config file read, if any */
    const char *pos[TOKEND_MAX_POSITIONAL];
    int npos;
    char *strings;             /* the file's values (one block, freed by options_free) */
} option_values;

/* Called with each error: "--max-body: ..." or "FILE:LINE: ...". */
typedef void option_error_fn(void *arg, const char *msg);

/* Reads argv (after the command's words) into ov. Only the options of
 * `allowed` (ended by OPT_COUNT) are accepted; the first of a repeated
 * option wins. "--help" sets *help. Returns 0, or -1 with err naming the
 * option and the fix. */
int options_parse_args(option_values *ov, const option_id *allowed, int argc, char **argv,
                       int *help, char *err, size_t errlen);

/* Reads the config file `path` into ov; options already set (by the
 * command line) keep their value. Every error is reported with its line.
 * Returns the number of errors (0: all good), or -1 if the file cannot be
 * read (reported too). */
int options_read_file(option_values *ov, const char *path, option_error_fn *report, void *arg);
void options_free(option_values *ov);

/* A number or text of ov, or the option's default. */
unsigned long long options_num(const option_values *ov, option_id id);
const char *options_text(const option_values *ov, option_id id);

/* The serve settings of ov (defaults for what is not set) into cfg; checks
 * what involves several options. Returns the number of errors reported. */
int options_to_config(const option_values *ov, tokend_config *cfg, option_error_fn *report,
                      void *arg);

/* Writes the effective serve configuration in the config file's format,
 * each line saying where its value comes from. */
void options_print_config(const option_values *ov, FILE *out);

/* Writes "  --max-body BYTES   help (limits; default)" for one option. */
void options_print_help(option_id id, int required, FILE *out);
/* "--max-body BYTES" (or "--open-registration"). */
const char *options_synopsis(option_id id, char *buf, size_t len);

#endif
