// pocketgpt._engine: the C engine (firmware/engine) as a CPython extension, host only.
//
// Plain CPython C API. The model file is mmapped read-only (tensors are used in place); a
// persistent pthread pool per model serves the engine's parallel-for; the GIL is released while
// the engine computes. The Python-facing API lives in pocketgpt/engine.py.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gpt2.h"
#include "sampler.h"
#include "tokenizer.h"

static PyObject *s_error;  // pocketgpt.errors.PocketError

// ---- thread pool ---------------------------------------------------------------------------
//
// Persistent workers that spin briefly on a generation counter before sleeping on a condition
// variable: a token is ~50 parallel-fors a few tens of microseconds apart, and a futex wake-up
// per matrix would cost about as much as the matrix. Tasks are handed out by an atomic counter,
// so a worker the OS has descheduled does not hold back the others.

#include <sched.h>
#include <stdatomic.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PG_PAUSE() _mm_pause()
#else
#define PG_PAUSE() ((void)0)
#endif

enum { PG_SPIN = 20000 };  // pause iterations (about a millisecond) before a worker sleeps

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

static void pool_run(void *pool, pg_task_fn fn, void *arg, int n_tasks) {
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

static int pool_init(pg_pool *p, int n_threads) {
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

static void pool_free(pg_pool *p) {
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

// ---- Model ---------------------------------------------------------------------------------

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

static PyObject *raise_status(const pg_status *st, const char *path) {
    if (path)
        PyErr_Format(s_error, "%s: %s", path, st->msg);
    else
        PyErr_SetString(s_error, st->msg);
    return NULL;
}

static void Model_dealloc(ModelObject *self) {
    if (self->pool_ok) pool_free(&self->pool);
    free(self->batch_mem);
    if (self->batch_mu_ok) pthread_mutex_destroy(&self->batch_mu);
    free(self->mem);
    if (self->map) munmap(self->map, self->map_size);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "threads", "kernels", NULL};
    const char *path;
    int threads = 1, kernels = PG_KERNELS_BEST;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|ii", kwlist, &path, &threads, &kernels)) return -1;
    if (self->map) {
        PyErr_SetString(PyExc_RuntimeError, "Model already initialised");
        return -1;
    }
    if (threads < 1 || threads > 256) {
        PyErr_Format(s_error, "threads must be 1..256, got %d", threads);
        return -1;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        PyErr_Format(s_error, "%s: cannot open (%s)", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0) {
        close(fd);
        PyErr_Format(s_error, "%s: not a regular, non-empty file", path);
        return -1;
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        PyErr_Format(s_error, "%s: cannot mmap (%s)", path, strerror(errno));
        return -1;
    }
    self->map = map;
    self->map_size = (size_t)sb.st_size;
    pg_status st;
    pg_code rc;
    size_t need = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = pg_model_mem_size(map, self->map_size, &need, &st);
    Py_END_ALLOW_THREADS
    if (rc) {
        raise_status(&st, path);
        return -1;
    }
    self->mem = malloc(need ? need : 1);
    if (!self->mem) {
        PyErr_NoMemory();
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = pg_model_init(&self->model, map, self->map_size, self->mem, need ? need : 1, kernels, &st);
    Py_END_ALLOW_THREADS
    if (rc) {
        raise_status(&st, path);
        return -1;
    }
    // The header (vocabulary and merges, ~1.7 MB for GPT-2) now lives in the tokenizer tables: give
    // its pages back. The mapping is private and never written, so a later read just maps the
    // file's page again.
    size_t page = (size_t)sysconf(_SC_PAGESIZE), head = page ? self->model.gguf.data_off / page * page : 0;
    if (head) madvise(map, head, MADV_DONTNEED);
    if (pool_init(&self->pool, threads) != 0) {
        pool_free(&self->pool);
        PyErr_SetString(s_error, "cannot start the engine's worker threads");
        return -1;
    }
    self->pool_ok = 1;
    self->n_threads = threads;
    pthread_mutex_init(&self->batch_mu, NULL);
    self->batch_mu_ok = 1;
    return 0;
}

static int model_ready(ModelObject *self) {
    if (!self->map || !self->pool_ok) {
        PyErr_SetString(PyExc_RuntimeError, "Model is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *Model_tokenize(ModelObject *self, PyObject *args) {
    Py_buffer text;
    int parse_special = 1;
    if (!model_ready(self) || !PyArg_ParseTuple(args, "y*|p", &text, &parse_special)) return NULL;
    size_t n = (size_t)text.len;
    size_t scratch_size = pg_tokenizer_scratch_size(n);
    int32_t *ids = malloc((n + 1) * sizeof(int32_t));
    void *scratch = malloc(scratch_size);
    if (!ids || !scratch) {
        free(ids);
        free(scratch);
        PyBuffer_Release(&text);
        return PyErr_NoMemory();
    }
    size_t n_ids = 0;
    pg_status st;
    pg_code rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pg_tokenizer_encode(&self->model.tok, (const uint8_t *)text.buf, n, parse_special, ids, n + 1, &n_ids,
                             scratch, scratch_size, &st);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&text);
    free(scratch);
    if (rc) {
        free(ids);
        return raise_status(&st, NULL);
    }
    PyObject *out = PyList_New((Py_ssize_t)n_ids);
    for (size_t i = 0; out && i < n_ids; i++) PyList_SET_ITEM(out, (Py_ssize_t)i, PyLong_FromLong(ids[i]));
    free(ids);
    return out;
}

static PyObject *Model_token_bytes(ModelObject *self, PyObject *args) {
    int id;
    if (!model_ready(self) || !PyArg_ParseTuple(args, "i", &id)) return NULL;
    uint32_t len;
    const uint8_t *b = pg_tokenizer_token_bytes(&self->model.tok, id, &len);
    if (!b) return PyErr_Format(s_error, "token id %d outside the %u-token vocabulary", id, (unsigned)self->model.cfg.n_vocab);
    return PyBytes_FromStringAndSize((const char *)b, len);
}

static PyObject *Model_detokenize(ModelObject *self, PyObject *arg) {
    if (!model_ready(self)) return NULL;
    PyObject *seq = PySequence_Fast(arg, "detokenize takes a sequence of token ids");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        long id = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (id == -1 && PyErr_Occurred()) goto fail;
        uint32_t len;
        if (id < INT32_MIN || id > INT32_MAX || !pg_tokenizer_token_bytes(&self->model.tok, (int32_t)id, &len)) {
            PyErr_Format(s_error, "token id %ld outside the %u-token vocabulary", id, (unsigned)self->model.cfg.n_vocab);
            goto fail;
        }
        total += len;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out) goto fail;
    char *dst = PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t len;
        const uint8_t *b = pg_tokenizer_token_bytes(&self->model.tok, (int32_t)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i)), &len);
        memcpy(dst, b, len);
        dst += len;
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Model_config(ModelObject *self, PyObject *unused) {
    (void)unused;
    if (!model_ready(self)) return NULL;
    const pg_config *c = &self->model.cfg;
    return Py_BuildValue("{s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:s,s:i,s:I}", "n_vocab", c->n_vocab, "n_ctx", c->n_ctx,
                         "n_embd", c->n_embd, "n_layer", c->n_layer, "n_head", c->n_head, "n_ff", c->n_ff, "eps",
                         (double)c->eps, "eos_id", self->model.tok.eos_id, "bos_id", self->model.tok.bos_id, "kernels",
                         self->model.kern->name, "threads", self->n_threads, "n_merges", self->model.tok.n_merges);
}

// A string-valued metadata key of the file (e.g. tokenizer.chat_template), or None.
static PyObject *Model_meta_string(ModelObject *self, PyObject *args) {
    const char *key;
    if (!model_ready(self) || !PyArg_ParseTuple(args, "s", &key)) return NULL;
    pg_gguf_value v;
    if (!pg_gguf_find(&self->model.gguf, key, &v) || v.type != PG_GGUF_STRING) Py_RETURN_NONE;
    size_t off = v.val_off;
    const uint8_t *str;
    uint32_t len;
    pg_gguf_read_string(&self->model.gguf, &off, &str, &len);
    return PyUnicode_DecodeUTF8((const char *)str, (Py_ssize_t)len, "replace");
}

static PyObject *Model_decode_batch(ModelObject *self, PyObject *args);

static PyMethodDef Model_methods[] = {
    {"decode_batch", (PyCFunction)Model_decode_batch, METH_VARARGS,
     "decode_batch(sessions, tokens): append tokens[i] to sessions[i] in one forward pass (weights read once)"},
    {"tokenize", (PyCFunction)Model_tokenize, METH_VARARGS, "tokenize(utf8_bytes, parse_special=True) -> list of ids"},
    {"token_bytes", (PyCFunction)Model_token_bytes, METH_VARARGS, "token_bytes(id) -> bytes"},
    {"detokenize", (PyCFunction)Model_detokenize, METH_O, "detokenize(ids) -> bytes"},
    {"config", (PyCFunction)Model_config, METH_NOARGS, "the model's configuration as a dict"},
    {"meta_string", (PyCFunction)Model_meta_string, METH_VARARGS, "meta_string(key) -> str, or None when absent"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pocketgpt._engine.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(path, threads=1, kernels=0): a GPT-2 GGUF mapped in place (kernels 0 best, 1 ref, 2 ref-q8)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
};

// ---- Session -------------------------------------------------------------------------------

typedef struct {
    PyObject_HEAD
    ModelObject *model;
    pg_state state;
    void *mem;
    pg_rng rng;
    pg_textout text;
    PyObject *stops;  // keeps the stop strings' bytes alive while text uses them
    int busy;
} SessionObject;

static void Session_dealloc(SessionObject *self) {
    free(self->mem);
    Py_XDECREF(self->stops);
    Py_XDECREF(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Session_init(SessionObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"model", "n_ctx", "n_batch", "kv_type", NULL};
    PyObject *model;
    int n_ctx = 0, n_batch = 32;
    unsigned int kv_type = PG_TYPE_F32;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!|iiI", kwlist, &ModelType, &model, &n_ctx, &n_batch, &kv_type))
        return -1;
    if (self->model) {
        PyErr_SetString(PyExc_RuntimeError, "Session already initialised");
        return -1;
    }
    ModelObject *m = (ModelObject *)model;
    if (!model_ready(m)) return -1;
    if (n_ctx <= 0) n_ctx = (int)m->model.cfg.n_ctx;
    pg_status st;
    size_t need;
    if (pg_state_mem_size_kv(&m->model, n_ctx, n_batch, kv_type, &need, &st)) {
        raise_status(&st, NULL);
        return -1;
    }
    self->mem = malloc(need);
    if (!self->mem) {
        PyErr_NoMemory();
        return -1;
    }
    if (pg_state_init_kv(&self->state, &m->model, n_ctx, n_batch, kv_type, self->mem, need, &st)) {
        raise_status(&st, NULL);
        return -1;
    }
    self->state.par.run = pool_run;
    self->state.par.pool = &m->pool;
    self->state.par.n_threads = m->n_threads;
    Py_INCREF(model);
    self->model = m;
    pg_rng_seed(&self->rng, 0);
    pg_textout_init(&self->text, NULL, NULL, 0, NULL);
    return 0;
}

static int session_enter(SessionObject *self) {
    if (!self->model) {
        PyErr_SetString(PyExc_RuntimeError, "Session is not initialised");
        return 0;
    }
    if (self->busy) {
        PyErr_SetString(s_error, "this session is already computing on another thread; use one session per thread");
        return 0;
    }
    self->busy = 1;
    return 1;
}

// list of ints -> malloc'd int32 array
static int32_t *ids_from_seq(PyObject *obj, Py_ssize_t *n_out) {
    PyObject *seq = PySequence_Fast(obj, "expected a sequence of token ids");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int32_t *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!ids) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if ((v == -1 && PyErr_Occurred()) || v < INT32_MIN || v > INT32_MAX) {
            if (!PyErr_Occurred()) PyErr_SetString(s_error, "token id out of range");
            free(ids);
            Py_DECREF(seq);
            return NULL;
        }
        ids[i] = (int32_t)v;
    }
    Py_DECREF(seq);
    *n_out = n;
    return ids;
}

static PyObject *Session_eval(SessionObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ids", "out", NULL};
    PyObject *ids_obj, *out_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O", kwlist, &ids_obj, &out_obj)) return NULL;
    Py_ssize_t n = 0;
    int32_t *ids = ids_from_seq(ids_obj, &n);
    if (!ids) return NULL;
    Py_buffer out = {0};
    float *all = NULL;
    if (out_obj != Py_None) {
        if (PyObject_GetBuffer(out_obj, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) != 0) {
            free(ids);
            return NULL;
        }
        if ((size_t)out.len != (size_t)n * self->model->model.cfg.n_vocab * sizeof(float)) {
            PyBuffer_Release(&out);
            free(ids);
            return PyErr_Format(s_error, "logits buffer has %zd bytes, need %zu", out.len,
                                (size_t)n * self->model->model.cfg.n_vocab * sizeof(float));
        }
        all = (float *)out.buf;
    }
    if (!session_enter(self)) {
        if (all) PyBuffer_Release(&out);
        free(ids);
        return NULL;
    }
    pg_status st;
    pg_code rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pg_state_eval(&self->state, ids, (int32_t)n, all, &st);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (all) PyBuffer_Release(&out);
    free(ids);
    if (rc) return raise_status(&st, NULL);
    Py_RETURN_NONE;
}

static PyObject *Session_sample(SessionObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"history", "temperature", "top_k", "top_p", "repeat_penalty", "repeat_last_n", "greedy",
                             "need_word", NULL};
    PyObject *hist_obj;
    pg_sampler_params p;
    pg_sampler_defaults(&p);
    int greedy = 0, need_word = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|fiffipi", kwlist, &hist_obj, &p.temperature, &p.top_k, &p.top_p,
                                     &p.repeat_penalty, &p.repeat_last_n, &greedy, &need_word))
        return NULL;
    p.greedy = greedy;
    Py_ssize_t n = 0;
    int32_t *hist = ids_from_seq(hist_obj, &n);
    if (!hist) return NULL;
    if (!session_enter(self)) {
        free(hist);
        return NULL;
    }
    if (self->state.n_past == 0) {
        self->busy = 0;
        free(hist);
        return PyErr_Format(s_error, "nothing evaluated yet: feed the prompt before sampling");
    }
    int32_t tok;
    pg_state *s = &self->state;
    Py_BEGIN_ALLOW_THREADS
    if (need_word > 0) pg_textout_guard(&self->text, &self->model->model.tok, s->logits, need_word);
    tok = pg_sample(s->logits, (int32_t)s->m->cfg.n_vocab, &p, hist, (int32_t)n, &self->rng, s->probs, s->cand);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    free(hist);
    return PyLong_FromLong(tok);
}

