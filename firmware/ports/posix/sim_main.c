// pocketgpt device simulator: the firmware's portable app (firmware/app) with a POSIX port.
//
// Console on stdin/stdout, the relay over plain TCP (ws:// only: no TLS here), settings in a
// "key=value" file, the model memory-mapped from a GGUF file (the chip maps its flash partition
// the same way). Usage:
//   pocketgpt-sim --model M.gguf [--settings FILE] [--relay WS_URL --token T | --ota URL]
//                 [--device-id MAC] [--ctx N] [--set KEY=VALUE]...
//                 [--mic FILE.wav|FOLDER] [--speaker OUT.wav] [--listen-mode manual|auto|realtime]
//                 [--barge-in MS]
// Voice: /talk on the console is one push-to-talk press, held while the next microphone WAV lasts
// (sim_audio.h); --barge-in MS presses again MS after the release, over the reply.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "pg_app.h"
#include "sim_audio.h"

typedef struct {
    sim_audio au;  // first: the audio port's callbacks read pg_port.ctx as a sim_audio
    const char *settings_path;
    uint64_t rng;
} sim;

static void sim_out(void *ctx, const char *s, size_t n) {
    (void)ctx;
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

static uint32_t sim_random(void *ctx) {
    sim *S = ctx;
    S->rng ^= S->rng << 13;
    S->rng ^= S->rng >> 7;
    S->rng ^= S->rng << 17;
    return (uint32_t)(S->rng >> 16);
}

static void *sim_alloc(void *ctx, size_t n, pg_mem_kind kind) {
    (void)ctx;
    (void)kind;
    void *p = NULL;
    return posix_memalign(&p, 64, n) == 0 ? p : NULL;
}

static int tcp_send(void *ctx, const uint8_t *buf, size_t n) {
    int fd = (int)(intptr_t)ctx;
    while (n) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static int tcp_recv(void *ctx, uint8_t *buf, size_t cap, int timeout_ms) {
    int fd = (int)(intptr_t)ctx;
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r == 0) return 0;
    if (r < 0) return -1;
    ssize_t k = recv(fd, buf, cap, 0);
    return k > 0 ? (int)k : -1;
}

static int sim_net_open(void *ctx, const char *host, int port, int tls, int timeout_ms, pg_transport *t, char *err,
                        size_t err_cap) {
    (void)ctx;
    if (tls) {
        snprintf(err, err_cap, "the simulator speaks plain ws:// and http:// only (no TLS); use the relay's plain port");
        return -1;
    }
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, ps, &hints, &res);
    if (gai) {
        snprintf(err, err_cap, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            struct pollfd p = {fd, POLLOUT, 0};
            int so = 0;
            socklen_t sl = sizeof so;
            rc = poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0 ? 0 : -1;
        }
        if (rc == 0) {
            fcntl(fd, F_SETFL, fl);
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, err_cap, "cannot connect to %s:%d", host, port);
        return -1;
    }
    t->ctx = (void *)(intptr_t)fd;
    t->send = tcp_send;
    t->recv = tcp_recv;
    return 0;
}

static void sim_net_close(void *ctx, pg_transport *t) {
    (void)ctx;
    close((int)(intptr_t)t->ctx);
}

static int sim_save(void *ctx, const pg_settings *s, char *err, size_t err_cap) {
    sim *S = ctx;
    if (!S->settings_path) return 0;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", S->settings_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, err_cap, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    for (int i = 0; pg_settings_key(i); i++) {
        char v[300];
        pg_settings_get(s, pg_settings_key(i), 1, v, sizeof v);
        fprintf(f, "%s=%s\n", pg_settings_key(i), v);
    }
    int bad = fclose(f) != 0;
    if (bad || rename(tmp, S->settings_path)) {
        snprintf(err, err_cap, "cannot write %s", S->settings_path);
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int load_settings(const char *path, pg_settings *s) {
    FILE *f = fopen(path, "r");
    if (!f) return errno == ENOENT ? 0 : -1;
    char line[600];
    int lineno = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0] || line[0] == '#') continue;
        char *eq = strchr(line, '=');
        char err[PG_SETTINGS_ERR];
        if (!eq) {
            fprintf(stderr, "pocketgpt device: error: %s line %d: expected KEY=VALUE; fix or delete the file\n", path, lineno);
            bad = 1;
            break;
        }
        *eq = 0;
        if (pg_settings_set(s, line, eq + 1, err, sizeof err)) {
            fprintf(stderr, "pocketgpt device: error: %s line %d: %s; fix or delete the file\n", path, lineno, err);
            bad = 1;
            break;
        }
    }
    fclose(f);
    return bad ? -2 : 0;
}

