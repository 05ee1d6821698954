/* pool.c - a fixed set of worker threads over one bounded FIFO. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "pool.h"

struct pool {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    pool_job *head, *tail;
    unsigned inflight, queue_max, nthreads;  /* inflight: waiting + running */
    unsigned running;
    unsigned long long rejected;             /* submissions refused: the queue was full */
    unsigned long long slow_jobs, slow_wall_ns, slow_cpu_ns, rests;  /* pool_stats */
    unsigned slow_inflight;                  /* of those, pool_submit_slow's */
    unsigned slow_queue;                     /* of those, waiting per worker */
    unsigned resting;                        /* workers owing a rest (see run_slow, next_job) */
    unsigned contended;                      /* workers contended (until their calm_until) */
    int watched[POOL_WATCH_MAX];             /* the loops' /proc schedstat files (pool_watch) */
    unsigned nwatched;
    int base_nice, lead;                     /* see pool.h and choose_lead */
    int stopping;
    struct worker_slot *slots;               /* one a worker, claimed as it starts */
    unsigned claimed;
    pthread_t threads[];
};

/* What submit may do to a worker's check: one that hashes at the loops'
 * weight is raised ahead of them when the loops start refusing logins (a
 * storm that began while it hashed). Under the pool's lock. */
enum { SLOT_OTHER, SLOT_BEHIND, SLOT_RAISED };
struct worker_slot {
    pid_t tid;
    _Atomic int state;
    uint64_t rest_until;                     /* its rest's end, or 0 (under the lock) */
};

static __thread struct worker_slot *my_slot;

static pid_t thread_id(void)
{
    return (pid_t)syscall(SYS_gettid);
}

/* CPU-bound batch work: no wakeup preemption of the loops (and a hash a
 * loop may preempt). Best effort: a refusal leaves the thread as it was. */
static void as_batch(int batch)
{
    struct sched_param sp = {0};
    pthread_setschedparam(pthread_self(), batch ? SCHED_BATCH : SCHED_OTHER, &sp);
}

/* Set while this thread, a worker, runs a slow job while contended. */
static __thread int contended_job;

void pool_job_waits(void)
{
    if (contended_job == 1 || (contended_job == 0 && my_slot && atomic_load(&my_slot->state) == SLOT_RAISED)) {
        as_batch(0);
        contended_job = 2;
    }
}

/* How far ahead of the loops a contended worker may run: POOL_WORKER_LEAD
 * nice levels if this process may lower a nice value (root, CAP_SYS_NICE
 * or RLIMIT_NICE), else 0. Tried on the calling thread and undone:
 * raising it back is always allowed. */
static void choose_lead(pool *p)
{
    id_t tid = (id_t)thread_id();
    errno = 0;
    int base = getpriority(PRIO_PROCESS, tid);
    if (base == -1 && errno != 0)
        base = 0;
    int lead = base - POOL_WORKER_LEAD < -20 ? base + 20 : POOL_WORKER_LEAD;
    p->base_nice = base;
    p->lead = 0;
    if (lead > 0 && setpriority(PRIO_PROCESS, tid, base - lead) == 0) {
        setpriority(PRIO_PROCESS, tid, base);
        p->lead = lead;
    }
}

/* A contended worker runs its checks ahead of the loops, so each ends in
 * ~1.3x its own time rather than 2x; the others at the loops' weight, so a
 * burst of logins on an otherwise quiet machine takes no CPU from the
 * loops they would not get anyway. */
static void run_ahead(const pool *p, int *ahead, int contended)
{
    if (!p->lead || *ahead == contended)
        return;
    if (setpriority(PRIO_PROCESS, (id_t)thread_id(), contended ? p->base_nice - p->lead : p->base_nice) == 0)
        *ahead = contended;
}

static uint64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* What the watched threads (the loops) have spent on a CPU and waiting
 * for one while runnable: the first two fields of their
 * /proc/self/task/TID/schedstat. Returns how many were read. */
