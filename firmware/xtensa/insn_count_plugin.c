// pocketgpt: a QEMU TCG plugin (QEMU 7.2 plugin API v1) that counts executed guest instructions per
// address range. Ranges come from a file of "START END NAME" lines (hex addresses, END exclusive),
// written by tools/xtensa_check.py from the ELF's function symbols; instructions outside every
// range count under "(other)". At exit it writes "COUNT NAME" lines to the out file.
//   qemu-system-xtensa ... -plugin insn_count_plugin.so,ranges=R.txt,out=C.txt
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    uint64_t start, end;
    char name[96];
} range;

static range *s_ranges;
static uint64_t *s_counts;  // one per range, plus "(other)" at index n
static size_t s_n;
static char s_out[512];

static size_t find(uint64_t pc) {
    size_t lo = 0, hi = s_n;  // ranges sorted by start, not overlapping
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (pc < s_ranges[mid].start) hi = mid;
        else if (pc >= s_ranges[mid].end) lo = mid + 1;
        else return mid;
    }
    return s_n;
}

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t k = find(qemu_plugin_insn_vaddr(insn));
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &s_counts[k], 1);
    }
}

static void on_quit(qemu_plugin_id_t id, void *p) {
    (void)id, (void)p;
    FILE *f = fopen(s_out, "w");
    if (!f) return;
    for (size_t i = 0; i < s_n; i++)
        if (s_counts[i]) fprintf(f, "%" PRIu64 " %s\n", s_counts[i], s_ranges[i].name);
    fprintf(f, "%" PRIu64 " (other)\n", s_counts[s_n]);
    fclose(f);
}

static int by_start(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    (void)info;
    const char *ranges = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "ranges=", 7)) ranges = argv[i] + 7;
        else if (!strncmp(argv[i], "out=", 4)) snprintf(s_out, sizeof s_out, "%s", argv[i] + 4);
    }
    if (!ranges || !s_out[0]) {
        fprintf(stderr, "insn_count_plugin: give ranges=FILE and out=FILE\n");
        return -1;
    }
    FILE *f = fopen(ranges, "r");
    if (!f) {
        fprintf(stderr, "insn_count_plugin: cannot read %s\n", ranges);
        return -1;
    }
    size_t cap = 256;
    s_ranges = malloc(cap * sizeof *s_ranges);
    range r;
    while (s_ranges && fscanf(f, "%" SCNx64 " %" SCNx64 " %95s", &r.start, &r.end, r.name) == 3) {
        if (s_n == cap) s_ranges = realloc(s_ranges, (cap *= 2) * sizeof *s_ranges);
        if (s_ranges) s_ranges[s_n++] = r;
    }
    fclose(f);
    s_counts = calloc(s_n + 1, sizeof *s_counts);
    if (!s_ranges || !s_counts) return -1;
    qsort(s_ranges, s_n, sizeof *s_ranges, by_start);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_atexit_cb(id, on_quit, NULL);
    return 0;
}
