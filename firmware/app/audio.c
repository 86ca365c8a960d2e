// pocketgpt app: voice messages, the push-to-talk state machine and the playback queue (audio.h).
#include "audio.h"

#include <string.h>

#include "pg_json.h"

// ---- messages ----

static const char *const MODE_NAMES[] = {"manual", "auto", "realtime"};

const char *pg_listen_mode_name(pg_listen_mode m) {
    return (unsigned)m < 3 ? MODE_NAMES[m] : "manual";
}

int pg_listen_mode_parse(const char *name, pg_listen_mode *m) {
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, MODE_NAMES[i]) == 0) {
            *m = (pg_listen_mode)i;
            return 0;
        }
    }
    return -1;
}

static void head(pgj_writer *w, const char *session_id, const char *type) {
    pgj_obj_begin(w);
    pgj_kv_str(w, "session_id", session_id ? session_id : "");
    pgj_kv_str(w, "type", type);
}

int pg_audio_listen_start(const char *session_id, pg_listen_mode mode, char *out, size_t cap) {
    pgj_writer w;
    pgj_init(&w, out, cap);
    head(&w, session_id, "listen");
    pgj_kv_str(&w, "state", "start");
    pgj_kv_str(&w, "mode", pg_listen_mode_name(mode));
    pgj_obj_end(&w);
    return pgj_finish(&w);
}

int pg_audio_listen_stop(const char *session_id, char *out, size_t cap) {
    pgj_writer w;
    pgj_init(&w, out, cap);
    head(&w, session_id, "listen");
    pgj_kv_str(&w, "state", "stop");
    pgj_obj_end(&w);
    return pgj_finish(&w);
}

int pg_audio_abort(const char *session_id, const char *reason, char *out, size_t cap) {
    pgj_writer w;
    pgj_init(&w, out, cap);
    head(&w, session_id, "abort");
    if (reason && *reason) pgj_kv_str(&w, "reason", reason);
    pgj_obj_end(&w);
    return pgj_finish(&w);
}

// ---- the state machine ----

const char *pg_voice_state_name(pg_voice_state s) {
    switch (s) {
    case PG_VOICE_IDLE: return "idle";
    case PG_VOICE_LISTENING: return "listening";
    case PG_VOICE_THINKING: return "thinking";
    case PG_VOICE_SPEAKING: return "speaking";
    }
    return "?";
}

void pg_voice_init(pg_voice *v, pg_listen_mode mode) {
    memset(v, 0, sizeof *v);
    v->state = PG_VOICE_IDLE;
    v->mode = mode;
}

// Move to state s; fold the microphone bits into v->mic_on.
static unsigned go(pg_voice *v, pg_voice_state s, unsigned act) {
    v->state = s;
    if (act & PG_VACT_MIC_ON) v->mic_on = 1;
    if (act & PG_VACT_MIC_OFF) v->mic_on = 0;
    if (act & PG_VACT_SEND_ABORT) {
        v->n_aborts++;
        v->stale++;
    }
    return act;
}

static unsigned drop(pg_voice *v) {
    v->n_dropped++;
    return PG_VACT_DROP;
}

// Stop every part of a turn at once (user cancel, lost connection).
static unsigned cancel(pg_voice *v, unsigned extra) {
    unsigned act = PG_VACT_FLUSH | PG_VACT_END | extra;
    if (v->mic_on) act |= PG_VACT_MIC_OFF;
    return go(v, PG_VOICE_IDLE, act);
}

// Press while the relay thinks or speaks: barge in. Manual and auto start a new utterance after
// the abort; realtime (the microphone is already on) treats the press as "stop everything".
static unsigned barge(pg_voice *v) {
    if (v->mode == PG_LISTEN_REALTIME) return cancel(v, PG_VACT_SEND_ABORT | PG_VACT_LISTEN_STOP);
    return go(v, PG_VOICE_LISTENING, PG_VACT_SEND_ABORT | PG_VACT_FLUSH | PG_VACT_LISTEN_START | PG_VACT_MIC_ON);
}

