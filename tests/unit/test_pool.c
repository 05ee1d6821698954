/* test_pool.c - pool.c: work runs on worker threads and is posted back, a
 * full pool refuses at once, pool_destroy lets queued jobs finish, and a
 * worker whose slow job shared a core with a busy thread of the process
 * rests (slow jobs are refused meanwhile, and one that queued is shed),
 * but not on an idle core, and runs its next one ahead of the loops.
 * Jobs that must block wait on a gate the test opens. Every wait has a
 * deadline so a broken pool fails the test instead of hanging it. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <pthread.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

#define WAIT_SECONDS 10

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int gate_open;      /* blocking jobs wait for this */
    int started;        /* jobs whose work has begun */
    int worked;         /* jobs whose work has finished */
    int posted;         /* jobs posted back */
    int order[64];      /* job ids in the order their work began */
    pthread_t main_thread;
} harness;

typedef struct {
    pool_job job;       /* first: the pool hands back this pointer */
    harness *h;
    int id;
    int block;          /* wait for the gate */
    int work_ran, post_ran, post_saw_work;
    int on_main_thread;
    int shed_seen;      /* work was called with job.shed set */
    int nice;           /* the worker's nice value while it worked */
    int policy;         /* and its scheduling policy, */
    int policy_after;   /* and after pool_job_waits */
    int begun;          /* burn_work has begun */
    int nice_end;       /* the nice value when it ended */
    pthread_t worker;
} test_job;

static void harness_init(harness *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->main_thread = pthread_self();
}

static void harness_free(harness *h)
{
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->cond);
}

static void job_work(pool_job *pj)
{
    test_job *j = (test_job *)pj;
    harness *h = j->h;
    j->worker = pthread_self();
    j->on_main_thread = pthread_equal(j->worker, h->main_thread);
    pthread_mutex_lock(&h->lock);
    if (h->started < 64)
        h->order[h->started] = j->id;
    h->started++;
    pthread_cond_broadcast(&h->cond);
    while (j->block && !h->gate_open)
        pthread_cond_wait(&h->cond, &h->lock);
    j->work_ran = 1;
    h->worked++;
    pthread_mutex_unlock(&h->lock);
}