static unsigned loops_sched(pool *p, uint64_t run[], uint64_t wait[])
{
    unsigned n = 0, nwatched = __atomic_load_n(&p->nwatched, __ATOMIC_ACQUIRE);
    for (unsigned i = 0; i < nwatched; i++) {
        char b[96];
        unsigned long long r, w;
        ssize_t len = pread(p->watched[i], b, sizeof b - 1, 0);
        run[i] = wait[i] = 0;
        if (len <= 0)
            continue;
        b[len] = '\0';
        if (sscanf(b, "%llu %llu", &r, &w) == 2)
            run[i] = r, wait[i] = w, n++;
    }
    return n;
}

/* Runs a slow job; returns how long its worker should rest after it.
 * Whether hashing took a core a loop wanted is seen in the job's own
 * numbers: the worker got less than POOL_SHARED_CPU percent of a CPU (it
 * shared one) while a loop ran at least POOL_BUSY_LOOP percent of the time
 * and waited for a CPU at least POOL_STARVED_LOOP percent: it had work
 * and the hash took CPU from it. (A loop that is mostly idle may still
 * wait a moment for a CPU when it wakes, but it loses no throughput.) A
 * worker running ahead gets more of a shared core and a busy loop less:
 * the *_AHEAD figures. Then the worker rests long enough that it hashes at
 * most POOL_CONTENDED_DUTY percent of the time. */
static uint64_t run_slow(pool *p, pool_job *job, int ahead, uint64_t *wall_ns, uint64_t *cpu_ns)
{
    uint64_t run0[POOL_WATCH_MAX], wait0[POOL_WATCH_MAX], run1[POOL_WATCH_MAX], wait1[POOL_WATCH_MAX];
    uint64_t t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    unsigned n = loops_sched(p, run0, wait0);
    job->work(job);
    /* read in the opposite order: the CPU time's span lies inside the wall
     * clock's, so a job alone on its core never shows more CPU than wall */
    uint64_t mine = clock_ns(CLOCK_THREAD_CPUTIME_ID) - c0, wall = clock_ns(CLOCK_MONOTONIC) - t0;
    *wall_ns = wall, *cpu_ns = mine;
    ahead = ahead || atomic_load(&my_slot->state) == SLOT_RAISED;
    uint64_t shared = ahead ? POOL_SHARED_CPU_AHEAD : POOL_SHARED_CPU;
    uint64_t busy = ahead ? POOL_BUSY_LOOP_AHEAD : POOL_BUSY_LOOP;
    if (n == 0 || wall == 0 || mine * 100 >= wall * shared || loops_sched(p, run1, wait1) != n)
        return 0;
    for (unsigned i = 0; i < n; i++) {
        uint64_t waited = wait1[i] - wait0[i], ran = run1[i] - run0[i];
        if (ran * 100 >= wall * busy && waited * 100 >= wall * POOL_STARVED_LOOP)
            return wall * (100 - POOL_CONTENDED_DUTY) / POOL_CONTENDED_DUTY;
    }
    return 0;
}

/* The next job, or NULL when the pool stops. A worker that owes a rest
 * (rest_until) takes no new slow work meanwhile (pool_submit_slow refuses
 * it), but still takes what arrives: the jobs accepted before it began to
 * rest (the slow ones to shed), and short ones (writes) that must not
 * wait behind a rest. A worker stays contended until calm_until, even when
 * idle. The lock is held. */
static pool_job *next_job(pool *p, uint64_t *rest_until, uint64_t *calm_until)
{
    for (;;) {
        uint64_t now = clock_ns(CLOCK_MONOTONIC);
        /* a rest over ends here, queue or not (a stream of writes must not
         * keep a worker resting, and its logins refused, for ever) */
        if (*rest_until && now >= *rest_until) {
            *rest_until = 0;
            p->resting--;
        }
        if (*calm_until && now >= *calm_until) {
            *calm_until = 0;
            p->contended--;
        }
        if (p->head || p->stopping)
            break;
        uint64_t wake = *rest_until && (!*calm_until || *rest_until < *calm_until) ? *rest_until : *calm_until;
        if (!wake) {
            pthread_cond_wait(&p->ready, &p->lock);
            continue;
        }
        struct timespec until = {(time_t)(wake / 1000000000u), (long)(wake % 1000000000u)};
        pthread_cond_timedwait(&p->ready, &p->lock, &until);
    }
    pool_job *job = p->head;
    if (job) {
        p->head = job->next;
        if (!p->head)
            p->tail = NULL;
        p->running++;
    }
    return job;
}

