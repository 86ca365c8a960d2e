// pocketgpt._engine's worker pool: the host's pg_par.run, one pool per Model (see _engine.h).
//
// Persistent workers that spin briefly on a generation counter before sleeping on a condition
// variable: a token is ~50 parallel-fors a few tens of microseconds apart, and a futex wake-up
// per matrix would cost about as much as the matrix. Tasks are handed out by an atomic counter,
// so a worker the OS has descheduled does not hold back the others.

#include "_engine.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PG_PAUSE() _mm_pause()
#else
#define PG_PAUSE() ((void)0)
#endif

enum { PG_SPIN = 20000 };  // pause iterations (about a millisecond) before a worker sleeps

// the low word of `next` while pool_run is publishing a job: no index is below it
#define PG_POOL_CLOSED 0xFFFFFFFFu

static void pool_take_tasks(pg_pool *p) {
    for (;;) {
        uint_fast64_t v = atomic_load(&p->next);
        // n_tasks is stored while `next` is closed, so if the swap below succeeds on an open word,
        // n is that job's count (a newer job's count comes with a newer word, and the swap fails)
        uint32_t n = (uint32_t)atomic_load(&p->n_tasks);
        uint32_t t = (uint32_t)v;
        if (t >= n) return;
        if (!atomic_compare_exchange_weak(&p->next, &v, v + 1)) continue;
        p->fn(p->arg, (int)t, (int)n);  // the job cannot end (nor fn/arg change) before `done` counts this task
        atomic_fetch_add(&p->done, 1);
    }
}

static void *pool_worker(void *arg) {
    pg_pool *p = (pg_pool *)arg;
    uint_fast64_t seen = 0;
    for (;;) {
        for (int i = 0; i < PG_SPIN && atomic_load(&p->gen) == seen && !atomic_load(&p->quit); i++) PG_PAUSE();
        if (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->cv_work, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = atomic_load(&p->gen);
        pool_take_tasks(p);
    }
}

void pool_run(void *pool, pg_task_fn fn, void *arg, int n_tasks) {
    pg_pool *p = (pg_pool *)pool;
    pthread_mutex_lock(&p->submit);
    // close the word first, under the new job number: a worker still leaving the last job holds
    // that job's word and its swap fails from here on, so it cannot run a task of this job with
    // the last job's index or count a task into this job's `done` (which let the caller return
    // while a task still ran); then publish the job and open index 0
    uint_fast64_t job = (atomic_load(&p->next) >> 32) + 1;
    atomic_store(&p->next, (job << 32) | PG_POOL_CLOSED);
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->n_tasks, n_tasks);
    atomic_store(&p->done, 0);
    atomic_store(&p->next, job << 32);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
    }
    pool_take_tasks(p);  // the calling thread works too
    for (long i = 0; atomic_load(&p->done) < n_tasks; i++) {
        if (i < PG_SPIN) PG_PAUSE();
        else sched_yield();  // a worker was descheduled mid-task: give it the core
    }
    pthread_mutex_unlock(&p->submit);
}

int pool_init(pg_pool *p, int n_threads) {
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->submit, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    atomic_init(&p->n_tasks, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->gen, 0);
    atomic_init(&p->quit, 0);
    atomic_init(&p->sleepers, 0);
    p->n_workers = n_threads - 1;
    if (p->n_workers <= 0) return 0;
    p->threads = calloc((size_t)p->n_workers, sizeof(pthread_t));
    if (!p->threads) return -1;
    for (int i = 0; i < p->n_workers; i++) {
        if (pthread_create(&p->threads[i], NULL, pool_worker, p) != 0) {
            p->n_workers = i;
            return -1;
        }
    }
    return 0;
}

void pool_free(pg_pool *p) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    p->threads = NULL;
    p->n_workers = 0;
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->submit);
    pthread_cond_destroy(&p->cv_work);
}