// dist(logits, history, ...sampler params) -> (cand int32 bytes, weights float32 bytes, sum): the
// distribution sample() would draw from for this row of logits (a buffer of n_vocab float32, not
// modified): n candidates, most likely first, with unnormalised weights. Speculative decoding.
static PyObject *Session_dist(SessionObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"logits", "history", "temperature", "top_k", "top_p", "repeat_penalty", "repeat_last_n",
                             "greedy", NULL};
    Py_buffer lb = {0};
    PyObject *hist_obj;
    pg_sampler_params p;
    pg_sampler_defaults(&p);
    int greedy = 0;
    if (!self->model) return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*O|fiffip", kwlist, &lb, &hist_obj, &p.temperature, &p.top_k,
                                     &p.top_p, &p.repeat_penalty, &p.repeat_last_n, &greedy))
        return NULL;
    p.greedy = greedy;
    int32_t V = (int32_t)self->model->model.cfg.n_vocab;
    if ((size_t)lb.len != (size_t)V * sizeof(float)) {
        PyBuffer_Release(&lb);
        return PyErr_Format(s_error, "logits buffer has %zd bytes, need %zu", lb.len, (size_t)V * sizeof(float));
    }
    Py_ssize_t n_hist = 0;
    int32_t *hist = ids_from_seq(hist_obj, &n_hist);
    float *work = malloc((size_t)V * 2 * sizeof(float) + (size_t)V * sizeof(int32_t));
    if (!hist || !work) {
        PyBuffer_Release(&lb);
        free(hist);
        free(work);
        return hist ? PyErr_NoMemory() : NULL;
    }
    float *probs = work + V, sum = 0.0f;
    int32_t *cand = (int32_t *)(work + 2 * (size_t)V), n;
    memcpy(work, lb.buf, (size_t)V * sizeof(float));
    PyBuffer_Release(&lb);
    Py_BEGIN_ALLOW_THREADS
    n = pg_sample_dist(work, V, &p, hist, (int32_t)n_hist, probs, cand, &sum);
    Py_END_ALLOW_THREADS
    PyObject *r = Py_BuildValue("(y#y#d)", (const char *)cand, (Py_ssize_t)n * (Py_ssize_t)sizeof(int32_t),
                                (const char *)probs, (Py_ssize_t)n * (Py_ssize_t)sizeof(float), (double)sum);
    free(hist);
    free(work);
    return r;
}