static int usage(void) {
    fprintf(stderr, "usage: pocketgpt-sim --model M.gguf [--settings FILE] [--relay WS_URL] [--token T] [--ota URL]\n"
                    "                     [--device-id MAC] [--ctx N] [--set KEY=VALUE]...\n"
                    "                     [--mic FILE.wav|FOLDER] [--speaker OUT.wav] [--listen-mode manual|auto|realtime]\n"
                    "                     [--barge-in MS]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *model_path = NULL;
    int32_t n_ctx = 256;
    static sim S;
    const char *mic = NULL, *speaker = NULL;
    pg_listen_mode listen_mode = PG_LISTEN_MANUAL;
    int barge_ms = 0;
    pg_settings set;
    pg_settings_defaults(&set);
    // the settings file first, then the command line on top (not saved unless /set is used)
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--settings") == 0) S.settings_path = argv[i + 1];
    if (S.settings_path) {
        int rc = load_settings(S.settings_path, &set);
        if (rc == -1) {
            fprintf(stderr, "pocketgpt device: error: cannot read %s: %s\n", S.settings_path, strerror(errno));
            return 2;
        }
        if (rc) return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char err[PG_SETTINGS_ERR];
        const char *key = NULL;
        char kv[600];
        if (strcmp(a, "--settings") == 0 && v) { i++; continue; }
        if (strcmp(a, "--model") == 0 && v) { model_path = v; i++; continue; }
        if (strcmp(a, "--ctx") == 0 && v) { n_ctx = (int32_t)atoi(v); i++; continue; }
        if (strcmp(a, "--mic") == 0 && v) { mic = v; i++; continue; }
        if (strcmp(a, "--speaker") == 0 && v) { speaker = v; i++; continue; }
        if (strcmp(a, "--barge-in") == 0 && v) {
            char *end;
            long ms = strtol(v, &end, 10);
            if (*end || ms < 1 || ms > 600000) {
                fprintf(stderr, "pocketgpt device: error: --barge-in %s: give milliseconds, 1..600000\n", v);
                return 2;
            }
            barge_ms = (int)ms;
            i++;
            continue;
        }
        if (strcmp(a, "--listen-mode") == 0 && v) {
            if (pg_listen_mode_parse(v, &listen_mode)) {
                fprintf(stderr, "pocketgpt device: error: --listen-mode %s: use manual, auto or realtime\n", v);
                return 2;
            }
            i++;
            continue;
        }
        if (strcmp(a, "--relay") == 0) key = "relay.url";
        else if (strcmp(a, "--token") == 0) key = "relay.token";
        else if (strcmp(a, "--ota") == 0) key = "relay.ota";
        else if (strcmp(a, "--device-id") == 0) key = "device.id";
        if (key && v) {
            if (pg_settings_set(&set, key, v, err, sizeof err)) {
                fprintf(stderr, "pocketgpt device: error: %s %s: %s\n", a, v, err);
                return 2;
            }
            i++;
            continue;
        }
        if (strcmp(a, "--set") == 0 && v) {
            snprintf(kv, sizeof kv, "%s", v);
            char *eq = strchr(kv, '=');
            if (!eq) {
                fprintf(stderr, "pocketgpt device: error: --set %s: expected KEY=VALUE\n", v);
                return 2;
            }
            *eq = 0;
            if (pg_settings_set(&set, kv, eq + 1, err, sizeof err)) {
                fprintf(stderr, "pocketgpt device: error: --set %s: %s\n", v, err);
                return 2;
            }
            i++;
            continue;
        }
        return usage();
    }
    if (!model_path) return usage();
    int fd = open(model_path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size == 0) {
        fprintf(stderr, "pocketgpt device: error: cannot read model %s: %s\n", model_path, strerror(errno));
        return 2;
    }
    void *blob = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (blob == MAP_FAILED) {
        fprintf(stderr, "pocketgpt device: error: cannot map model %s\n", model_path);
        return 2;
    }
    int ur = open("/dev/urandom", O_RDONLY);
    if (ur >= 0) {
        if (read(ur, &S.rng, sizeof S.rng) != (ssize_t)sizeof S.rng) S.rng = 0;
        close(ur);
    }
    S.rng |= 1;
    char aerr[1200];
    if (sim_audio_init(&S.au, mic, speaker, barge_ms, aerr, sizeof aerr)) {
        fprintf(stderr, "pocketgpt device: error: %s\n", aerr);
        return 2;
    }
    pg_port port = {.ctx = &S, .platform = "posix-sim", .out = sim_out, .net_open = sim_net_open,
                    .net_close = sim_net_close, .save_settings = sim_save, .random = sim_random, .alloc = sim_alloc,
                    .audio = sim_audio_port()};
    static pg_app app;
    char err[256];
    if (pg_app_init(&app, &port, &set, blob, (size_t)sb.st_size, n_ctx, err, sizeof err)) {
        fprintf(stderr, "pocketgpt device: error: %s: %s\n", model_path, err);
        sim_audio_close(&S.au, 0, aerr, sizeof aerr);
        return 2;
    }
    app.listen_mode = listen_mode;
    int tty = isatty(0);
    pg_app_printf(&app, "pocketgpt device simulator: %s, context %ld; /help for commands\n", model_path, (long)app.n_ctx);
    pg_console con;
    pg_console_init(&con, NULL, NULL);  // the terminal (or the pipe) does its own echo
    if (tty) sim_out(NULL, "> ", 2);
    uint8_t buf[256];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            if (!pg_console_feed(&con, buf[i])) continue;
            if (pg_app_handle_line(&app, con.line)) goto done;
            if (tty) sim_out(NULL, "> ", 2);
        }
    }
done:
    pg_app_disconnect(&app);
    if (sim_audio_close(&S.au, 1, aerr, sizeof aerr)) {
        fprintf(stderr, "pocketgpt device: error: %s\n", aerr);
        return 1;
    }
    return 0;
}