static void *worker(void *arg)
{
    pool *p = arg;
    uint64_t rest_began = 0, calm_until = 0;
    int ahead = 0;
    as_batch(1);
    pthread_mutex_lock(&p->lock);
    my_slot = &p->slots[p->claimed++];
    my_slot->tid = thread_id();
    uint64_t *const rest_until = &my_slot->rest_until;  /* pool_rest_left_ms reads it */
    pool_job *job;
    while ((job = next_job(p, rest_until, &calm_until)) != NULL) {
        /* A password check that queued behind a hash which starved a loop
         * would end a hash late and take CPU the rest gives back, unless a
         * worker that does not rest may run it. (With a longer
         * --login-queue, waiting is wanted: none is shed.) */
        int resting = *rest_until != 0;
        job->shed = job->slow && resting && p->slow_queue <= 1 && job->queued_ns < rest_began &&
                    p->resting == p->nthreads;
        pthread_mutex_unlock(&p->lock);
        uint64_t rest = 0, wall = 0, cpu = 0;
        /* Ahead while contended, but never for a check taken during a rest
         * (a longer --login-queue) or for other work. */
        contended_job = job->slow && !job->shed && calm_until && !resting;
        run_ahead(p, &ahead, contended_job);
        if (job->slow && !job->shed && !ahead && !resting)   /* a rest's check stays behind */
            atomic_store(&my_slot->state, SLOT_BEHIND);
        if (job->slow && !job->shed)
            rest = run_slow(p, job, ahead, &wall, &cpu);
        else
            job->work(job);
        if (contended_job == 2)
            as_batch(1);
        contended_job = 0;
        pthread_mutex_lock(&p->lock);
        if (atomic_exchange(&my_slot->state, SLOT_OTHER) == SLOT_RAISED)
            setpriority(PRIO_PROCESS, (id_t)my_slot->tid, p->base_nice);
        p->running--;
        p->inflight--;
        p->slow_inflight -= job->slow != 0;
        p->rejected += job->shed != 0;
        if (job->slow && !job->shed) {
            p->slow_jobs++;
            p->slow_wall_ns += wall;
            p->slow_cpu_ns += cpu;
            p->rests += rest != 0;
        }
        if (rest) {
            uint64_t now = clock_ns(CLOCK_MONOTONIC);
            p->resting += *rest_until == 0;
            *rest_until = (*rest_until > now ? *rest_until : now) + rest;
            rest_began = now;
            /* One check that got its share does not end a storm: a worker
             * stays contended (no waiting place, ahead after the rest)
             * until the loops have had POOL_CALM_MS without contention. */
            p->contended += calm_until == 0;
            calm_until = *rest_until + POOL_CALM_MS * 1000000ull;
        }
        pthread_mutex_unlock(&p->lock);
        job->post(job);   /* the job may be gone after this */
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

pool *pool_create(unsigned threads, unsigned queue_max)
{
    if (threads == 0)
        return NULL;
    pool *p = calloc(1, sizeof *p + threads * sizeof(pthread_t));
    if (p && !(p->slots = calloc(threads, sizeof *p->slots))) {
        free(p);
        p = NULL;
    }
    if (!p)
        return NULL;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p->slots);
        free(p);
        return NULL;
    }
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);
    if (rc == 0) {
        rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* next_job's rest deadline */
        if (rc == 0)
            rc = pthread_cond_init(&p->ready, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (rc != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p->slots);
        free(p);
        return NULL;
    }
    p->queue_max = queue_max;
    p->slow_queue = 1;
    choose_lead(p);
    for (; p->nthreads < threads; p->nthreads++) {
        char name[16];
        if (pthread_create(&p->threads[p->nthreads], NULL, worker, p) != 0)
            break;
        snprintf(name, sizeof name, "tokend-work%u", p->nthreads % 1000);
        pthread_setname_np(p->threads[p->nthreads], name);
    }
    if (p->nthreads == 0) {
        pthread_cond_destroy(&p->ready);
        pthread_mutex_destroy(&p->lock);
        free(p->slots);
        free(p);
        return NULL;
    }
    return p;
}