static PyObject *Session_rewind(SessionObject *self, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n) || !session_enter(self)) return NULL;
    pg_status st;
    pg_code rc = pg_state_rewind(&self->state, n, &st);
    self->busy = 0;
    if (rc) return raise_status(&st, NULL);
    Py_RETURN_NONE;
}

static PyObject *Session_seed(SessionObject *self, PyObject *args) {
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "K", &seed)) return NULL;
    pg_rng_seed(&self->rng, (uint64_t)seed);
    Py_RETURN_NONE;
}

static PyObject *Session_reset(SessionObject *self, PyObject *unused) {
    (void)unused;
    if (!session_enter(self)) return NULL;
    pg_state_reset(&self->state);
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *Session_logits(SessionObject *self, PyObject *unused) {
    (void)unused;
    if (!self->model) return NULL;
    return PyBytes_FromStringAndSize((const char *)self->state.logits,
                                     (Py_ssize_t)(self->model->model.cfg.n_vocab * sizeof(float)));
}

static PyObject *Session_text_begin(SessionObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Tuple(arg);
    if (!seq) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    const uint8_t *ptrs[PG_TEXTOUT_MAX_STOPS];
    size_t lens[PG_TEXTOUT_MAX_STOPS];
    if (n > PG_TEXTOUT_MAX_STOPS) {
        Py_DECREF(seq);
        return PyErr_Format(s_error, "%zd stop strings given, at most %d are supported", n, PG_TEXTOUT_MAX_STOPS);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyTuple_GET_ITEM(seq, i);
        if (!PyBytes_Check(b)) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "stop strings must be bytes");
            return NULL;
        }
        ptrs[i] = (const uint8_t *)PyBytes_AS_STRING(b);
        lens[i] = (size_t)PyBytes_GET_SIZE(b);
    }
    pg_status st;
    if (pg_textout_init(&self->text, ptrs, lens, (int)n, &st)) {
        Py_DECREF(seq);
        return raise_status(&st, NULL);
    }
    Py_XSETREF(self->stops, seq);
    Py_RETURN_NONE;
}

