// pocketgpt._engine's private header: what the binding's three files share (never installed).
//
// _engine.c          the module, its Model type (a model file mapped in place) and the kernel probes
// _engine_session.c  the Session type (one KV cache: eval, sample, stop strings) and Model.decode_batch
// _engine_pool.c     the worker pool that runs the engine's parallel-for
#ifndef POCKETGPT_ENGINE_BINDING_H
#define POCKETGPT_ENGINE_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "gpt2.h"
#include "sampler.h"
#include "tokenizer.h"

extern PyObject *s_error;  // pocketgpt.errors.PocketError (set by PyInit__engine)

// ---- thread pool (_engine_pool.c) ------------------------------------------------------------

typedef struct {
    pthread_t *threads;
    int n_workers;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;
    pthread_mutex_t submit;  // one parallel-for at a time (sessions on several threads share the pool)
    pg_task_fn fn;           // published before `next` is reset (release) and read after taking a task
    void *arg;
    atomic_int n_tasks, done;
    // (job number << 32) | next task index: a task is taken by compare-and-swap on the whole word
    // (pool_run closes the word before it publishes a job: see there)
    atomic_uint_fast64_t next;
    atomic_uint_fast64_t gen;
    atomic_int quit, sleepers;
} pg_pool;

int pool_init(pg_pool *p, int n_threads);
void pool_free(pg_pool *p);
void pool_run(void *pool, pg_task_fn fn, void *arg, int n_tasks);  // a pg_par.run

// ---- Model (_engine.c) -----------------------------------------------------------------------

typedef struct {
    PyObject_HEAD
    pg_model model;
    void *map;
    size_t map_size;
    void *mem;
    pg_pool pool;
    int pool_ok;
    int n_threads;
    pthread_mutex_t batch_mu;  // one batched decode at a time owns the workspace below
    int batch_mu_ok;
    pg_batch batch;            // workspace for decode_batch, grown to the largest batch seen
    void *batch_mem;
    int32_t batch_cap;
} ModelObject;

extern PyTypeObject ModelType;
extern PyTypeObject SessionType;
PyObject *raise_status(const pg_status *st, const char *path);  // raises PocketError, returns NULL
int model_ready(ModelObject *self);                              // 0 (with an exception set) when not
PyObject *Model_decode_batch(ModelObject *self, PyObject *args); // _engine_session.c

#endif