/* The loops refuse a login: more come than the workers take, so a storm
 * may have begun while a check hashed at the loops' weight (nothing had
 * shown contention when it started). It would take ~2x its time beside a
 * busy loop; it runs ahead of them from here on, judged as such. The lock
 * is held. */
static void raise_behind(pool *p)
{
    for (unsigned i = 0; p->lead && i < p->claimed; i++)
        if (atomic_load(&p->slots[i].state) == SLOT_BEHIND &&
            setpriority(PRIO_PROCESS, (id_t)p->slots[i].tid, p->base_nice - p->lead) == 0)
            atomic_store(&p->slots[i].state, SLOT_RAISED);
}

static int submit(pool *p, pool_job *job, int slow)
{
    if (!p || !job || !job->work || !job->post)
        return -1;
    pthread_mutex_lock(&p->lock);
    /* While hashing is contended, each worker has one waiting place fewer:
     * by default none, so a slow job is taken only if a worker that does
     * not rest can start it now (waiting behind another hash would add its
     * time to this one's). A longer --login-queue says waiting is wanted. */
    unsigned can_start = p->nthreads > p->resting ? p->nthreads - p->resting : 0;
    unsigned waiting = p->contended && p->slow_queue ? p->slow_queue - 1 : p->slow_queue;
    int full = slow && (p->slow_inflight >= pool_slow_max(p) ||
                        (p->contended && (p->slow_inflight >= can_start + p->nthreads * waiting ||
                                          (waiting == 0 && p->inflight >= can_start))));
    if (p->inflight >= p->nthreads + p->queue_max || p->stopping || full) {
        if (full)
            raise_behind(p);
        p->rejected++;
        pthread_mutex_unlock(&p->lock);
        return -1;
    }
    job->next = NULL;
    job->slow = slow;
    job->shed = 0;
    job->queued_ns = slow ? clock_ns(CLOCK_MONOTONIC) : 0;
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

int pool_stats(pool *p, pool_counts *out)
{
    if (!p || !out)
        return -1;
    pthread_mutex_lock(&p->lock);
    *out = (pool_counts){
        .queued = p->inflight - p->running,
        .running = p->running,
        .rejected = p->rejected,
        .slow_jobs = p->slow_jobs,
        .slow_wall_ns = p->slow_wall_ns,
        .slow_cpu_ns = p->slow_cpu_ns,
        .rests = p->rests,
    };
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int pool_submit(pool *p, pool_job *job)
{
    return submit(p, job, 0);
}

int pool_submit_slow(pool *p, pool_job *job)
{
    return submit(p, job, 1);
}

unsigned pool_rest_left_ms(pool *p)
{
    if (!p)
        return 0;
    uint64_t soonest = UINT64_MAX;
    pthread_mutex_lock(&p->lock);
    if (p->nthreads != 0 && p->resting == p->nthreads)
        for (unsigned i = 0; i < p->claimed; i++)
            if (p->slots[i].rest_until != 0 && p->slots[i].rest_until < soonest)
                soonest = p->slots[i].rest_until;
    pthread_mutex_unlock(&p->lock);
    uint64_t now = clock_ns(CLOCK_MONOTONIC);
    return soonest == UINT64_MAX || soonest <= now ? 0 : (unsigned)((soonest - now + 999999) / 1000000);
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

int pool_watch(pool *p)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld/schedstat", (long)thread_id());
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&p->lock);
    if (p->nwatched == POOL_WATCH_MAX) {
        pthread_mutex_unlock(&p->lock);
        close(fd);
        return -1;
    }
    p->watched[p->nwatched] = fd;
    __atomic_store_n(&p->nwatched, p->nwatched + 1, __ATOMIC_RELEASE); /* workers read it unlocked */
    pthread_mutex_unlock(&p->lock);
    return 0;
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
    for (unsigned i = 0; i < p->nwatched; i++)
        close(p->watched[i]);
    free(p->slots);
    free(p);
}
