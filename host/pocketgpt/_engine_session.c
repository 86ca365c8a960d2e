// pocketgpt._engine's Session type: one KV cache and its activations, the sampler and the stop-string
// text assembly (eval, sample, dist, text_*), and Model.decode_batch, which steps many sessions
// in one forward pass. The Python-facing API lives in pocketgpt/engine.py.
#include "_engine.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    ModelObject *model;
    pg_state state;
    void *mem;
    pg_rng rng;
    pg_textout text;
    pg_topic topic;   // subject steering of a chat reply (inactive unless topic_begin gave a subject)
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
    pg_topic_steer(&self->topic, &self->text, &self->model->model.tok, s->logits);
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
    memset(&self->topic, 0, sizeof self->topic);  // a new text stream: no steering until topic_begin
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
    pg_topic_push(&self->topic, &self->model->model.tok, id);
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

// topic_begin(subject: str, bias, slope, cap): steer the reply pushed from now on towards the
// subject (pg_topic_steer in sample(), pg_topic_push in text_push); "" turns steering off
static PyObject *Session_topic_begin(SessionObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"subject", "bias", "slope", "cap", NULL};
    const char *subj;
    Py_ssize_t n;
    float bias = PG_TOPIC_BIAS, slope = PG_TOPIC_SLOPE;
    int cap = PG_TOPIC_CAP;
    if (!self->model || !PyArg_ParseTupleAndKeywords(args, kw, "s#|ffi", kwlist, &subj, &n, &bias, &slope, &cap))
        return NULL;
    pg_status st;
    if (pg_topic_init(&self->topic, &self->model->model.tok, subj, (size_t)n, bias, slope, cap, &st))
        return raise_status(&st, NULL);
    return PyBool_FromLong(self->topic.active);
}

// (steering, said): whether steering acts on the next token, whether the reply named the subject
static PyObject *Session_topic_state(SessionObject *self, PyObject *unused) {
    (void)unused;
    return Py_BuildValue("(OO)", pg_topic_steering(&self->topic) ? Py_True : Py_False,
                         self->topic.said ? Py_True : Py_False);
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
    {"topic_begin", (PyCFunction)(void (*)(void))Session_topic_begin, METH_VARARGS | METH_KEYWORDS,
     "topic_begin(subject, bias=2.0, slope=0.5, cap=48) -> bool: steer the reply towards subject (after text_begin)"},
    {"topic_state", (PyCFunction)Session_topic_state, METH_NOARGS, "(steering, said) of the subject steering"},
    {"text_words", (PyCFunction)Session_text_words, METH_NOARGS, "words in the text pushed since text_begin"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject SessionType = {
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
PyObject *Model_decode_batch(ModelObject *self, PyObject *args) {
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