static PyObject *Session_text_push(SessionObject *self, PyObject *args) {
    int id;
    if (!self->model || !PyArg_ParseTuple(args, "i", &id)) return NULL;
    uint32_t len;
    const uint8_t *b = pg_tokenizer_token_bytes(&self->model->model.tok, id, &len);
    if (!b) return PyErr_Format(s_error, "token id %d outside the vocabulary", id);
    uint8_t *out = malloc(3 * (size_t)len + PG_TEXTOUT_HOLD + 8);
    if (!out) return PyErr_NoMemory();
    size_t n_out = 0;
    int stopped = pg_textout_push(&self->text, b, len, out, &n_out);
    PyObject *r = Py_BuildValue("(y#O)", (const char *)out, (Py_ssize_t)n_out, stopped ? Py_True : Py_False);
    free(out);
    return r;
}

static PyObject *Session_text_flush(SessionObject *self, PyObject *unused) {
    (void)unused;
    uint8_t out[PG_TEXTOUT_HOLD + 8];
    size_t n_out = 0;
    pg_textout_flush(&self->text, out, &n_out);
    return PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)n_out);
}

// words (runs of letters and numbers) in the text pushed since text_begin: what need_word counts
static PyObject *Session_text_words(SessionObject *self, PyObject *unused) {
    (void)unused;
    return PyLong_FromLong(self->text.n_words);
}

