/* pool.h - the bounded worker pool for slow work (Argon2id, write
 * transactions), so an event loop never blocks. A full queue refuses new
 * work at once: the caller answers "retry later" rather than letting
 * requests pile up without bound. */
#ifndef TOKEND_POOL_H
#define TOKEND_POOL_H

typedef struct pool pool;
typedef struct pool_job pool_job;

struct pool_job {
    void (*work)(pool_job *job);   /* runs on a worker thread */
    void (*post)(pool_job *job);   /* runs on the worker after work: hands the job back */
    void *owner;                   /* the submitter's context, for post */
    pool_job *next;
};

/* `threads` workers; at most `queue_max` jobs waiting beyond those running. */
pool *pool_create(unsigned threads, unsigned queue_max);
/* 0, or -1 when the queue is full (the job is not taken). */
int pool_submit(pool *p, pool_job *job);
/* For metrics: jobs waiting, jobs running, submissions refused (full). */
void pool_stats(pool *p, unsigned *queued, unsigned *running, unsigned long long *rejected);
/* Lets queued jobs finish, then joins the workers. */
void pool_destroy(pool *p);

#endif
