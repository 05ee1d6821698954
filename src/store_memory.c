/* store_memory.c - keeping the data file in memory (serve --lock-memory on).
 *
 * A Verify reads a few pages of the map at random. Once the data outgrow
 * what the kernel keeps cached (or the host reclaims page cache left idle
 * for a minute, as some VMs do), those reads wait for the disk and latency
 * grows with the data (tools/benchmark/RESULTS.md, "Scale"). So the process
 * locks its memory, now and as it is mapped later (mlockall, MCL_ONFAULT: a
 * page as it is touched, so the map's unused tail costs nothing), and the
 * used part of the file is faulted into the map: at start, before the
 * port opens; then by a keeper thread, which follows what the file grows
 * by (this process's commits or another's: LMDB writes with pwrite, not
 * through the map, so only a fault locks a page) and a resize's new
 * mapping. A page LMDB reuses keeps its place in the page cache, mapped and
 * locked. The keeper faults in a chunk at a time inside the resize gate, so
 * a resize waits for one chunk at most, and nothing else waits for it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#include "store_internal.h"

#define KEEPER_CHUNK ((size_t)8 << 20)    /* bytes faulted in a gate's visit: a resize
                                              waits for one chunk at most */
#define KEEPER_TICK_SECONDS 1             /* the host reclaims after ~60 s idle */

struct keeper {
    /* Read and written inside the gate, or with it closed (a resize). */
    char *base;                 /* where the file is mapped; NULL: to find */
    size_t len;                 /* the mapping's length */
    _Atomic size_t end;         /* bytes of the file faulted in */
    pthread_mutex_t lock;       /* the rest: the keeper's sleep */
    pthread_cond_t wake;
    int woken;
    _Atomic int stopping;
    pthread_t thread;
    int started;                /* thread runs */
};

/* Where the file is mapped: the mapping in /proc/self/maps holding a
 * record LMDB hands out from it (a read transaction never copies).
 * LMDB does not say: mdb_env_info's me_mapaddr is MDB_FIXEDMAP's only.
 * Inside the gate; the transaction is LMDB's own, not the gate's, so it
 * fails (NULL) if another process has grown the map since this one last
 * followed: fault_all follows first. */
static char *find_map(store *s, size_t *len)
{
    MDB_txn *txn;
    MDB_dbi main_db;
    MDB_cursor *cur;
    MDB_val k, v;
    uintptr_t at = 0;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) != 0)
        return NULL;
    if (mdb_dbi_open(txn, NULL, 0, &main_db) == 0 && mdb_cursor_open(txn, main_db, &cur) == 0) {
        if (mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0)
            at = (uintptr_t)v.mv_data;
        mdb_cursor_close(cur);
    }
    mdb_txn_abort(txn);
    FILE *f = at ? fopen("/proc/self/maps", "r") : NULL;
    char line[512], *base = NULL;
    unsigned long long from, to, offset;
    while (f && !base && fgets(line, sizeof line, f))
        if (sscanf(line, "%llx-%llx %*s %llx", &from, &to, &offset) == 3 && from <= at &&
            at < to && offset <= from) {
            base = (char *)(uintptr_t)(from - offset);
            *len = (size_t)(to - (from - offset));
        }
    if (f)
        fclose(f);
    return base;
}

/* The file's bytes worth keeping: its used pages, as far as this
 * process's map and the file reach (another process's commit may have
 * gone past both). */
static int used_bytes(store *s, size_t len, size_t *used)
{
    size_t size;
    mdb_filehandle_t fd;
    struct stat sb;
    if (store_map_usage(s, used, &size) != 0 || mdb_env_get_fd(s->env, &fd) != 0 || fstat(fd, &sb) != 0)
        return -1;
    if (*used > (size_t)sb.st_size)
        *used = (size_t)sb.st_size;
    if (*used > len)
        *used = len;
    return 0;
}

/* Faults [from, to) of the mapping at base in. */
static int fault_in(char *base, size_t from, size_t to)
{
#ifdef MADV_POPULATE_READ
    if (madvise(base + from, to - from, MADV_POPULATE_READ) == 0)
        return 0;
    if (errno != EINVAL)
        return -1;
#endif
    /* before Linux 5.14: a byte a page (the range is inside the file) */
    volatile unsigned char sink = 0;
    for (size_t at = from; at < to; at += (size_t)sysconf(_SC_PAGESIZE))
        sink ^= (unsigned char)base[at];
    (void)sink;
    return 0;
}

/* One visit of the gate: up to a chunk beyond what is in. 1: more is
 * left; 0: all is in; -1: failed, *why says why. */
static int fault_chunk(store *s, struct keeper *k, const char **why)
{
    size_t used, from, page = (size_t)sysconf(_SC_PAGESIZE);
    int rc;
    gate_enter(s);
    if (!k->base && !(k->base = find_map(s, &k->len))) {
        *why = "the data file's mapping was not found";
        rc = -1;
    } else if (used_bytes(s, k->len, &used) != 0) {
        *why = "the data file's size cannot be read";
        rc = -1;
    } else if ((from = k->end / page * page) >= used) {
        rc = 0;
    } else {
        size_t to = used - from > KEEPER_CHUNK ? from + KEEPER_CHUNK : used;
        if (fault_in(k->base, from, to) != 0) {
            *why = strerror(errno);
            rc = -1;
        } else {
            k->end = to;
            rc = to < used;
        }
    }
    gate_leave(s);
    return rc;
}

/* Follows a map another process grew (local_txn_begin resizes), so what
 * that process wrote beyond this one's map is within reach. */