static PyObject *Session_get_n_past(SessionObject *self, void *c) {
    (void)c;
    return PyLong_FromLong(self->state.n_past);
}

static PyObject *Session_get_mem_bytes(SessionObject *self, void *c) {
    (void)c;
    size_t need = 0;
    if (!self->model) return PyLong_FromLong(0);
    pg_state_mem_size_kv(&self->model->model, self->state.n_ctx, self->state.n_batch, self->state.kv_type, &need, NULL);
    return PyLong_FromSize_t(need);
}

static PyObject *Session_get_n_ctx(SessionObject *self, void *c) {
    (void)c;
    return PyLong_FromLong(self->state.n_ctx);
}

static PyGetSetDef Session_getset[] = {
    {"n_past", (getter)Session_get_n_past, NULL, "positions in the KV cache", NULL},
    {"n_ctx", (getter)Session_get_n_ctx, NULL, "positions this session holds", NULL},
    {"mem_bytes", (getter)Session_get_mem_bytes, NULL, "bytes of memory this session holds (KV cache included)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Session_methods[] = {
    {"eval", (PyCFunction)(void (*)(void))Session_eval, METH_VARARGS | METH_KEYWORDS,
     "eval(ids, out=None): append tokens to the KV cache; out (len(ids) * n_vocab float32) gets every position's logits"},
    {"sample", (PyCFunction)(void (*)(void))Session_sample, METH_VARARGS | METH_KEYWORDS,
     "sample(history, temperature, top_k, top_p, repeat_penalty, repeat_last_n, greedy, need_word) -> token id\n"
     "need_word: until the text pushed since text_begin holds that many words, end-of-text and tokens that "
     "could begin a stop string are not sampled"},
    {"dist", (PyCFunction)(void (*)(void))Session_dist, METH_VARARGS | METH_KEYWORDS,
     "dist(logits, history, temperature, ...) -> (cand int32 bytes, weights float32 bytes, sum): sample()'s distribution"},
    {"rewind", (PyCFunction)Session_rewind, METH_VARARGS, "rewind(n_past): forget the positions from n_past on"},
    {"seed", (PyCFunction)Session_seed, METH_VARARGS, "seed(uint64): reseed the sampler"},
    {"reset", (PyCFunction)Session_reset, METH_NOARGS, "forget the KV cache"},
    {"last_logits", (PyCFunction)Session_logits, METH_NOARGS, "last position's logits as float32 bytes"},
    {"text_begin", (PyCFunction)Session_text_begin, METH_O, "text_begin(stops: sequence of bytes)"},
    {"text_push", (PyCFunction)Session_text_push, METH_VARARGS, "text_push(token) -> (utf8 bytes released, stopped)"},
    {"text_flush", (PyCFunction)Session_text_flush, METH_NOARGS, "end of stream -> remaining utf8 bytes"},
    {"text_words", (PyCFunction)Session_text_words, METH_NOARGS, "words in the text pushed since text_begin"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pocketgpt._engine.Session",
    .tp_basicsize = sizeof(SessionObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Session(model, n_ctx=0, n_batch=32, kv_type=0): a KV cache (F32 0, F16 1, Q8_0 8) and activations",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
    .tp_getset = Session_getset,
};

// Model.decode_batch(sessions, tokens): one forward pass appending tokens[i] to sessions[i]
// (each at its own position, each its own KV cache), weights streamed once for all of them; the
// GIL is released while it runs. Each session's logits are then ready for sample()/last_logits().
static PyObject *Model_decode_batch(ModelObject *self, PyObject *args) {
    PyObject *sess_obj, *tok_obj;
    if (!model_ready(self) || !PyArg_ParseTuple(args, "OO", &sess_obj, &tok_obj)) return NULL;
    PyObject *seq = PySequence_Fast(sess_obj, "decode_batch takes a sequence of sessions");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), n_tok = 0;
    int32_t *toks = ids_from_seq(tok_obj, &n_tok);
    if (!toks) {
        Py_DECREF(seq);
        return NULL;
    }
    pg_state **states = malloc((size_t)(n > 0 ? n : 1) * sizeof(pg_state *));
    PyObject *res = NULL;
    Py_ssize_t entered = 0;
    if (!states) {
        PyErr_NoMemory();
        goto done;
    }
    if (n != n_tok) {
        PyErr_Format(s_error, "decode_batch: %zd sessions but %zd tokens", n, n_tok);
        goto done;
    }
    if (n == 0) {
        res = Py_None;
        Py_INCREF(res);
        goto done;
    }
    if (n > 4096) {
        PyErr_Format(s_error, "decode_batch: %zd sessions, at most 4096 per call", n);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyObject_TypeCheck(o, &SessionType) || ((SessionObject *)o)->model != self) {
            PyErr_Format(s_error, "decode_batch: item %zd is not a session of this model", i);
            goto done;
        }
        states[i] = &((SessionObject *)o)->state;
        for (Py_ssize_t k = 0; k < i; k++)
            if (states[k] == states[i]) {
                PyErr_Format(s_error, "decode_batch: session %zd appears twice in one batch", i);
                goto done;
            }
    }
    for (; entered < n; entered++)
        if (!session_enter((SessionObject *)PySequence_Fast_GET_ITEM(seq, entered))) goto done;
    pg_status st;
    pg_code rc = PG_OK;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&self->batch_mu);
    if (self->batch_cap < (int32_t)n) {  // grow the workspace (rare: to the largest batch seen)
        int32_t cap = (int32_t)n < 4 ? 4 : (int32_t)n;
        size_t need = 0;
        rc = pg_batch_mem_size(&self->model, cap, &need, &st);
        void *mem = rc ? NULL : malloc(need);
        if (!rc && !mem) rc = pg_fail(&st, PG_ERR_MEMORY, "out of memory for a batch of %d sessions", (int)cap);
        pg_batch fresh;
        if (!rc) rc = pg_batch_init(&fresh, &self->model, cap, mem, need, &st);
        if (!rc) {  // the old workspace stays in use when the new one cannot be had
            free(self->batch_mem);
            self->batch = fresh;
            self->batch_mem = mem;
            self->batch_cap = cap;
            self->batch.par.run = pool_run;
            self->batch.par.pool = &self->pool;
            self->batch.par.n_threads = self->n_threads;
        } else {
            free(mem);
        }
    }
    if (!rc) rc = pg_batch_decode(&self->batch, states, toks, (int32_t)n, &st);
    pthread_mutex_unlock(&self->batch_mu);
    Py_END_ALLOW_THREADS
    if (rc) {
        raise_status(&st, NULL);
        goto done;
    }
    res = Py_None;
    Py_INCREF(res);
done:
    for (Py_ssize_t i = 0; i < entered; i++) ((SessionObject *)PySequence_Fast_GET_ITEM(seq, i))->busy = 0;
    free(states);
    free(toks);
    Py_DECREF(seq);
    return res;
}

