/* pool.c - a fixed set of worker threads over one bounded FIFO. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "pool.h"

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    pool_job *head, *tail;
    unsigned inflight, queue_max, nthreads;  /* inflight: waiting + running */
    unsigned running;
    unsigned long long rejected;             /* submissions refused: the queue was full */
    unsigned slow_inflight;                  /* of those, pool_submit_slow's */
    unsigned slow_queue;                     /* of those, waiting per worker */
    int stopping;
    pthread_t threads[];
};

/* Below the event loops: CPU-bound batch work, niced (per thread on
 * Linux). Best effort: a refusal leaves the thread as it was. */
static void lower_priority(void)
{
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), POOL_NICE);
}

static void *worker(void *arg)
{
    pool *p = arg;
    lower_priority();
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->ready, &p->lock);
        pool_job *job = p->head;
        if (!job) {
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        p->head = job->next;
        if (!p->head)
            p->tail = NULL;
        p->running++;
        pthread_mutex_unlock(&p->lock);
        job->work(job);
        pthread_mutex_lock(&p->lock);
        p->running--;
        p->inflight--;
        if (job->slow)
            p->slow_inflight--;
        pthread_mutex_unlock(&p->lock);
        job->post(job);
    }
}

pool *pool_create(unsigned threads, unsigned queue_max)
{
    if (threads == 0)
        return NULL;
    pool *p = calloc(1, sizeof *p + threads * sizeof(pthread_t));
    if (!p)
        return NULL;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->ready, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    p->queue_max = queue_max;
    p->slow_queue = 1;
    for (; p->nthreads < threads; p->nthreads++)
        if (pthread_create(&p->threads[p->nthreads], NULL, worker, p) != 0)
            break;
    if (p->nthreads == 0) {
        pthread_cond_destroy(&p->ready);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    return p;
}

static int submit(pool *p, pool_job *job, int slow)
{
    if (!p || !job || !job->work || !job->post)
        return -1;
    pthread_mutex_lock(&p->lock);
    if (p->inflight >= p->nthreads + p->queue_max || p->stopping ||
        (slow && p->slow_inflight >= pool_slow_max(p))) {
        p->rejected++;
        pthread_mutex_unlock(&p->lock);
        return -1;
    }
    job->next = NULL;
    job->slow = slow;
    if (p->tail)
        p->tail->next = job;
    else
        p->head = job;
    p->tail = job;
    p->inflight++;
    p->slow_inflight += slow != 0;
    pthread_cond_signal(&p->ready);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

void pool_stats(pool *p, unsigned *queued, unsigned *running, unsigned long long *rejected)
{
    pthread_mutex_lock(&p->lock);
    *running = p->running;
    *queued = p->inflight - p->running;
    *rejected = p->rejected;
    pthread_mutex_unlock(&p->lock);
}

int pool_submit(pool *p, pool_job *job)
{
    return submit(p, job, 0);
}

int pool_submit_slow(pool *p, pool_job *job)
{
    return submit(p, job, 1);
}

void pool_set_slow_queue(pool *p, unsigned per_worker)
{
    pthread_mutex_lock(&p->lock);
    p->slow_queue = per_worker;
    pthread_mutex_unlock(&p->lock);
}

unsigned pool_slow_max(const pool *p)
{
    return p->nthreads * (1 + p->slow_queue);
}

void pool_destroy(pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->ready);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->ready);
    free(p);
}
