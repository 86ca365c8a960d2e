// Resident memory of the engine without Python: the model file mapped (weights read in place),
// one session with a Q8_0 KV cache for n_ctx positions, filled by evaluating n_ctx tokens. Prints
// one JSON line: the process's VmRSS and VmHWM after the fill, the file size, and the engine's own
// allocations (model tables, session state). bench/speed.py builds and runs it; by hand:
//
//   cc -O2 -std=c11 -D_GNU_SOURCE -Ifirmware/engine -o /tmp/bench_memory firmware/engine/tests/bench_memory.c
//      firmware/engine/{pg_common,gguf,kernels_ref,kernels_x86,tokenizer,sampler,gpt2}.c -lm
//   /tmp/bench_memory model.gguf [n_ctx (1024)]
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gpt2.h"

// VmRSS or VmHWM of this process in KiB (-1 when /proc is missing)
static long status_kib(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') v = strtol(line + n + 1, NULL, 10);
    fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [N_CTX]\n", argv[0]);
        return 2;
    }
    int32_t n_ctx = argc > 2 ? (int32_t)atoi(argv[2]) : 1024;
    int fd = open(argv[1], O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        fprintf(stderr, "%s: cannot open\n", argv[1]);
        return 2;
    }
    const void *blob = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (blob == MAP_FAILED) {
        fprintf(stderr, "%s: cannot map\n", argv[1]);
        return 2;
    }
    long rss_start = status_kib("VmRSS");
    pg_status st;
    size_t model_bytes, state_bytes;
    pg_model m;
    if (pg_model_mem_size(blob, (size_t)sb.st_size, &model_bytes, &st) != PG_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], st.msg);
        return 1;
    }
    void *model_mem = malloc(model_bytes);
    if (!model_mem || pg_model_init(&m, blob, (size_t)sb.st_size, model_mem, model_bytes, PG_KERNELS_BEST, &st) != PG_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], model_mem ? st.msg : "out of memory");
        return 1;
    }
    // as the Python extension does: the header's pages (vocabulary, merges) are in the tokenizer
    // tables now; give them back (a private, never-written mapping re-reads the file if touched)
    size_t page = (size_t)sysconf(_SC_PAGESIZE), head = page ? m.gguf.data_off / page * page : 0;
    if (head) madvise((void *)blob, head, MADV_DONTNEED);
    if ((uint32_t)n_ctx > m.cfg.n_ctx) n_ctx = (int32_t)m.cfg.n_ctx;
    pg_state s;
    if (pg_state_mem_size_kv(&m, n_ctx, 32, PG_TYPE_Q8_0, &state_bytes, &st) != PG_OK) {
        fprintf(stderr, "%s\n", st.msg);
        return 1;
    }
    void *state_mem = malloc(state_bytes);
    if (!state_mem || pg_state_init_kv(&s, &m, n_ctx, 32, PG_TYPE_Q8_0, state_mem, state_bytes, &st) != PG_OK) {
        fprintf(stderr, "%s\n", state_mem ? st.msg : "out of memory");
        return 1;
    }
    int32_t *ids = malloc((size_t)n_ctx * sizeof(int32_t));
    uint32_t r = 3;
    for (int32_t i = 0; i < n_ctx; i++) {  // pseudo-random ids below the last (special) token
        r = r * 1664525u + 1013904223u;
        ids[i] = (int32_t)((r >> 8) % (m.cfg.n_vocab - 1));
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (pg_state_eval(&s, ids, n_ctx, NULL, &st) != PG_OK) {
        fprintf(stderr, "%s\n", st.msg);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("{\"rss_mib\": %.1f, \"hwm_mib\": %.1f, \"rss_before_model_mib\": %.1f, \"file_mib\": %.1f, "
           "\"model_mem_bytes\": %zu, \"state_bytes\": %zu, \"n_ctx\": %d, \"kernels\": \"%s\", \"fill_tok_s\": %.1f}\n",
           (double)status_kib("VmRSS") / 1024.0, (double)status_kib("VmHWM") / 1024.0, (double)rss_start / 1024.0,
           (double)sb.st_size / 1048576.0, model_bytes, state_bytes, (int)n_ctx, m.kern->name, (double)n_ctx / secs);
    free(ids);
    free(state_mem);
    free(model_mem);
    munmap((void *)blob, (size_t)sb.st_size);
    return 0;
}