// ---- module functions ----------------------------------------------------------------------

// dequantize(type, raw, n) -> n float32 as bytes, with the engine's reference kernels (for tests).
static PyObject *engine_dequantize(PyObject *mod, PyObject *args) {
    (void)mod;
    unsigned int type;
    Py_buffer raw;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "Iy*n", &type, &raw, &n)) return NULL;
    uint32_t blk = pg_type_block(type);
    if (!pg_type_supported(type) || blk == 0 || n <= 0 || n % blk != 0 ||
        (size_t)raw.len != (size_t)n / blk * pg_type_block_bytes(type)) {
        PyBuffer_Release(&raw);
        return PyErr_Format(s_error, "dequantize: bad type %u or size (%zd weights, %zd bytes)", type, n, raw.len);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(float));
    if (out) {
        void *src = malloc((size_t)raw.len);  // aligned copy
        if (!src) {
            Py_DECREF(out);
            PyBuffer_Release(&raw);
            return PyErr_NoMemory();
        }
        memcpy(src, raw.buf, (size_t)raw.len);
        pg_dequant_row(type, src, (float *)PyBytes_AS_STRING(out), (int)n);
        free(src);
    }
    PyBuffer_Release(&raw);
    return out;
}

// dot(type, raw, x_bytes, force_ref) -> float: one row through the selected kernel set.
static PyObject *engine_dot(PyObject *mod, PyObject *args) {
    (void)mod;
    unsigned int type;
    Py_buffer raw, x;
    int mode = 0;
    if (!PyArg_ParseTuple(args, "Iy*y*|i", &type, &raw, &x, &mode)) return NULL;
    Py_ssize_t n = x.len / (Py_ssize_t)sizeof(float);
    uint32_t blk = pg_type_block(type);
    PyObject *res = NULL;
    if (!pg_type_supported(type) || blk == 0 || n <= 0 || n % blk != 0 ||
        (size_t)raw.len != (size_t)n / blk * pg_type_block_bytes(type)) {
        PyErr_Format(s_error, "dot: bad type %u or size", type);
    } else {
        void *w = malloc((size_t)raw.len);
        float *xv = malloc((size_t)x.len);
        if (w && xv) {
            memcpy(w, raw.buf, (size_t)raw.len);
            memcpy(xv, x.buf, (size_t)x.len);
            pg_kernels k;
            pg_kernels_select(&k, mode);
            float r = k.type[type].dot(w, xv, (int)n);
            res = PyFloat_FromDouble((double)r);
        } else {
            PyErr_NoMemory();
        }
        free(w);
        free(xv);
    }
    PyBuffer_Release(&raw);
    PyBuffer_Release(&x);
    return res;
}

