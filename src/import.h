/* import.h - `tokend user import`: users from JSON lines, in batches of one
 * write transaction each. */
#ifndef TOKEND_IMPORT_H
#define TOKEND_IMPORT_H

#include <stdio.h>
#include "crypto.h"
#include "store.h"

#define IMPORT_BATCH 1000

typedef struct {
    uint64_t app_id;
    crypto_pwcost cost;          /* for lines with a password */
    int skip_bad;                /* --on-error skip: report and leave out; else stop */
    int lookalikes_ok;           /* --allow-lookalikes: names like others' are not bad */
    unsigned threads;            /* hashing threads (0: the online cores) */
    FILE *progress;              /* a terminal for the progress line, or NULL */
} import_options;

typedef struct {
    unsigned long long lines, imported, skipped;
    unsigned long long committed_line;   /* the last line of the last batch written */
    int stopped;                         /* --on-error stop met a bad line */
} import_result;

/* Reads `in` to its end (or the first bad line, with stop), reporting each
 * bad line to `err` as "line N: why". Returns 0 when it read all of `in`,
 * or -1 after a store error (the batches before it are written). */
int import_users(store *st, const import_options *o, FILE *in, FILE *err, import_result *r);

#endif