static void job_post(pool_job *pj)
{
    test_job *j = (test_job *)pj;
    harness *h = j->h;
    pthread_mutex_lock(&h->lock);
    j->post_saw_work = j->work_ran;
    j->post_ran++;
    h->posted++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static void job_init(test_job *j, harness *h, int id, int block)
{
    memset(j, 0, sizeof *j);
    j->job.work = job_work;
    j->job.post = job_post;
    j->job.owner = h;
    j->h = h;
    j->id = id;
    j->block = block;
}

/* Waits until *counter >= want; 0, or -1 at the deadline. */
static int wait_for(harness *h, int *counter, int want)
{
    struct timespec deadline;
    int rc = 0;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += WAIT_SECONDS;
    pthread_mutex_lock(&h->lock);
    while (*counter < want && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&h->cond, &h->lock, &deadline);
    rc = *counter >= want ? 0 : -1;
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static void open_gate(harness *h)
{
    pthread_mutex_lock(&h->lock);
    h->gate_open = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
}

static int get(harness *h, int *counter)
{
    pthread_mutex_lock(&h->lock);
    int v = *counter;
    pthread_mutex_unlock(&h->lock);
    return v;
}

static void test_create_args(void **state)
{
    (void)state;
    assert_null(pool_create(0, 4));
    pool *p = pool_create(1, 0);
    assert_non_null(p);
    pool_counts c;
    assert_int_equal(pool_stats(NULL, &c), -1);
    assert_int_equal(pool_stats(p, NULL), -1);
    assert_int_equal(pool_stats(p, &c), 0);
    assert_int_equal(c.slow_jobs + c.slow_wall_ns + c.slow_cpu_ns + c.rests + c.rejected, 0);
    static harness h;   /* static: a failed test leaves workers blocked on it */
    harness_init(&h);
    static test_job j;
    job_init(&j, &h, 0, 0);
    /* Jobs without work or post, and NULLs, are refused. */
    j.job.work = NULL;
    assert_int_equal(pool_submit(p, &j.job), -1);
    j.job.work = job_work;
    j.job.post = NULL;
    assert_int_equal(pool_submit(p, &j.job), -1);
    assert_int_equal(pool_submit(p, NULL), -1);
    assert_int_equal(pool_submit(NULL, &j.job), -1);
    pool_destroy(p);
    pool_destroy(NULL);
    assert_int_equal(h.started, 0);
    harness_free(&h);
}

static void test_jobs_run_on_workers_and_post_back(void **state)
{
    (void)state;
    enum { N = 16 };
    static harness h;   /* static: a failed test leaves workers blocked on it */
    static test_job jobs[N];
    harness_init(&h);
    pool *p = pool_create(2, N);
    assert_non_null(p);
    for (int i = 0; i < N; i++) {
        job_init(&jobs[i], &h, i, 0);
        assert_int_equal(pool_submit(p, &jobs[i].job), 0);
    }
    assert_int_equal(wait_for(&h, &h.posted, N), 0);
    for (int i = 0; i < N; i++) {
        assert_true(jobs[i].work_ran);
        assert_int_equal(jobs[i].post_ran, 1);
        assert_true(jobs[i].post_saw_work);     /* post came after work */
        assert_false(jobs[i].on_main_thread);
        assert_ptr_equal(jobs[i].job.owner, &h);
    }
    pool_destroy(p);
    /* Nothing ran twice. */
    assert_int_equal(h.posted, N);
    assert_int_equal(h.worked, N);
    harness_free(&h);
}

static void test_fifo_order_single_worker(void **state)
{
    (void)state;
    enum { N = 8 };
    static harness h;   /* static: a failed test leaves workers blocked on it */
    static test_job jobs[N];
    harness_init(&h);
    pool *p = pool_create(1, N);
    assert_non_null(p);
    job_init(&jobs[0], &h, 0, 1);
    assert_int_equal(pool_submit(p, &jobs[0].job), 0);
    assert_int_equal(wait_for(&h, &h.started, 1), 0);
    for (int i = 1; i < N; i++) {
        job_init(&jobs[i], &h, i, 0);
        assert_int_equal(pool_submit(p, &jobs[i].job), 0);
    }
    open_gate(&h);
    assert_int_equal(wait_for(&h, &h.posted, N), 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(h.order[i], i);
    pool_destroy(p);
    harness_free(&h);
}

static void test_full_pool_refuses(void **state)
{
    (void)state;
    static harness h;   /* static: a failed test leaves workers blocked on it */
    static test_job first, second;
    harness_init(&h);
    pool *p = pool_create(1, 0);
    assert_non_null(p);

    job_init(&first, &h, 1, 1);
    job_init(&second, &h, 2, 0);
    assert_int_equal(pool_submit(p, &first.job), 0);
    /* The first job is running on the only worker, and no queue. */
    assert_int_equal(wait_for(&h, &h.started, 1), 0);
    assert_int_equal(pool_submit(p, &second.job), -1);
    assert_int_equal(pool_submit(p, &second.job), -1);

    open_gate(&h);
    assert_int_equal(wait_for(&h, &h.posted, 1), 0);
    /* The refused job was not taken: it never ran. */
    usleep(20000);
    assert_false(second.work_ran);
    assert_int_equal(second.post_ran, 0);
    assert_int_equal(get(&h, &h.started), 1);

    /* Room again once the first job is done. */
    assert_int_equal(pool_submit(p, &second.job), 0);
    assert_int_equal(wait_for(&h, &h.posted, 2), 0);
    assert_true(second.work_ran);
    pool_destroy(p);
    harness_free(&h);
}

static void test_queue_bound(void **state)
{
    (void)state;
    enum { THREADS = 2, QUEUE = 3 };
    static harness h;   /* static: a failed test leaves workers blocked on it */
    static test_job jobs[THREADS + QUEUE + 1];
    harness_init(&h);
    pool *p = pool_create(THREADS, QUEUE);
    assert_non_null(p);
    for (int i = 0; i < THREADS + QUEUE + 1; i++)
        job_init(&jobs[i], &h, i, 1);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pool_submit(p, &jobs[i].job), 0);
    assert_int_equal(wait_for(&h, &h.started, THREADS), 0);
    /* Both workers busy: exactly QUEUE more are taken, the next refused. */
    for (int i = THREADS; i < THREADS + QUEUE; i++)
        assert_int_equal(pool_submit(p, &jobs[i].job), 0);
    assert_int_equal(pool_submit(p, &jobs[THREADS + QUEUE].job), -1);

    open_gate(&h);
    assert_int_equal(wait_for(&h, &h.posted, THREADS + QUEUE), 0);
    pool_destroy(p);
    assert_int_equal(h.posted, THREADS + QUEUE);
    assert_false(jobs[THREADS + QUEUE].work_ran);
    harness_free(&h);
}

static void *open_gate_later(void *arg)
{
    usleep(200000);
    open_gate(arg);
    return NULL;
}

static void test_destroy_finishes_queued_jobs(void **state)
{
    (void)state;
    enum { QUEUED = 5 };
    static harness h;   /* static: a failed test leaves workers blocked on it */
    static test_job jobs[1 + QUEUED];
    pthread_t opener;
    harness_init(&h);
    pool *p = pool_create(1, QUEUED);
    assert_non_null(p);

    job_init(&jobs[0], &h, 0, 1);
    assert_int_equal(pool_submit(p, &jobs[0].job), 0);
    assert_int_equal(wait_for(&h, &h.started, 1), 0);
    for (int i = 1; i <= QUEUED; i++) {
        job_init(&jobs[i], &h, i, 0);
        assert_int_equal(pool_submit(p, &jobs[i].job), 0);
    }
    /* Destroy while one job runs and five wait; the gate opens meanwhile. */
    assert_int_equal(pthread_create(&opener, NULL, open_gate_later, &h), 0);
    pool_destroy(p);
    pthread_join(opener, NULL);

    assert_int_equal(h.posted, 1 + QUEUED);
    for (int i = 0; i <= QUEUED; i++) {
        assert_true(jobs[i].work_ran);
        assert_int_equal(jobs[i].post_ran, 1);
    }
    harness_free(&h);
}

/* --- resting under contention ------------------------------------------------ */

static atomic_int spin_stop, spin_watched, spin_nice;

static int my_nice(void)
{
    return getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
}

/* Whether this process may lower a thread's nice value (root,
 * CAP_SYS_NICE, RLIMIT_NICE): tried on this thread and undone. */
static int can_lower_nice(void)
{
    id_t tid = (id_t)syscall(SYS_gettid);
    int base = getpriority(PRIO_PROCESS, tid);
    if (base <= -20 || setpriority(PRIO_PROCESS, tid, base - 1) != 0)
        return 0;
    setpriority(PRIO_PROCESS, tid, base);
    return 1;
}

/* A busy event loop: watched by the pool, never sleeping. */
static void *spinner(void *arg)
{
    assert_int_equal(pool_watch(arg), 0);
    atomic_store(&spin_nice, my_nice());
    atomic_store(&spin_watched, 1);
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
        ;
    return NULL;
}

static uint64_t cpu_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A "password hash": 40 ms of the worker's own CPU, unless shed. */
static void burn_work(pool_job *pj)
{
    test_job *j = (test_job *)pj;
    j->nice = my_nice();
    j->policy = sched_getscheduler(0);
    if (pj->shed) {
        j->shed_seen = 1;
        return;
    }
    __atomic_store_n(&j->begun, 1, __ATOMIC_RELEASE);
    uint64_t c0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    while (cpu_ns(CLOCK_THREAD_CPUTIME_ID) - c0 < 40000000u)
        ;
    j->nice_end = my_nice();
    pool_job_waits();   /* as a login does after its hash */
    j->policy_after = sched_getscheduler(0);
    j->work_ran = 1;
}

/* One slow job on a pool of one worker, everything on one CPU, with or
 * without a busy watched thread beside it (an idle one is always watched); then how soon a second is accepted (ms),
 * or -1 if not within 5 s; *refused: whether it was refused at first. */
static harness h;
static test_job first, second, third;

/* A short job (a write) that notes its worker's nice value. */
static void note_nice(pool_job *pj)
{
    ((test_job *)pj)->nice = my_nice();
    ((test_job *)pj)->policy = sched_getscheduler(0);
}

/* A pool of one worker with `queue` waiting places, everything on this
 * thread's CPU (threads made now inherit it), this thread watched as an
 * idle loop and, if `busy`, a spinner as a busy one; first and second
 * ready as 40 ms "hashes". */
static pool *one_cpu_pool(int busy, unsigned queue, cpu_set_t *saved, pthread_t *spin)
{
    cpu_set_t one;
    sched_getaffinity(0, sizeof *saved, saved);
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    atomic_store(&spin_stop, 0);
    atomic_store(&spin_watched, 0);
    harness_init(&h);
    pool *p = pool_create(1, 4);
    assert_non_null(p);
    pool_set_slow_queue(p, queue);
    assert_int_equal(pool_watch(p), 0);
    if (busy) {
        assert_int_equal(pthread_create(spin, NULL, spinner, p), 0);
        while (!atomic_load(&spin_watched))
            usleep(1000);
    }
    job_init(&first, &h, 1, 0);
    job_init(&second, &h, 2, 0);
    first.job.work = second.job.work = burn_work;
    return p;
}

static void one_cpu_pool_end(pool *p, int busy, pthread_t spin, const cpu_set_t *saved)
{
    atomic_store(&spin_stop, 1);
    if (busy)
        pthread_join(spin, NULL);
    pool_destroy(p);
    harness_free(&h);
    sched_setaffinity(0, sizeof *saved, saved);
}

static int second_slow_job_after(int busy, unsigned queue, int *refused)
{
    cpu_set_t saved;
    pthread_t spin;
    pool *p = one_cpu_pool(busy, queue, &saved, &spin);
    assert_int_equal(pool_submit_slow(p, &first.job), 0);
    assert_int_equal(wait_for(&h, &h.posted, 1), 0);
    uint64_t t0 = cpu_ns(CLOCK_MONOTONIC);
    *refused = pool_submit_slow(p, &second.job) != 0;
    /* The first job's times: its 40 ms of CPU, and a wall clock that shows
     * whether it shared the CPU (about half of it beside the spinner, at
     * the same weight). */
    pool_counts c;
    assert_int_equal(pool_stats(p, &c), 0);
    assert_int_equal(c.slow_jobs, 1);
    assert_true(c.slow_cpu_ns >= 40000000u && c.slow_cpu_ns < 60000000u);
    assert_true(c.slow_wall_ns >= c.slow_cpu_ns);
    if (busy) {  /* (idle, other processes on this CPU could still stretch it) */
        assert_true(c.slow_wall_ns >= c.slow_cpu_ns * 3 / 2);
        assert_int_equal(first.nice, atomic_load(&spin_nice));
    }
    assert_int_equal(c.rests, busy != 0); /* a busy core makes it rest */
    if (*refused) {
        /* a short job (a write) does not wait for the rest */
        static test_job quick;
        job_init(&quick, &h, 3, 0);
        assert_int_equal(pool_submit(p, &quick.job), 0);
        assert_int_equal(wait_for(&h, &h.posted, 2), 0);
        assert_true(cpu_ns(CLOCK_MONOTONIC) - t0 < 100000000u);
        assert_int_equal(pool_submit_slow(p, &second.job), -1); /* still resting */
        /* what the refusal's Retry-After says: the rest's end, not a
         * fixed second (a rest is 93/7 of the hash's wall time) */
        uint64_t rest_ms = c.slow_wall_ns * (100 - POOL_CONTENDED_DUTY) / POOL_CONTENDED_DUTY / 1000000u;
        unsigned left = pool_rest_left_ms(p);
        assert_true(left >= rest_ms / 2 && left <= rest_ms + 1);
    } else if (!busy) {
        assert_int_equal(pool_rest_left_ms(p), 0);   /* no rest: nothing to wait for */
    }
    int ms = *refused ? -1 : 0;
    while (ms < 0 && cpu_ns(CLOCK_MONOTONIC) - t0 < 5000000000u) {
        usleep(5000);
        if (pool_submit_slow(p, &second.job) == 0)
            ms = (int)((cpu_ns(CLOCK_MONOTONIC) - t0) / 1000000u);
    }
    if (ms >= 0) {
        assert_int_equal(wait_for(&h, &h.posted, *refused ? 3 : 2), 0);
        /* then a write: back at the loops' weight, whatever ran before */
        job_init(&third, &h, 4, 0);
        third.job.work = note_nice;
        assert_int_equal(pool_submit(p, &third.job), 0);
        assert_int_equal(wait_for(&h, &h.posted, *refused ? 4 : 3), 0);
    }
    one_cpu_pool_end(p, busy, spin, &saved);
    return ms;
}

static void test_rests_when_sharing_a_busy_core(void **state)
{
    (void)state;
    int refused;
    int ms = second_slow_job_after(1, 1, &refused);
    /* the job got about half the CPU for ~80 ms: a rest of 93/7 times that */
    assert_true(refused);
    assert_true(ms >= 150);
    assert_true(ms >= 0 && ms < 5000);
    /* the check after the rest runs ahead of the loops (where the process
     * may do that), and the write after it at their weight again */
    assert_int_equal(atomic_load(&spin_nice) - second.nice, can_lower_nice() ? POOL_WORKER_LEAD : 0);
    assert_int_equal(third.nice, atomic_load(&spin_nice));
    /* a batch thread while it hashes; after the hash of a contended check
     * an ordinary one (its commit's waits end when the kernel wakes it,
     * not after a loop's slice), and a batch one again for the next job */
    assert_int_equal(first.policy, SCHED_BATCH);
    assert_int_equal(first.policy_after, SCHED_BATCH);
    assert_int_equal(second.policy, SCHED_BATCH);
    assert_int_equal(second.policy_after, SCHED_OTHER);
    assert_int_equal(third.policy, SCHED_BATCH);
}

static void test_no_rest_on_an_idle_core(void **state)
{
    (void)state;
    int refused;
    assert_int_equal(second_slow_job_after(0, 1, &refused), 0);
    assert_false(refused);
}

/* A longer queue (--login-queue 2) says waiting is wanted: contended, a
 * worker keeps one waiting place of two, so the second job is taken; taken
 * during the rest, it does not run ahead of the loops. */
static void test_contended_keeps_a_longer_queue(void **state)
{
    (void)state;
    int refused;
    assert_int_equal(second_slow_job_after(1, 2, &refused), 0);
    assert_false(refused);
    assert_int_equal(first.nice, atomic_load(&spin_nice));
    assert_int_equal(second.nice, atomic_load(&spin_nice));
}

/* Two slow jobs at once, the second waiting behind the first, everything
 * on one CPU, with or without a busy watched thread: whether the second
 * was shed, and the pool's counts. */
static int second_queued_shed(int busy, pool_counts *c)
{
    cpu_set_t saved;
    pthread_t spin;
    pool *p = one_cpu_pool(busy, 1, &saved, &spin);
    /* Nothing was contended yet: the second gets the waiting place. */
    assert_int_equal(pool_submit_slow(p, &first.job), 0);
    assert_int_equal(pool_submit_slow(p, &second.job), 0);
    assert_int_equal(wait_for(&h, &h.posted, 2), 0);
    assert_int_equal(first.shed_seen, 0);
    assert_int_equal(second.post_ran, 1);
    assert_int_equal(pool_stats(p, c), 0);
    one_cpu_pool_end(p, busy, spin, &saved);
    return second.shed_seen;
}

/* Behind a hash that starved a loop, a waiting check would end a whole
 * hash late: it is shed (work only answers "busy"), counted as refused. */
static void test_queued_job_shed_after_contended_hash(void **state)
{
    (void)state;
    pool_counts c;
    assert_true(second_queued_shed(1, &c));
    assert_int_equal(c.slow_jobs, 1);
    assert_int_equal(c.rests, 1);
    assert_int_equal(c.rejected, 1);
}

static void test_queued_job_runs_on_an_idle_core(void **state)
{
    (void)state;
    pool_counts c;
    assert_false(second_queued_shed(0, &c));
    assert_int_equal(c.slow_jobs, 2);
    assert_int_equal(c.rests, 0);
    assert_int_equal(c.rejected, 0);
}

/* One check that got its share does not end a storm: after a contended
 * hash and its rest, a check on a core gone quiet leaves the worker
 * contended (no waiting place) until POOL_CALM_MS have passed; then a
 * check waits again behind another, at the loops' weight. */
static void test_contended_until_calm(void **state)
{
    (void)state;
    cpu_set_t saved;
    pthread_t spin;
    static test_job held, behind;
    pool *p = one_cpu_pool(1, 1, &saved, &spin);
    assert_int_equal(pool_submit_slow(p, &first.job), 0);
    assert_int_equal(wait_for(&h, &h.posted, 1), 0);
    atomic_store(&spin_stop, 1);     /* the loop goes quiet */
    pthread_join(spin, NULL);
    uint64_t t0 = cpu_ns(CLOCK_MONOTONIC);
    while (pool_submit_slow(p, &second.job) != 0 && cpu_ns(CLOCK_MONOTONIC) - t0 < 5000000000u)
        usleep(5000);
    assert_int_equal(wait_for(&h, &h.posted, 2), 0);
    assert_true(second.work_ran);
    pool_counts c;
    assert_int_equal(pool_stats(p, &c), 0);
    assert_int_equal(c.rests, 1);    /* the second was not contended */
    /* still contended: a check no worker can start now is refused */
    job_init(&held, &h, 3, 1);
    job_init(&behind, &h, 4, 0);
    assert_int_equal(pool_submit_slow(p, &held.job), 0);
    int started = wait_for(&h, &h.started, 1);
    int taken = pool_submit_slow(p, &behind.job) == 0;
    open_gate(&h);   /* (before asserting: a held worker would hang the next test) */
    assert_int_equal(started, 0);
    assert_false(taken);
    assert_int_equal(wait_for(&h, &h.posted, 3), 0);
    /* calm again: the waiting place is back */
    usleep((POOL_CALM_MS + 200) * 1000);
    h.gate_open = 0;
    job_init(&held, &h, 5, 1);
    held.job.work = job_work;
    assert_int_equal(pool_submit_slow(p, &held.job), 0);
    started = wait_for(&h, &h.started, 2);
    job_init(&behind, &h, 6, 0);
    behind.job.work = burn_work;
    taken = pool_submit_slow(p, &behind.job) == 0;
    open_gate(&h);
    assert_int_equal(started, 0);
    assert_true(taken);
    assert_int_equal(wait_for(&h, &h.posted, 5), 0);
    assert_false(behind.shed_seen);
    assert_true(behind.work_ran);
    assert_int_equal(behind.nice, atomic_load(&spin_nice));
    pool_destroy(p);
    harness_free(&h);
    sched_setaffinity(0, sizeof saved, &saved);
}

/* Once j has begun to hash, a slow job the pool refuses (it is full):
 * the loops start refusing logins. */
static void refuse_one_while(pool *p, test_job *j)
{
    static test_job refused;
    uint64_t t0 = cpu_ns(CLOCK_MONOTONIC);
    while (!__atomic_load_n(&j->begun, __ATOMIC_ACQUIRE) && cpu_ns(CLOCK_MONOTONIC) - t0 < 5000000000u)
        usleep(1000);
    job_init(&refused, &h, 99, 0);
    refused.job.work = burn_work;
    assert_int_equal(pool_submit_slow(p, &refused.job), -1);
}

/* A check that began at the loops' weight (nothing was contended) is
 * raised ahead of them once the pool refuses a login: a storm began while
 * it hashed. After it, the worker is back at their weight. */
static void test_refusal_raises_a_check_behind(void **state)
{
    (void)state;
    cpu_set_t saved;
    pthread_t spin;
    pool *p = one_cpu_pool(1, 1, &saved, &spin);
    assert_int_equal(pool_submit_slow(p, &first.job), 0);
    assert_int_equal(pool_submit_slow(p, &second.job), 0);   /* the waiting place */
    refuse_one_while(p, &first);                              /* full: a storm */
    assert_int_equal(wait_for(&h, &h.posted, 2), 0);
    job_init(&third, &h, 4, 0);
    third.job.work = note_nice;
    assert_int_equal(pool_submit(p, &third.job), 0);
    assert_int_equal(wait_for(&h, &h.posted, 3), 0);
    assert_int_equal(first.nice, atomic_load(&spin_nice));
    assert_int_equal(atomic_load(&spin_nice) - first.nice_end, can_lower_nice() ? POOL_WORKER_LEAD : 0);
    assert_int_equal(third.nice, atomic_load(&spin_nice));
    one_cpu_pool_end(p, 1, spin, &saved);
}

/* ...but a check taken during a rest (a longer --login-queue) stays at
 * the loops' weight, refusals or not: the rest bounds what they lose. */
static void test_refusal_leaves_a_rests_check_behind(void **state)
{
    (void)state;
    cpu_set_t saved;
    pthread_t spin;
    pool *p = one_cpu_pool(1, 2, &saved, &spin);
    assert_int_equal(pool_submit_slow(p, &first.job), 0);
    assert_int_equal(wait_for(&h, &h.posted, 1), 0);           /* contended: a rest */
    assert_int_equal(pool_submit_slow(p, &second.job), 0);    /* one place of two */
    refuse_one_while(p, &second);
    assert_int_equal(wait_for(&h, &h.posted, 2), 0);
    assert_true(second.work_ran);
    assert_int_equal(second.nice_end, atomic_load(&spin_nice));
    one_cpu_pool_end(p, 1, spin, &saved);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_args),
        cmocka_unit_test(test_jobs_run_on_workers_and_post_back),
        cmocka_unit_test(test_fifo_order_single_worker),
        cmocka_unit_test(test_full_pool_refuses),
        cmocka_unit_test(test_queue_bound),
        cmocka_unit_test(test_destroy_finishes_queued_jobs),
        cmocka_unit_test(test_rests_when_sharing_a_busy_core),
        cmocka_unit_test(test_no_rest_on_an_idle_core),
        cmocka_unit_test(test_contended_keeps_a_longer_queue),
        cmocka_unit_test(test_queued_job_shed_after_contended_hash),
        cmocka_unit_test(test_contended_until_calm),
        cmocka_unit_test(test_refusal_raises_a_check_behind),
        cmocka_unit_test(test_refusal_leaves_a_rests_check_behind),
        cmocka_unit_test(test_queued_job_runs_on_an_idle_core),
    };
    return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