// dot_q8(type, raw, x_bytes, mode) -> float or None: x quantized to int8 per 32 values as the
// engine does, then the selected set's integer-activation dot (None when it has none for type).
static PyObject *engine_dot_q8(PyObject *mod, PyObject *args) {
    (void)mod;
    unsigned int type;
    Py_buffer raw, x;
    int mode = 0;
    if (!PyArg_ParseTuple(args, "Iy*y*|i", &type, &raw, &x, &mode)) return NULL;
    Py_ssize_t n = x.len / (Py_ssize_t)sizeof(float);
    uint32_t blk = pg_type_block(type);
    PyObject *res = NULL;
    pg_kernels k;
    pg_kernels_select(&k, mode);
    if (!pg_type_supported(type) || blk == 0 || n <= 0 || n % blk != 0 || n % 32 != 0 ||
        (size_t)raw.len != (size_t)n / blk * pg_type_block_bytes(type)) {
        PyErr_Format(s_error, "dot_q8: bad type %u or size", type);
    } else if (!k.type[type].dot_q8) {
        res = Py_None;
        Py_INCREF(res);
    } else {
        void *w = malloc((size_t)raw.len);
        float *xv = malloc((size_t)x.len), *xd = malloc((size_t)n / 32 * sizeof(float) * 3);
        int8_t *xq = malloc((size_t)n + 64);
        if (w && xv && xd && xq) {
            memcpy(w, raw.buf, (size_t)raw.len);
            memcpy(xv, x.buf, (size_t)x.len);
            int8_t *xa = (int8_t *)(((uintptr_t)xq + 63) & ~(uintptr_t)63);
            pg_quantize_act(xv, xa, xd, xd + n / 32, (int)n);
            res = PyFloat_FromDouble((double)k.type[type].dot_q8(w, xa, xd, xd + n / 32, (int)n));
        } else {
            PyErr_NoMemory();
        }
        free(w);
        free(xv);
        free(xd);
        free(xq);
    }
    PyBuffer_Release(&raw);
    PyBuffer_Release(&x);
    return res;
}

