/* pool.h - the bounded worker pool for slow work (Argon2id, write
 * transactions), so an event loop never blocks. A full queue refuses new
 * work at once: the caller answers "retry later" rather than letting
 * requests pile up without bound.
 *
 * Workers run as batch threads (SCHED_BATCH: they never preempt a loop
 * on wakeup) at the loops' weight. What keeps a stream of password checks
 * from starving the loops on a shared core is rest: a worker whose hash
 * shared its CPU while a loop (pool_watch) had work and was kept waiting
 * for one rests until it has hashed at most POOL_CONTENDED_DUTY percent of
 * the time. Meanwhile it takes no new password check, each worker has one
 * waiting place fewer (by default none: a check no worker can start at
 * once is refused; pool_submit_slow), and with that default it sheds the
 * checks that queued for it before (they would end a whole hash late:
 * pool_job.shed). Until POOL_CALM_MS after its last rest a worker stays
 * contended: its checks run POOL_WORKER_LEAD nice levels ahead of the
 * loops (where the process may lower a nice value), so a check gets about
 * three quarters of a shared core and ends in ~1.3x its own time, not 2x,
 * and what follows its hash (pool_job_waits) runs as an ordinary thread,
 * while the rest still bounds what the loops lose. A check that began at
 * the loops' weight is raised ahead of them when a login is refused (a
 * storm began while it hashed), and judged as one that ran ahead. On an idle
 * machine, with loops that are mostly idle, or with a core of their own,
 * workers never rest. */
#ifndef TOKEND_POOL_H
#define TOKEND_POOL_H

#include <stdint.h>

#define POOL_SHARED_CPU 75         /* % of a CPU below which a hash shared its core */
#define POOL_BUSY_LOOP 25          /* % of the time a loop ran meanwhile, */
#define POOL_STARVED_LOOP 20       /* and % of the time it waited for one */
#define POOL_CONTENDED_DUTY 7      /* % of the time a worker hashes while contended */
#define POOL_WORKER_LEAD 5         /* nice levels a contended worker runs ahead */
#define POOL_SHARED_CPU_AHEAD 90   /* the same two, for a worker running ahead: */
#define POOL_BUSY_LOOP_AHEAD 10    /* a busy loop beside it gets about a quarter */
#define POOL_CALM_MS 1000          /* contended until this long after a rest */
#define POOL_WATCH_MAX 64

typedef struct pool pool;
typedef struct pool_job pool_job;

struct pool_job {
    void (*work)(pool_job *job);   /* runs on a worker thread */
    void (*post)(pool_job *job);   /* runs on the worker after work: hands the job back */
    void *owner;                   /* the submitter's context, for post */
    pool_job *next;
    int slow;                      /* set by pool_submit_slow */
    int shed;                      /* set by the pool before work: a slow job it
                                      will not run; work must only answer "busy" */
    uint64_t queued_ns;            /* set by the pool: when it was taken */
};

/* `threads` workers; at most `queue_max` jobs waiting beyond those running. */
pool *pool_create(unsigned threads, unsigned queue_max);
/* 0, or -1 when the queue is full (the job is not taken). */
int pool_submit(pool *p, pool_job *job);
/* For metrics. A slow job's wall time well above its CPU time says it
 * shared a CPU; CPU time above what an idle machine takes says the caches
 * and memory were contended too. */
typedef struct {
    unsigned queued, running;          /* jobs waiting; jobs being run */
    unsigned long long rejected;       /* submissions refused (full), slow jobs shed */
    unsigned long long slow_jobs;      /* slow jobs finished */
    unsigned long long slow_wall_ns;   /* their wall-clock time, summed */
    unsigned long long slow_cpu_ns;    /* their workers' CPU time, summed */
    unsigned long long rests;          /* rests taken after a contended one */
} pool_counts;
/* 0, or -1 (no pool or no out). */
int pool_stats(pool *p, pool_counts *out);
/* The same for a job that takes a worker for long (a password hash): at
 * most pool_slow_max() of those are in the pool at once, so an accepted one
 * waits for a bounded number of others instead of a whole queue of them;
 * the rest are refused at once (-1). While hashing is contended (see
 * above), one waiting place fewer per worker. */
int pool_submit_slow(pool *p, pool_job *job);
/* While every worker rests, the ms until the first rest ends: when a
 * refused or shed password check may be tried again. Otherwise 0 (a full
 * queue empties within a hash). */
unsigned pool_rest_left_ms(pool *p);
/* workers x (1 + per_worker): each worker's current one and per_worker
 * waiting (default per_worker: 1). */
void pool_set_slow_queue(pool *p, unsigned per_worker);
unsigned pool_slow_max(const pool *p);
/* Called on its worker by a slow job whose CPU-bound part (a hash) is
 * done and whose rest waits for the disk (a commit's fsync): a contended
 * worker then stops being a batch thread until the job ends, so it resumes
 * as soon as each wait ends instead of after a busy loop's slice (in a
 * login storm, 5-20 ms for one login in ten). While it hashes it stays a
 * batch thread, which a loop's wakeup may preempt: refused logins are
 * answered at once. Elsewhere it does nothing. */
void pool_job_waits(void);
/* Called by a thread the workers must not starve (an event loop): its
 * waits for a CPU are what makes them rest. 0, or -1 (not watched). */
int pool_watch(pool *p);
/* Lets queued jobs finish, then joins the workers. */
void pool_destroy(pool *p);

#endif