static void follow_map(store *s)
{
    MDB_txn *txn;
    if (local_txn_begin(s, MDB_RDONLY, &txn) == STORE_OK)
        txn_abort(s, txn);
}

/* Faults in all the file holds beyond what is in, a chunk at a time. A
 * mapping not found is tried again once the map is followed. */
static int fault_all(store *s, struct keeper *k, const char **why)
{
    int rc = 0;
    follow_map(s);
    for (int tries = 0; !k->stopping; tries++) {
        if (!k->base && tries)
            follow_map(s);
        if ((rc = fault_chunk(s, k, why)) == 0 || (rc < 0 && (k->base || tries >= 3)))
            break;
    }
    return rc;
}

struct keep_arg {
    store *s;
    struct keeper *k;
};

static void *keep(void *arg)
{
    store *s = ((struct keep_arg *)arg)->s;
    struct keeper *k = ((struct keep_arg *)arg)->k;
    free(arg);
    const char *why;
    int failing = 0;
    pthread_mutex_lock(&k->lock);
    while (!k->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += KEEPER_TICK_SECONDS;
        while (!k->woken && !k->stopping &&
               pthread_cond_timedwait(&k->wake, &k->lock, &until) != ETIMEDOUT)
            ;
        k->woken = 0;
        pthread_mutex_unlock(&k->lock);
        int rc = fault_all(s, k, &why);
        if (rc < 0 && !failing)
            log_event(LOG_WARN, "memory_lock", "store: cannot keep the data file in memory: %s",
                      why);
        failing = rc < 0;
        pthread_mutex_lock(&k->lock);
    }
    pthread_mutex_unlock(&k->lock);
    return NULL;
}

/* Whether this process may lock all it maps: the memlock limit unlimited
 * (the soft limit raised to the hard one first) or CAP_IPC_LOCK. A finite
 * limit would let the start succeed and a later growth of the map fail. */
int store_may_lock_memory(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_max == RLIM_INFINITY) {
        rl.rlim_cur = RLIM_INFINITY;
        setrlimit(RLIMIT_MEMLOCK, &rl);
    }
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur == RLIM_INFINITY)
        return 1;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long caps = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "CapEff: %llx", &caps) == 1)
            break;
    if (f)
        fclose(f);
    return (caps >> 14) & 1;   /* CAP_IPC_LOCK */
}

static struct keeper *keeper_new(void)
{
    struct keeper *k = calloc(1, sizeof *k);
    pthread_condattr_t attr;
    if (!k)
        return NULL;
    if (pthread_condattr_init(&attr) != 0) {
        free(k);
        return NULL;
    }
    int ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&k->wake, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok || pthread_mutex_init(&k->lock, NULL) != 0) {
        if (ok)
            pthread_cond_destroy(&k->wake);
        free(k);
        return NULL;
    }
    return k;
}

static void keeper_free(struct keeper *k)
{
    pthread_cond_destroy(&k->wake);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

int store_keep_resident(store *s, size_t *bytes, char *err, size_t errlen)
{
    const char *why = NULL;
    struct keeper *k;
    struct keep_arg *arg;
    if (!s || !bytes || s->keeper) {
        snprintf(err, errlen, "lock-memory on: %s", s && s->keeper ? "already on" : "no store");
        return STORE_ERR;
    }
    if (!store_may_lock_memory()) {
        snprintf(err, errlen, "lock-memory on needs an unlimited memlock limit (ulimit -l "
                 "unlimited; systemd: LimitMEMLOCK=infinity) or CAP_IPC_LOCK, since the map "
                 "grows with the data and stays locked");
        return STORE_ERR;
    }
    if (mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0) {
        snprintf(err, errlen, "lock-memory on: cannot lock the process's memory: %s",
                 strerror(errno));
        return STORE_ERR;
    }
    if (!(k = keeper_new()) || !(arg = malloc(sizeof *arg))) {
        if (k)
            keeper_free(k);
        snprintf(err, errlen, "lock-memory on: out of memory");
        return STORE_ERR;
    }
    /* Published inside the gate: a resize (gate closed) sees it or not at all. */
    gate_enter(s);
    s->keeper = k;
    gate_leave(s);
    if (fault_all(s, k, &why) < 0) {
        free(arg);
        snprintf(err, errlen, "lock-memory on: cannot read the data file into memory: %s", why);
        return STORE_ERR;   /* store_close takes the keeper */
    }
    *bytes = k->end;
    *arg = (struct keep_arg){s, k};
    if (pthread_create(&k->thread, NULL, keep, arg) != 0) {
        free(arg);
        snprintf(err, errlen, "lock-memory on: cannot start its thread");
        return STORE_ERR;
    }
    pthread_setname_np(k->thread, "tokend-memory");
    k->started = 1;
    return STORE_OK;
}

void memory_map_moved(store *s)
{
    struct keeper *k = s->keeper;
    if (!k)
        return;
    k->base = NULL;
    k->end = 0;
    pthread_mutex_lock(&k->lock);
    k->woken = 1;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->lock);
}

/* After the cluster's feed has stopped: no write of this process is left
 * to resize the map (memory_map_moved) once the keeper is unpublished. */
void memory_stop(store *s)
{
    struct keeper *k = s->keeper;
    if (!k)
        return;
    gate_enter(s);
    s->keeper = NULL;
    gate_leave(s);
    pthread_mutex_lock(&k->lock);
    k->stopping = 1;
    pthread_cond_signal(&k->wake);
    pthread_mutex_unlock(&k->lock);
    if (k->started)
        pthread_join(k->thread, NULL);
    keeper_free(k);
}

size_t memory_resident(store *s)
{
    struct keeper *k = s->keeper;
    return k ? k->end : 0;
}