// check_blob(bytes) -> None or raises PocketError: validate and load a model from memory (fuzzing).
static PyObject *engine_check_blob(PyObject *mod, PyObject *args) {
    (void)mod;
    Py_buffer b;
    if (!PyArg_ParseTuple(args, "y*", &b)) return NULL;
    void *blob = malloc(b.len ? (size_t)b.len : 1);
    if (!blob) {
        PyBuffer_Release(&b);
        return PyErr_NoMemory();
    }
    memcpy(blob, b.buf, (size_t)b.len);
    size_t size = (size_t)b.len;
    PyBuffer_Release(&b);
    pg_status st;
    pg_code rc;
    size_t need = 0;
    void *mem = NULL;
    pg_model model;
    Py_BEGIN_ALLOW_THREADS
    rc = pg_model_mem_size(blob, size, &need, &st);
    if (!rc) {
        mem = malloc(need ? need : 1);
        rc = mem ? pg_model_init(&model, blob, size, mem, need ? need : 1, 0, &st)
                 : pg_fail(&st, PG_ERR_MEMORY, "out of memory");
    }
    Py_END_ALLOW_THREADS
    free(mem);
    free(blob);
    if (rc) return raise_status(&st, NULL);
    Py_RETURN_NONE;
}

static PyMethodDef engine_functions[] = {
    {"dequantize", engine_dequantize, METH_VARARGS, "dequantize(type, raw, n) -> float32 bytes (reference kernels)"},
    {"dot", engine_dot, METH_VARARGS, "dot(type, raw, x, mode=0) -> float (mode: 0 best, 1 ref, 2 ref-q8, 3 no AVX-512, 4 float)"},
    {"dot_q8", engine_dot_q8, METH_VARARGS, "dot_q8(type, raw, x, mode=0) -> float or None (int8 activations)"},
    {"check_blob", engine_check_blob, METH_VARARGS, "check_blob(gguf_bytes): load a model from memory or raise"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef engine_module = {
    PyModuleDef_HEAD_INIT, "_engine", "pocketgpt's C engine (firmware/engine) for the host", -1, engine_functions,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__engine(void) {
    PyObject *errors = PyImport_ImportModule("pocketgpt.errors");
    if (!errors) return NULL;
    s_error = PyObject_GetAttrString(errors, "PocketError");
    Py_DECREF(errors);
    if (!s_error) return NULL;
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&SessionType) < 0) return NULL;
    PyObject *m = PyModule_Create(&engine_module);
    if (!m) return NULL;
    Py_INCREF(&ModelType);
    Py_INCREF(&SessionType);
    PyModule_AddObject(m, "Model", (PyObject *)&ModelType);
    PyModule_AddObject(m, "Session", (PyObject *)&SessionType);
    PyModule_AddIntConstant(m, "TEXTOUT_MAX_STOPS", PG_TEXTOUT_MAX_STOPS);
    PyModule_AddIntConstant(m, "TEXTOUT_MAX_STOP_LEN", PG_TEXTOUT_MAX_STOP_LEN);
    return m;
}
