// pocketgpt device simulator: WAV microphone, WAV speaker, libopus (see sim_audio.h).
#define _POSIX_C_SOURCE 200809L
#include "sim_audio.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef PG_SIM_OPUS
#include <opus/opus.h>
#endif

#define SPEAKER_BUFFER_MS 120.0  // the modelled I2S DMA buffer (the chip's is about this size)

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void sleep_until(double t_ms) {
    double d = t_ms - now_ms();
    if (d <= 0) return;
    struct timespec ts = {(time_t)(d / 1000.0), (long)((d - (double)(time_t)(d / 1000.0) * 1000.0) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint32_t rd16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const uint8_t *p) { return rd16(p) | rd16(p + 2) << 16; }

// A PCM-16 WAV to 16 kHz mono (channels averaged, linear resampling). 0, or -1 with err.
static int load_wav(const char *path, int16_t **out, size_t *n_out, char *err, size_t err_cap) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_cap, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = len > 0 ? malloc((size_t)len) : NULL;
    size_t got = b ? fread(b, 1, (size_t)len, f) : 0;
    fclose(f);
    if (!b || got != (size_t)len || len < 12 || memcmp(b, "RIFF", 4) || memcmp(b + 8, "WAVE", 4)) {
        free(b);
        snprintf(err, err_cap, "%s is not a WAV file (RIFF/WAVE); convert it with: sox IN -r 16000 -c 1 -b 16 OUT.wav", path);
        return -1;
    }
    uint32_t fmt = 0, ch = 0, rate = 0, bits = 0;
    const uint8_t *data = NULL;
    size_t data_len = 0;
    for (size_t at = 12; at + 8 <= got;) {
        uint32_t sz = rd32(b + at + 4);
        const uint8_t *body = b + at + 8;
        size_t avail = got - at - 8;
        if (!memcmp(b + at, "fmt ", 4) && sz >= 16 && avail >= 16) {
            fmt = rd16(body);
            ch = rd16(body + 2);
            rate = rd32(body + 4);
            bits = rd16(body + 14);
            if (fmt == 0xFFFE && sz >= 26 && avail >= 26) fmt = rd16(body + 24);  // WAVE_FORMAT_EXTENSIBLE
        } else if (!memcmp(b + at, "data", 4)) {
            data = body;
            data_len = sz < avail ? sz : avail;  // streamed WAVs (sox/espeak to a pipe) may say 0xFFFFFFFF
            break;
        }
        at += 8 + (size_t)sz + (sz & 1);
    }
    if (fmt != 1 || bits != 16 || ch < 1 || ch > 8 || rate < 4000 || rate > 192000 || !data) {
        free(b);
        snprintf(err, err_cap, "%s: need 16-bit PCM WAV (got format %u, %u bits, %u channels, %u Hz); "
                               "convert it with: sox IN -r 16000 -c 1 -b 16 OUT.wav", path, fmt, bits, ch, rate);
        return -1;
    }
    size_t frames = data_len / (2 * ch);
    size_t n = (size_t)((double)frames * PG_AUDIO_UP_RATE / rate);
    int16_t *pcm = malloc((n ? n : 1) * sizeof *pcm);
    if (!pcm) {
        free(b);
        snprintf(err, err_cap, "out of memory for %s", path);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        double x = (double)i * rate / PG_AUDIO_UP_RATE;
        size_t i0 = (size_t)x;
        double fr = x - (double)i0;
        size_t i1 = i0 + 1 < frames ? i0 + 1 : i0;
        double s0 = 0, s1 = 0;
        for (uint32_t c = 0; c < ch; c++) {
            s0 += (int16_t)rd16(data + 2 * (i0 * ch + c));
            s1 += (int16_t)rd16(data + 2 * (i1 * ch + c));
        }
        double v = ((1.0 - fr) * s0 + fr * s1) / ch;
        pcm[i] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }
    free(b);
    *out = pcm;
    *n_out = n;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int has_wav_suffix(const char *name) {
    size_t l = strlen(name);
    return l > 4 && (strcmp(name + l - 4, ".wav") == 0 || strcmp(name + l - 4, ".WAV") == 0);
}

static void wav_header(uint8_t h[44], int rate, uint64_t samples) {
    uint64_t bytes = samples * 2;
    uint32_t data = bytes > 0xFFFFFFFFu - 36 ? 0xFFFFFFFFu - 36 : (uint32_t)bytes;
    uint32_t v[] = {36 + data, 16, (uint32_t)rate, (uint32_t)rate * 2, data};
    memcpy(h, "RIFF", 4);
    memcpy(h + 8, "WAVEfmt ", 8);
    memcpy(h + 36, "data", 4);
    uint32_t at[] = {4, 16, 24, 28, 40};
    for (int i = 0; i < 5; i++)
        for (int k = 0; k < 4; k++) h[at[i] + k] = (uint8_t)(v[i] >> (8 * k));
    h[20] = 1, h[21] = 0;  // PCM
    h[22] = 1, h[23] = 0;  // mono
    h[32] = 2, h[33] = 0;  // block align
    h[34] = 16, h[35] = 0; // bits
}

int sim_audio_init(sim_audio *A, const char *mic, const char *speaker, int barge_ms, char *err, size_t err_cap) {
    memset(A, 0, sizeof *A);
    A->barge_ms = barge_ms;
    if (mic && *mic) {
        struct stat st;
        if (stat(mic, &st) != 0) {
            snprintf(err, err_cap, "--mic %s: %s", mic, strerror(errno));
            return -1;
        }
        snprintf(A->mic_path, sizeof A->mic_path, "%s", mic);
        if (S_ISDIR(st.st_mode)) {
            A->mic_is_dir = 1;
            DIR *d = opendir(mic);
            struct dirent *e;
            while (d && (e = readdir(d))) {
                if (!has_wav_suffix(e->d_name)) continue;
                char **grown = realloc(A->files, (size_t)(A->n_files + 1) * sizeof *grown);
                if (!grown) break;
                A->files = grown;
                size_t l = strlen(mic) + strlen(e->d_name) + 2;
                A->files[A->n_files] = malloc(l);
                snprintf(A->files[A->n_files++], l, "%s/%s", mic, e->d_name);
            }
            if (d) closedir(d);
            if (!A->n_files) {
                snprintf(err, err_cap, "--mic %s: the folder has no .wav files", mic);
                return -1;
            }
            qsort(A->files, (size_t)A->n_files, sizeof *A->files, cmp_str);
        }
    }
    if (speaker && *speaker) {
        snprintf(A->speaker_path, sizeof A->speaker_path, "%s", speaker);
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.tmp", speaker);
        A->out = fopen(tmp, "w+b");
        if (!A->out) {
            snprintf(err, err_cap, "--speaker %s: cannot write %s: %s", speaker, tmp, strerror(errno));
            return -1;
        }
        uint8_t h[44];
        wav_header(h, PG_AUDIO_DOWN_RATE, 0);
        fwrite(h, 1, sizeof h, A->out);
    }
    return 0;
}

int sim_audio_close(sim_audio *A, int keep, char *err, size_t err_cap) {
    for (int i = 0; i < A->n_files; i++) free(A->files[i]);
    free(A->files);
    free(A->pcm);
    A->files = NULL;
    A->pcm = NULL;
#ifdef PG_SIM_OPUS
    if (A->enc) opus_encoder_destroy(A->enc);
    if (A->dec) opus_decoder_destroy(A->dec);
    A->enc = A->dec = NULL;
#endif
    if (!A->out) return 0;
    uint8_t h[44];
    wav_header(h, A->out_rate ? A->out_rate : PG_AUDIO_DOWN_RATE, A->out_samples);
    int bad = fseek(A->out, 0, SEEK_SET) != 0 || fwrite(h, 1, sizeof h, A->out) != sizeof h;
    bad |= fclose(A->out) != 0;
    A->out = NULL;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", A->speaker_path);
    if (!keep) {
        unlink(tmp);
        return 0;
    }
    if (bad || rename(tmp, A->speaker_path) != 0) {
        unlink(tmp);
        snprintf(err, err_cap, "--speaker %s: could not be written", A->speaker_path);
        return -1;
    }
    return 0;
}

// ---- microphone and push-to-talk ----

static int take_file(sim_audio *A, const char *path, char *err, size_t err_cap) {
    int16_t *pcm;
    size_t n;
    if (load_wav(path, &pcm, &n, err, err_cap)) return -1;
    free(A->pcm);
    A->pcm = pcm;
    A->n = n;
    A->pos = 0;
    A->t_armed = now_ms();
    A->t_end = 0;
    A->armed = 1;
    snprintf(A->last_file, sizeof A->last_file, "%s", path);
    return 0;
}

static int next_file(sim_audio *A, char *err, size_t err_cap) {
    if (!A->mic_is_dir) return take_file(A, A->mic_path, err, err_cap);
    if (A->next_file >= A->n_files) {
        // the path quoted at most 160 characters: an error is one line in a caller's buffer
        snprintf(err, err_cap, "the microphone folder %.160s has no more files (%d played)", A->mic_path, A->n_files);
        return -1;
    }
    return take_file(A, A->files[A->next_file++], err, err_cap);
}

static int mic_arm(void *ctx, const char *arg, char *err, size_t err_cap) {
    sim_audio *A = ctx;
    A->barge_done = 0;
    if (arg && *arg) return take_file(A, arg, err, err_cap);
    if (!A->mic_path[0]) {
        snprintf(err, err_cap, "no microphone: start the simulator with --mic FILE.wav|FOLDER, or /talk FILE.wav");
        return -1;
    }
    return next_file(A, err, err_cap);
}

static int ptt_pressed(void *ctx) {
    sim_audio *A = ctx;
    if (A->armed && A->pos < A->n) return 1;
    if (A->armed && A->t_end == 0) A->t_end = now_ms();
    A->armed = 0;
    if (A->barge_ms > 0 && !A->barge_done && A->t_end > 0 && now_ms() >= A->t_end + A->barge_ms) {
        // the simulated finger presses again: the next file of a folder, the same file otherwise
        char err[256];
        A->barge_done = 1;
        if (next_file(A, err, sizeof err) == 0) return 1;
    }
    return 0;
}

static int mic_read(void *ctx, int16_t *pcm, size_t n) {
    sim_audio *A = ctx;
    // frame k is captured by t_armed + (k + 1) * 60 ms; after the file, silence (auto mode keeps listening)
    size_t frame_no = A->armed ? A->pos / n : 0;
    if (A->armed) sleep_until(A->t_armed + (double)(frame_no + 1) * PG_AUDIO_UP_FRAME_MS);
    else sleep_until(now_ms() + PG_AUDIO_UP_FRAME_MS);
    for (size_t i = 0; i < n; i++) pcm[i] = A->armed && A->pos + i < A->n ? A->pcm[A->pos + i] : 0;
    if (A->armed) A->pos = A->pos + n < A->n ? A->pos + n : A->n;
    return (int)n;
}

// ---- speaker: a DMA buffer model that drains at real time, recorded to the WAV ----

static double queued_samples(const sim_audio *A, double now) {
    double ms = A->busy_until - now;
    return ms > 0 && A->out_rate ? ms * A->out_rate / 1000.0 : 0.0;
}

static size_t speaker_room(void *ctx) {
    sim_audio *A = ctx;
    int rate = A->out_rate ? A->out_rate : PG_AUDIO_DOWN_RATE;
    double cap = SPEAKER_BUFFER_MS * rate / 1000.0, q = queued_samples(A, now_ms());
    return q >= cap ? 0 : (size_t)(cap - q);
}

static int speaker_write(void *ctx, const int16_t *pcm, size_t n, int rate) {
    sim_audio *A = ctx;
    if (!A->out_rate) {
        A->out_rate = rate;
    } else if (rate != A->out_rate) {
        if (!A->rate_warned) fprintf(stderr, "pocketgpt device: the relay changed its audio rate %d -> %d Hz; "
                                             "the speaker WAV keeps %d Hz\n", A->out_rate, rate, A->out_rate);
        A->rate_warned = 1;
        return -1;
    }
    double cap_ms = SPEAKER_BUFFER_MS, len_ms = (double)n * 1000.0 / rate;
    double now = now_ms();
    if (A->busy_until - now + len_ms > cap_ms) {  // a full buffer blocks the writer, like i2s_channel_write
        sleep_until(A->busy_until + len_ms - cap_ms);
        now = now_ms();
    }
    A->busy_until = (A->busy_until > now ? A->busy_until : now) + len_ms;
    if (A->out) {
        for (size_t i = 0; i < n; i++) {
            uint8_t le[2] = {(uint8_t)pcm[i], (uint8_t)((uint16_t)pcm[i] >> 8)};
            fwrite(le, 1, 2, A->out);
        }
    }
    A->out_samples += n;
    return 0;
}

static void speaker_flush(void *ctx) {
    sim_audio *A = ctx;
    double now = now_ms();
    uint64_t unplayed = (uint64_t)queued_samples(A, now);
    if (unplayed > A->out_samples) unplayed = A->out_samples;
    A->out_samples -= unplayed;  // what the DMA buffer still held is never heard
    A->busy_until = now;
    if (A->out) {
        fflush(A->out);
        if (ftruncate(fileno(A->out), (off_t)(44 + 2 * A->out_samples)) == 0)
            fseek(A->out, (long)(44 + 2 * A->out_samples), SEEK_SET);
    }
}

// ---- Opus ----

static int encoder_open(void *ctx, int rate, int frame_ms, char *err, size_t err_cap) {
    sim_audio *A = ctx;
    (void)frame_ms;
#ifdef PG_SIM_OPUS
    if (A->enc && A->enc_rate == rate) return opus_encoder_ctl((OpusEncoder *)A->enc, OPUS_RESET_STATE) == OPUS_OK ? 0 : -1;
    if (A->enc) opus_encoder_destroy(A->enc);
    int e = 0;
    A->enc = opus_encoder_create(rate, 1, OPUS_APPLICATION_VOIP, &e);
    if (!A->enc || e != OPUS_OK) {
        A->enc = NULL;
        snprintf(err, err_cap, "opus encoder at %d Hz: %s", rate, opus_strerror(e));
        return -1;
    }
    A->enc_rate = rate;
    return 0;
#else
    (void)A, (void)rate;
    snprintf(err, err_cap, "this simulator was built without libopus (install libopus-dev, then rebuild)");
    return -1;
#endif
}

static int decoder_open(void *ctx, int rate, int frame_ms, char *err, size_t err_cap) {
    sim_audio *A = ctx;
    (void)frame_ms;
#ifdef PG_SIM_OPUS
    if (A->dec && A->dec_rate == rate) return opus_decoder_ctl((OpusDecoder *)A->dec, OPUS_RESET_STATE) == OPUS_OK ? 0 : -1;
    if (A->dec) opus_decoder_destroy(A->dec);
    int e = 0;
    A->dec = opus_decoder_create(rate, 1, &e);
    if (!A->dec || e != OPUS_OK) {
        A->dec = NULL;
        snprintf(err, err_cap, "opus decoder at %d Hz (the relay's hello): %s", rate, opus_strerror(e));
        return -1;
    }
    A->dec_rate = rate;
    return 0;
#else
    (void)A, (void)rate;
    snprintf(err, err_cap, "this simulator was built without libopus (install libopus-dev, then rebuild)");
    return -1;
#endif
}

static int encode(void *ctx, const int16_t *pcm, size_t n, uint8_t *out, size_t cap) {
    sim_audio *A = ctx;
#ifdef PG_SIM_OPUS
    int r = A->enc ? opus_encode((OpusEncoder *)A->enc, pcm, (int)n, out, (opus_int32)cap) : -1;
    return r > 0 ? r : -1;
#else
    (void)A, (void)pcm, (void)n, (void)out, (void)cap;
    return -1;
#endif
}

static int decode(void *ctx, const uint8_t *pkt, size_t n, int16_t *pcm, size_t cap) {
    sim_audio *A = ctx;
#ifdef PG_SIM_OPUS
    int r = A->dec ? opus_decode((OpusDecoder *)A->dec, pkt, (opus_int32)n, pcm, (int)cap, 0) : -1;
    return r >= 0 ? r : -1;
#else
    (void)A, (void)pkt, (void)n, (void)pcm, (void)cap;
    return -1;
#endif
}

static uint32_t clock_ms(void *ctx) {
    (void)ctx;
    return (uint32_t)(uint64_t)now_ms();
}

static const pg_audio_port PORT = {
    .mic_arm = mic_arm, .ptt_pressed = ptt_pressed, .mic_read = mic_read, .speaker_room = speaker_room,
    .speaker_write = speaker_write, .speaker_flush = speaker_flush, .encoder_open = encoder_open,
    .decoder_open = decoder_open, .encode = encode, .decode = decode, .now_ms = clock_ms,
};

const pg_audio_port *sim_audio_port(void) { return &PORT; }
