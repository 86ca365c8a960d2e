// pocketgpt app: relay message builders and parser (see relay_proto.h and docs/protocol.md).
#include "relay_proto.h"

#include <string.h>

#include "pg_json.h"

int pg_proto_hello(char *out, size_t cap) {
    pgj_writer w;
    pgj_init(&w, out, cap);
    pgj_obj_begin(&w);
    pgj_kv_str(&w, "type", "hello");
    pgj_kv_int(&w, "version", 1);
    pgj_key(&w, "features");
    pgj_obj_begin(&w);
    pgj_kv_bool(&w, "mcp", 0);
    pgj_kv_int(&w, "pocketgpt", 1);
    pgj_obj_end(&w);
    pgj_kv_str(&w, "transport", "websocket");
    pgj_key(&w, "audio_params");
    pgj_obj_begin(&w);
    pgj_kv_str(&w, "format", "opus");
    pgj_kv_int(&w, "sample_rate", 16000);
    pgj_kv_int(&w, "channels", 1);
    pgj_kv_int(&w, "frame_duration", 60);
    pgj_obj_end(&w);
    pgj_obj_end(&w);
    return pgj_finish(&w);
}

int pg_proto_generate(const pg_gen_request *r, char *out, size_t cap) {
    pgj_writer w;
    pgj_init(&w, out, cap);
    pgj_obj_begin(&w);
    pgj_kv_str(&w, "type", "pg.generate");
    pgj_kv_str(&w, "id", r->id);
    pgj_kv_str(&w, "prompt", r->prompt);
    if (r->max_tokens >= 0) pgj_kv_int(&w, "max_tokens", r->max_tokens);
    if (r->has_temperature) pgj_kv_num(&w, "temperature", r->temperature);
    if (r->top_k >= 0) pgj_kv_int(&w, "top_k", r->top_k);
    if (r->has_top_p) pgj_kv_num(&w, "top_p", r->top_p);
    if (r->has_seed) pgj_kv_int(&w, "seed", r->seed);
    if (r->has_greedy) pgj_kv_bool(&w, "greedy", r->greedy);
    if (r->n_stop > 0) {
        pgj_key(&w, "stop");
        pgj_raw(&w, "[");
        for (int i = 0; i < r->n_stop; i++) {
            if (i) pgj_raw(&w, ",");
            pgj_str(&w, r->stop[i], strlen(r->stop[i]));
        }
        pgj_raw(&w, "]");
        w.need_comma = 1;
    }
    pgj_obj_end(&w);
    return pgj_finish(&w);
}

int pg_proto_abort(const char *id, char *out, size_t cap) {
    pgj_writer w;
    pgj_init(&w, out, cap);
    pgj_obj_begin(&w);
    pgj_kv_str(&w, "type", "abort");
    if (id) pgj_kv_str(&w, "id", id);
    pgj_obj_end(&w);
    return pgj_finish(&w);
}

static void get_str(const pgj_val *obj, const char *key, char *out, size_t cap) {
    pgj_val v;
    out[0] = 0;
    if (pgj_get(obj, key, &v) && v.kind == PGJ_STRING && pgj_string(&v, out, cap, NULL) != 0) {
        // too long for the field: keep a cut, still valid, copy for messages; ids must fit exactly
        out[0] = 0;
    }
}

static long long get_int(const pgj_val *obj, const char *key) {
    pgj_val v;
    long long x = 0;
    if (pgj_get(obj, key, &v)) pgj_int(&v, &x);
    return x;
}

pg_msg_type pg_proto_parse(const char *frame, size_t n, pg_relay_msg *m, char *text_buf, size_t text_cap) {
    memset(m, 0, sizeof *m);
    m->text = text_buf;
    if (text_cap) text_buf[0] = 0;
    pgj_val root, v;
    if (pgj_parse(frame, n, &root) != PGJ_OBJECT) return m->type = PG_MSG_INVALID;
    if (!pgj_get(&root, "type", &v) || v.kind != PGJ_STRING ||
        pgj_string(&v, m->type_name, sizeof m->type_name, NULL) != 0)
        return m->type = PG_MSG_INVALID;
    get_str(&root, "id", m->id, sizeof m->id);
    get_str(&root, "session_id", m->session_id, sizeof m->session_id);
    if (pgj_get(&root, "text", &v) && v.kind == PGJ_STRING) {
        if (pgj_string(&v, text_buf, text_cap, &m->text_len) != 0) return m->type = PG_MSG_INVALID;
    }
    const char *t = m->type_name;
    if (strcmp(t, "hello") == 0) {
        m->type = PG_MSG_HELLO;
        if (pgj_get(&root, "transport", &v) && v.kind == PGJ_STRING && v.n == 11 && memcmp(v.p, "\"websocket\"", 11) == 0)
            m->transport_ok = 1;
        pgj_val f, ext;
        if (pgj_get(&root, "features", &f) && pgj_get(&f, "pocketgpt", &v)) {
            long long on = 0;
            m->extension = pgj_int(&v, &on) == 0 && on >= 1;
        }
        if (pgj_get(&root, "pocketgpt", &ext)) m->relay_max_tokens = get_int(&ext, "max_tokens");
        pgj_val ap;
        if (pgj_get(&root, "audio_params", &ap)) {  // what the relay's binary frames carry (voice)
            get_str(&ap, "format", m->audio_format, sizeof m->audio_format);
            m->audio_rate = get_int(&ap, "sample_rate");
            m->audio_channels = get_int(&ap, "channels");
            m->audio_frame_ms = get_int(&ap, "frame_duration");
        }
    } else if (strcmp(t, "pg.delta") == 0) {
        m->type = PG_MSG_DELTA;
    } else if (strcmp(t, "pg.done") == 0) {
        m->type = PG_MSG_DONE;
        get_str(&root, "reason", m->reason, sizeof m->reason);
        m->tokens = get_int(&root, "tokens");
        m->prompt_tokens = get_int(&root, "prompt_tokens");
    } else if (strcmp(t, "error") == 0) {
        m->type = PG_MSG_ERROR;
        get_str(&root, "code", m->code, sizeof m->code);
        pgj_val mv;
        m->message[0] = 0;
        if (pgj_get(&root, "message", &mv) && mv.kind == PGJ_STRING &&
            pgj_string(&mv, m->message, sizeof m->message, NULL) != 0) {
            strcpy(m->message, "(message too long)");
        }
    } else if (strcmp(t, "stt") == 0) {
        m->type = PG_MSG_STT;
    } else if (strcmp(t, "tts") == 0) {
        m->type = PG_MSG_TTS;
        get_str(&root, "state", m->state, sizeof m->state);
    } else {
        m->type = PG_MSG_OTHER;
    }
    return m->type;
}
