// pocketgpt._engine: the C engine (firmware/engine) as a CPython extension, host only.
//
// Plain CPython C API. The model file is mmapped read-only (tensors are used in place); a
// persistent pthread pool per model serves the engine's parallel-for; the GIL is released while
// the engine computes. The Python-facing API lives in pocketgpt/engine.py.
//
// The binding is three files by job (_engine.h lists them): this one the module, the Model type
// and the kernel probes the tests use; _engine_session.c the Session type and batched decode;
// _engine_pool.c the worker pool.
#include "_engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

PyObject *s_error;  // pocketgpt.errors.PocketError

// ---- Model ---------------------------------------------------------------------------------

PyObject *raise_status(const pg_status *st, const char *path) {
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

int model_ready(ModelObject *self) {
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

PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pocketgpt._engine.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(path, threads=1, kernels=0): a GPT-2 GGUF mapped in place (kernels 0 best, 1 ref, 2 ref-q8)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
};

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

// dot and dot_q8's arguments (type, raw, x_bytes[, mode]), checked (whole blocks of type, raw the
// size of x's values in that type; whole groups of group values) and copied out of Python's buffers
// into malloc'd ones (the kernels read aligned rows), and the kernel set mode selects. 0 with a
// Python error set on failure; else dot_args_done frees the copies.
typedef struct {
    unsigned int type;
    int mode, n;
    void *w;
    float *x;
    pg_kernels k;
} dot_args;

static int dot_args_take(PyObject *args, const char *name, int group, dot_args *d) {
    Py_buffer raw, x;
    d->mode = 0;
    d->w = NULL;
    d->x = NULL;
    if (!PyArg_ParseTuple(args, "Iy*y*|i", &d->type, &raw, &x, &d->mode)) return 0;
    Py_ssize_t n = x.len / (Py_ssize_t)sizeof(float);
    uint32_t blk = pg_type_block(d->type);
    int ok = 0;
    if (!pg_type_supported(d->type) || blk == 0 || n <= 0 || n % blk != 0 || n % group != 0 ||
        (size_t)raw.len != (size_t)n / blk * pg_type_block_bytes(d->type)) {
        PyErr_Format(s_error, "%s: bad type %u or size", name, d->type);
    } else if (!(d->w = malloc((size_t)raw.len)) || !(d->x = malloc((size_t)x.len))) {
        PyErr_NoMemory();
    } else {
        memcpy(d->w, raw.buf, (size_t)raw.len);
        memcpy(d->x, x.buf, (size_t)x.len);
        d->n = (int)n;
        pg_kernels_select(&d->k, d->mode);
        ok = 1;
    }
    PyBuffer_Release(&raw);
    PyBuffer_Release(&x);
    if (!ok) {
        free(d->w);
        free(d->x);
    }
    return ok;
}

static PyObject *dot_args_done(dot_args *d, PyObject *res) {
    free(d->w);
    free(d->x);
    return res;
}

// dot(type, raw, x_bytes, force_ref) -> float: one row through the selected kernel set.
static PyObject *engine_dot(PyObject *mod, PyObject *args) {
    (void)mod;
    dot_args d;
    if (!dot_args_take(args, "dot", 1, &d)) return NULL;
    return dot_args_done(&d, PyFloat_FromDouble((double)d.k.type[d.type].dot(d.w, d.x, d.n)));
}

// dot_q8(type, raw, x_bytes, mode) -> float or None: x quantized to int8 per 32 values as the
// engine does, then the selected set's integer-activation dot (None when it has none for type).
static PyObject *engine_dot_q8(PyObject *mod, PyObject *args) {
    (void)mod;
    dot_args d;
    if (!dot_args_take(args, "dot_q8", 32, &d)) return NULL;
    PyObject *res = NULL;
    if (!d.k.type[d.type].dot_q8) {
        res = Py_None;
        Py_INCREF(res);
    } else {
        int n = d.n;
        float *xd = malloc((size_t)n / 32 * sizeof(float) * 3);
        int8_t *xq = malloc((size_t)n + 64);
        if (xd && xq) {
            int8_t *xa = (int8_t *)(((uintptr_t)xq + 63) & ~(uintptr_t)63);
            pg_quantize_act(d.x, xa, xd, xd + n / 32, n);
            res = PyFloat_FromDouble((double)d.k.type[d.type].dot_q8(d.w, xa, xd, xd + n / 32, n));
        } else {
            PyErr_NoMemory();
        }
        free(xd);
        free(xq);
    }
    return dot_args_done(&d, res);
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