unsigned pg_voice_step(pg_voice *v, pg_voice_event ev) {
    if (v->stale && v->state != PG_VOICE_IDLE) {  // the tail of an aborted reply, however late
        if (ev == PG_VEV_TTS_STOP) {
            v->stale--;
            return 0;
        }
        if (ev == PG_VEV_TTS_START) return 0;
        if (ev == PG_VEV_AUDIO) return drop(v);
    }
    switch (v->state) {
    case PG_VOICE_IDLE:
        if (ev == PG_VEV_PRESS) return go(v, PG_VOICE_LISTENING, PG_VACT_LISTEN_START | PG_VACT_MIC_ON);
        if (ev == PG_VEV_AUDIO) return drop(v);
        return 0;
    case PG_VOICE_LISTENING:
        switch (ev) {
        case PG_VEV_RELEASE:  // push-to-talk: the utterance ends with the button
            if (v->mode == PG_LISTEN_MANUAL) return go(v, PG_VOICE_THINKING, PG_VACT_LISTEN_STOP | PG_VACT_MIC_OFF);
            return 0;  // auto / realtime: a click starts listening, the relay ends the utterance
        case PG_VEV_PRESS:    // auto / realtime: a second click stops listening
            if (v->mode == PG_LISTEN_MANUAL) return 0;
            return cancel(v, PG_VACT_LISTEN_STOP);
        case PG_VEV_STT:      // auto: the relay heard the end of the utterance
            if (v->mode == PG_LISTEN_AUTO) return go(v, PG_VOICE_THINKING, PG_VACT_MIC_OFF);
            return 0;
        case PG_VEV_TTS_START:
            if (v->mode == PG_LISTEN_AUTO) return go(v, PG_VOICE_SPEAKING, PG_VACT_MIC_OFF);
            if (v->mode == PG_LISTEN_REALTIME) return go(v, PG_VOICE_SPEAKING, 0);  // the mic stays on
            return 0;  // manual: a late start of an aborted reply
        case PG_VEV_AUDIO: return drop(v);
        case PG_VEV_ABORT: return cancel(v, PG_VACT_LISTEN_STOP | PG_VACT_SEND_ABORT);
        case PG_VEV_ERROR:
        case PG_VEV_TIMEOUT: return cancel(v, PG_VACT_LISTEN_STOP);
        case PG_VEV_CLOSED: return cancel(v, 0);
        default: return 0;  // a late tts stop of an aborted reply
        }
    case PG_VOICE_THINKING:
        switch (ev) {
        case PG_VEV_TTS_START: return go(v, PG_VOICE_SPEAKING, 0);
        case PG_VEV_TTS_STOP: return go(v, PG_VOICE_IDLE, PG_VACT_END);  // nothing to say
        case PG_VEV_AUDIO: return drop(v);  // the device plays only after tts start
        case PG_VEV_PRESS: return barge(v);
        case PG_VEV_ABORT: return cancel(v, PG_VACT_SEND_ABORT);
        case PG_VEV_ERROR: return go(v, PG_VOICE_IDLE, PG_VACT_END);
        case PG_VEV_TIMEOUT: return cancel(v, PG_VACT_SEND_ABORT);
        case PG_VEV_CLOSED: return cancel(v, 0);
        default: return 0;
        }
    case PG_VOICE_SPEAKING:
        switch (ev) {
        case PG_VEV_AUDIO: return PG_VACT_PLAY;
        case PG_VEV_TTS_STOP:
            if (v->mode == PG_LISTEN_REALTIME) return go(v, PG_VOICE_LISTENING, 0);  // keep the conversation open
            return go(v, PG_VOICE_IDLE, PG_VACT_END | (v->mic_on ? PG_VACT_MIC_OFF : 0));
        case PG_VEV_PRESS: return barge(v);
        case PG_VEV_ABORT: return cancel(v, PG_VACT_SEND_ABORT | (v->mic_on ? PG_VACT_LISTEN_STOP : 0));
        case PG_VEV_ERROR: return go(v, PG_VOICE_IDLE, PG_VACT_END | (v->mic_on ? PG_VACT_MIC_OFF : 0));
        case PG_VEV_TIMEOUT: return cancel(v, PG_VACT_SEND_ABORT);
        case PG_VEV_CLOSED: return go(v, PG_VOICE_IDLE, PG_VACT_END | (v->mic_on ? PG_VACT_MIC_OFF : 0));
        default: return 0;  // stt (realtime), another tts start, a release
        }
    }
    return 0;
}

// ---- playback queue ----

void pg_audio_queue_init(pg_audio_queue *q, uint8_t *buf, size_t cap) {
    memset(q, 0, sizeof *q);
    q->buf = buf;
    q->cap = cap;
}

static void ring_put(pg_audio_queue *q, size_t at, const uint8_t *src, size_t n) {
    at %= q->cap;
    size_t first = q->cap - at < n ? q->cap - at : n;
    memcpy(q->buf + at, src, first);
    memcpy(q->buf, src + first, n - first);
}

static void ring_get(const pg_audio_queue *q, size_t at, uint8_t *dst, size_t n) {
    at %= q->cap;
    size_t first = q->cap - at < n ? q->cap - at : n;
    memcpy(dst, q->buf + at, first);
    memcpy(dst + first, q->buf, n - first);
}

int pg_audio_queue_push(pg_audio_queue *q, const uint8_t *pkt, size_t n) {
    if (n == 0 || n > PG_AUDIO_MAX_PACKET || q->cap - q->used < n + 2) {
        if (n) q->overflows++;
        return -1;
    }
    uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    ring_put(q, q->head + q->used, len, 2);
    ring_put(q, q->head + q->used + 2, pkt, n);
    q->used += n + 2;
    q->count++;
    return 0;
}

size_t pg_audio_queue_pop(pg_audio_queue *q, uint8_t *out, size_t cap) {
    if (!q->count) return 0;
    uint8_t len[2];
    ring_get(q, q->head, len, 2);
    size_t n = (size_t)len[0] << 8 | len[1];
    if (n <= cap) ring_get(q, q->head + 2, out, n);
    q->head = (q->head + n + 2) % q->cap;
    q->used -= n + 2;
    q->count--;
    return n <= cap ? n : 0;
}

void pg_audio_queue_clear(pg_audio_queue *q) {
    q->head = q->used = 0;
    q->count = 0;
}
