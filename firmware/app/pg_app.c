// pocketgpt app: init, console commands, routing and local generation (see pg_app.h); the relay
// client is app_relay.c, the voice turn app_voice.c.
#include "pg_app.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "app_internal.h"

#define N_BATCH 8

void pg_app_printf(pg_app *app, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    app->port.out(app->port.ctx, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void *take(pg_app *app, size_t n, pg_mem_kind kind, int *fail) {
    void *p = n ? app->port.alloc(app->port.ctx, n, kind) : NULL;
    if (n && !p) *fail = 1;
    return p;
}

int pg_app_init(pg_app *app, const pg_port *port, const pg_settings *set, const void *blob, size_t blob_size,
                int32_t n_ctx, char *err, size_t err_cap) {
    memset(app, 0, sizeof *app);
    app->port = *port;
    app->set = *set;
    pg_status st;
    size_t need;
    if (pg_model_mem_size(blob, blob_size, &need, &st) != PG_OK) {
        snprintf(err, err_cap, "model: %s", st.msg);
        return -1;
    }
    int fail = 0;
    void *mm = take(app, need, PG_MEM_LARGE, &fail);
    if (fail || pg_model_init(&app->model, blob, blob_size, mm, need, PG_KERNELS_BEST, &st) != PG_OK) {
        snprintf(err, err_cap, "model: %s", fail ? "out of memory for the model tables" : st.msg);
        return -1;
    }
    if (n_ctx <= 0 || (uint32_t)n_ctx > app->model.cfg.n_ctx) n_ctx = (int32_t)app->model.cfg.n_ctx;
    app->n_ctx = n_ctx;
    app->n_batch = N_BATCH;
    if (pg_state_mem_size(&app->model, n_ctx, N_BATCH, &need, &st) != PG_OK) {
        snprintf(err, err_cap, "session: %s", st.msg);
        return -1;
    }
    void *sm = take(app, need, PG_MEM_LARGE, &fail);
    if (fail || pg_state_init(&app->state, &app->model, n_ctx, N_BATCH, sm, need, &st) != PG_OK) {
        snprintf(err, err_cap, "session: %s", fail ? "out of memory for the KV cache" : st.msg);
        return -1;
    }
    app->state.par = port->par;
    size_t V = app->model.cfg.n_vocab;
    app->chunk_logits = take(app, (size_t)N_BATCH * V * sizeof(float), PG_MEM_LARGE, &fail);
    app->ids = take(app, (size_t)(PG_CONSOLE_LINE + n_ctx) * sizeof(int32_t), PG_MEM_LARGE, &fail);
    app->tok_scratch_size = pg_tokenizer_scratch_size(PG_APP_CHAT_BYTES);
    app->tok_scratch = take(app, app->tok_scratch_size, PG_MEM_LARGE, &fail);
    app->text_out = take(app, 3 * 256 + PG_TEXTOUT_HOLD, PG_MEM_INTERNAL, &fail);
    app->chat = take(app, PG_APP_CHAT_BYTES, PG_MEM_LARGE, &fail);
    app->reply_buf = take(app, PG_APP_REPLY_HOLD, PG_MEM_LARGE, &fail);
    app->reply_out = take(app, PG_REPLY_OUT(PG_APP_REPLY_HOLD), PG_MEM_LARGE, &fail);
    app->ws_rx = take(app, PG_APP_NET_BUF, PG_MEM_LARGE, &fail);
    app->ws_msg = take(app, PG_APP_NET_BUF, PG_MEM_LARGE, &fail);
    app->frame = take(app, PG_APP_NET_BUF, PG_MEM_LARGE, &fail);
    app->text = take(app, PG_APP_NET_BUF, PG_MEM_LARGE, &fail);
    app->listen_mode = PG_LISTEN_MANUAL;
    app->last_first_audio_ms = -1;
    if (port->audio) {
        pg_audio_queue_init(&app->play_q, take(app, VOICE_QUEUE_BYTES, PG_MEM_LARGE, &fail), VOICE_QUEUE_BYTES);
        app->vpkt = take(app, PG_AUDIO_MAX_PACKET, PG_MEM_INTERNAL, &fail);
        app->vpcm = take(app, PG_AUDIO_MAX_DECODED * sizeof(int16_t), PG_MEM_INTERNAL, &fail);
        app->vmic = take(app, PG_AUDIO_UP_SAMPLES * sizeof(int16_t), PG_MEM_INTERNAL, &fail);
    }
    if (fail) {
        snprintf(err, err_cap, "out of memory for the app buffers");
        return -1;
    }
    return 0;
}

// ---- local model ----

// Tokens of text (appended at app->ids + at, at most cap); -1 on error.
static long encode_at(pg_app *app, const char *text, size_t len, size_t at, size_t cap, char *err, size_t err_cap) {
    pg_status st;
    size_t n = 0;
    if (pg_tokenizer_encode(&app->model.tok, (const uint8_t *)text, len, 0, app->ids + at, cap, &n, app->tok_scratch,
                            app->tok_scratch_size, &st) != PG_OK) {
        snprintf(err, err_cap, "tokenizer: %s", st.msg);
        return -1;
    }
    return (long)n;
}

int pg_app_measure(pg_app *app, const char *prompt, pg_prompt_stats *ps, char *err, size_t err_cap) {
    pg_status st;
    size_t len = strlen(prompt);
    memset(ps, 0, sizeof *ps);
    if (len > PG_CONSOLE_LINE) len = PG_CONSOLE_LINE;
    long n_chat = pg_chat_prompt(prompt, len, app->chat, PG_APP_CHAT_BYTES);
    // the request's tokens sit between those of "Q:" and "\nA:" (the GPT-2 pre-tokenizer splits at
    // both joins, so the whole prompt tokenizes as the three parts do)
    long n_head = encode_at(app, "Q:", 2, 0, PG_CONSOLE_LINE, err, err_cap);
    long n_tail = encode_at(app, "\nA:", 3, 0, PG_CONSOLE_LINE, err, err_cap);
    app->ids[0] = (int32_t)app->model.tok.eos_id;
    long n_enc = n_chat < 0 || n_head < 0 || n_tail < 0 ? -1
                 : encode_at(app, app->chat, (size_t)n_chat, 1, PG_CONSOLE_LINE + 7, err, err_cap);
    if (n_enc < 0) {
        if (n_chat < 0) snprintf(err, err_cap, "the request does not fit the chat buffer");
        return -1;
    }
    size_t n_ids = (size_t)n_enc + 1;
    size_t q0 = 1 + (size_t)n_head, q1 = n_ids - (size_t)n_tail;  // the request: ids[q0 .. q1)
    if (q1 < q0) q1 = q0;
    ps->n_tokens = (int32_t)n_ids;
    for (size_t i = q0; i < q1; i++) {
        uint32_t tl;
        const uint8_t *tb = pg_tokenizer_token_bytes(&app->model.tok, app->ids[i], &tl);
        ps->n_bytefallback += pg_router_is_bytefallback(tb, tl);
    }
    ps->n_request = (int32_t)(q1 - q0);
    pg_state_reset(&app->state);
    if ((int32_t)n_ids > app->n_ctx) return 0;  // the router says too long
    int32_t V = (int32_t)app->model.cfg.n_vocab;
    double total = 0.0;
    float top[PG_ROUTER_PEAK_K];
    int32_t n_top = 0;
    for (int32_t at = 0; at < (int32_t)n_ids; at += app->n_batch) {
        int32_t k = (int32_t)n_ids - at < app->n_batch ? (int32_t)n_ids - at : app->n_batch;
        if (pg_state_eval(&app->state, app->ids + at, k, app->chunk_logits, &st) != PG_OK) {
            snprintf(err, err_cap, "engine: %s", st.msg);
            return -1;
        }
        for (int32_t j = 0; j < k; j++) {
            int32_t target = at + j + 1;  // the token this position predicts
            if (target < (int32_t)q0 || target >= (int32_t)q1) continue;
            const float *lg = app->chunk_logits + (size_t)j * (size_t)V;
            float mx = lg[0];
            for (int32_t v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
            double z = 0.0;
            for (int32_t v = 0; v < V; v++) z += exp((double)(lg[v] - mx));
            double surprisal = (double)mx + log(z) - (double)lg[app->ids[target]];
            total += surprisal;
            pg_router_peak_add(top, &n_top, (float)surprisal);
        }
    }
    ps->mean_surprisal = q1 > q0 ? (float)(total / (double)(q1 - q0)) : 0.0f;
    ps->peak_surprisal = pg_router_peak(top, n_top);
    return 0;
}

static void show(pg_app *app, size_t n) { out(app, app->reply_out, n); }

// Continue from the chat prompt already in the KV cache; streams the reply after "[local] ",
// sentence by sentence: no end before its first word, cut back to its last sentence end when
// max_tokens cuts it, never empty (chat.h), steered to name the request's subject (pg_chat_subject,
// pg_topic_steer; as the relay's chat turns).
static void local_answer(pg_app *app, int32_t n_prompt, const char *request) {
    pg_status st;
    pg_sampler_params sp;
    pg_sampler_defaults(&sp);
    sp.temperature = app->set.gen_temperature;
    sp.top_k = app->set.gen_top_k;
    sp.top_p = app->set.gen_top_p;
    pg_rng rng;
    pg_rng_seed(&rng, app->set.gen_seed >= 0 ? (uint64_t)app->set.gen_seed
                                             : ((uint64_t)app->port.random(app->port.ctx) << 32 | app->port.random(app->port.ctx)));
    const uint8_t *stops[1] = {(const uint8_t *)PG_CHAT_STOP};
    size_t stop_len[1] = {sizeof PG_CHAT_STOP - 1};
    pg_textout to;
    pg_textout_init(&to, stops, stop_len, 1, &st);
    pg_reply reply;
    pg_reply_init(&reply, app->reply_buf, PG_APP_REPLY_HOLD);
    char subject[PG_CHAT_SUBJECT_MAX + 1];
    size_t req_len = strlen(request);
    if (req_len > PG_CONSOLE_LINE) req_len = PG_CONSOLE_LINE;
    size_t subject_len = pg_chat_subject(request, req_len, subject, sizeof subject);
    pg_topic topic;
    if (pg_topic_init(&topic, &app->model.tok, subject, subject_len, PG_TOPIC_BIAS, PG_TOPIC_SLOPE, PG_TOPIC_CAP, &st))
        memset(&topic, 0, sizeof topic);  // cannot steer: the model's reply alone
    out(app, "[local] ", 8);
    int32_t n = n_prompt, produced = 0;
    const char *reason = "length";
    int engine_failed = 0;
    while (produced < app->set.gen_max_tokens && n < app->n_ctx) {
        pg_topic_steer(&topic, &to, &app->model.tok, app->state.logits);
        pg_textout_guard(&to, &app->model.tok, app->state.logits, PG_CHAT_MIN_WORDS);
        int32_t next = pg_sample(app->state.logits, (int32_t)app->model.cfg.n_vocab, &sp, app->ids, n, &rng,
                                 app->state.probs, app->state.cand);
        produced++;
        if ((uint32_t)next == app->model.tok.eos_id) {
            reason = "stop";
            break;
        }
        app->ids[n++] = next;
        pg_topic_push(&topic, &app->model.tok, next);
        uint32_t tl;
        const uint8_t *tb = pg_tokenizer_token_bytes(&app->model.tok, next, &tl);
        size_t n_out = 0;
        int stopped = pg_textout_push(&to, tb, tl, app->text_out, &n_out);
        show(app, pg_reply_feed(&reply, (const char *)app->text_out, n_out, app->reply_out));
        if (stopped) {
            reason = "stop";
            break;
        }
        if (n >= app->n_ctx) break;
        if (pg_state_eval(&app->state, &next, 1, NULL, &st) != PG_OK) {
            engine_failed = 1;
            break;
        }
    }
    size_t n_out = 0;
    pg_textout_flush(&to, app->text_out, &n_out);
    show(app, pg_reply_feed(&reply, (const char *)app->text_out, n_out, app->reply_out));
    show(app, pg_reply_finish(&reply, strcmp(reason, "length") == 0, 0, app->reply_out));
    if (engine_failed) pg_app_printf(app, "\n[local] engine error: %s", st.msg);
    pg_app_printf(app, "\n(local: %ld tokens, %s)\n", (long)produced, reason);
}

// ---- commands ----

static const char *route_note(pg_route r) {
    switch (r) {
    case PG_ROUTE_TOO_LONG: return "the prompt is longer than the device context";
    case PG_ROUTE_VOCAB: return "the prompt is outside the device vocabulary";
    case PG_ROUTE_SURPRISED: return "the device model finds the prompt unfamiliar";
    default: return "";
    }
}

static void router_cfg(const pg_app *app, pg_router_cfg *rc) {
    pg_router_defaults(rc);
    rc->n_ctx = app->n_ctx;
    rc->min_reply = app->set.route_min_reply;
    rc->max_bytefrac = app->set.route_max_bytefrac;
    rc->max_surprisal = app->set.route_max_surprisal;
}

static void answer(pg_app *app, const char *prompt, int force_cloud, int force_local) {
    char err[200];
    pg_prompt_stats ps;
    if (!*prompt) {
        pg_app_printf(app, "(give a prompt: %s TEXT)\n", force_cloud ? "/cloud" : "/local");
        return;
    }
    if (pg_app_measure(app, prompt, &ps, err, sizeof err)) {
        pg_app_printf(app, "[local] error: %s\n", err);
        return;
    }
    ps.forced = force_cloud;
    pg_router_cfg rc;
    router_cfg(app, &rc);
    pg_route r = force_local ? PG_ROUTE_LOCAL : pg_router_decide(&rc, &ps);
    if (r != PG_ROUTE_LOCAL) {
        if (r != PG_ROUTE_FORCED) pg_app_printf(app, "(to the relay: %s)\n", route_note(r));
        if (relay_answer(app, prompt, err, sizeof err)) return;
        snprintf(app->last_error, sizeof app->last_error, "%s", err);
        if (ps.n_tokens > app->n_ctx - 1) {
            pg_app_printf(app, "[local] (relay unreachable: %s) the prompt does not fit the device context "
                               "(%ld tokens, %ld max); shorten it\n", err, (long)ps.n_tokens, (long)app->n_ctx - 1);
            return;
        }
        pg_app_printf(app, "[local] (relay unreachable: %s; answering on the device)\n", err);
    }
    if (ps.n_tokens > app->n_ctx - 1) {
        pg_app_printf(app, "[local] the prompt does not fit the device context (%ld tokens, %ld max); shorten it\n",
                      (long)ps.n_tokens, (long)app->n_ctx - 1);
        return;
    }
    if (ps.n_tokens == 0) return;
    local_answer(app, ps.n_tokens, prompt);
}

static void cmd_help(pg_app *app) {
    static const char help[] =  // longer than pg_app_printf's buffer: written as is
                  "commands:\n"
                  "  TEXT                 answer TEXT (the router picks the device or the relay)\n"
                  "  /cloud TEXT          ask the relay\n"
                  "  /local TEXT          answer on the device\n"
                  "  /route TEXT          show the router's measurements and decision, no answer\n"
                  "  /set KEY VALUE       change a setting (saved at once); /get [KEY] shows them\n"
                  "  /talk [ARG]          one voice turn through the relay (push-to-talk; ARG: the port's\n"
                  "                       microphone source, e.g. a WAV in the simulator)\n"
                  "  /status              model, context, relay connection\n"
                  "  /help                this text\n";
    out(app, help, sizeof help - 1);
}

static void cmd_get(pg_app *app, const char *key) {
    char val[300];
    if (*key) {
        if (pg_settings_get(&app->set, key, 0, val, sizeof val)) pg_app_printf(app, "unknown setting '%s'\n", key);
        else pg_app_printf(app, "%s = %s\n", key, val);
        return;
    }
    for (int i = 0; pg_settings_key(i); i++) {
        pg_settings_get(&app->set, pg_settings_key(i), 0, val, sizeof val);
        pg_app_printf(app, "%-20s %-28s %s\n", pg_settings_key(i), val, pg_settings_help(i));
    }
}

static void cmd_set(pg_app *app, const char *args) {
    char key[40];
    const char *sp = strchr(args, ' ');
    size_t kl = sp ? (size_t)(sp - args) : strlen(args);
    if (kl == 0 || kl >= sizeof key) {
        pg_app_printf(app, "usage: /set KEY VALUE (/get lists the keys)\n");
        return;
    }
    memcpy(key, args, kl);
    key[kl] = 0;
    const char *value = sp ? sp + 1 : "";
    char err[PG_SETTINGS_ERR];
    pg_settings next = app->set;
    if (pg_settings_set(&next, key, value, err, sizeof err)) {
        pg_app_printf(app, "error: %s\n", err);
        return;
    }
    if (app->port.save_settings && app->port.save_settings(app->port.ctx, &next, err, sizeof err)) {
        pg_app_printf(app, "error: could not save %s: %s\n", key, err);
        return;
    }
    app->set = next;
    if (strncmp(key, "relay.", 6) == 0 || strcmp(key, "device.id") == 0) pg_app_disconnect(app);
    char val[300];
    pg_settings_get(&app->set, key, 0, val, sizeof val);
    pg_app_printf(app, "ok: %s = %s\n", key, val);
}

static void cmd_route(pg_app *app, const char *prompt) {
    char err[200];
    pg_prompt_stats ps;
    if (pg_app_measure(app, prompt, &ps, err, sizeof err)) {
        pg_app_printf(app, "error: %s\n", err);
        return;
    }
    pg_router_cfg rc;
    router_cfg(app, &rc);
    pg_route r = pg_router_decide(&rc, &ps);
    pg_app_printf(app, "route: %s tokens=%ld request=%ld bytefallback=%ld surprisal=%.4f peak=%.4f\n", pg_route_name(r),
                  (long)ps.n_tokens, (long)ps.n_request, (long)ps.n_bytefallback, (double)ps.mean_surprisal,
                  (double)ps.peak_surprisal);
}

static void cmd_status(pg_app *app) {
    const pg_config *c = &app->model.cfg;
    pg_app_printf(app, "platform: %s\nmodel: %lu layers, %lu embd, %lu vocab; context %ld of %lu\n",
                  app->port.platform, (unsigned long)c->n_layer, (unsigned long)c->n_embd, (unsigned long)c->n_vocab,
                  (long)app->n_ctx, (unsigned long)c->n_ctx);
    const char *target = app->set.relay_url[0] ? app->set.relay_url : app->set.relay_ota[0] ? app->set.relay_ota : "(none)";
    pg_app_printf(app, "relay: %s, %s%s%s\n", target, app->net_open && app->ws.open ? "connected" : "not connected",
                  app->last_error[0] ? "; last failure: " : "", app->last_error);
}

int pg_app_handle_line(pg_app *app, const char *line) {
    while (*line == ' ' || *line == '\t' || *line == '\r') line++;
    if (!*line) {
        pg_app_printf(app, "(an empty line: type a request, or /help for the commands)\n");
        return 0;
    }
    if (line[0] != '/') {
        answer(app, line, 0, 0);
        return 0;
    }
    char cmd[16];
    size_t k = 0;
    while (line[k] && line[k] != ' ' && k + 1 < sizeof cmd) {
        cmd[k] = line[k];
        k++;
    }
    cmd[k] = 0;
    const char *args = line + k;
    while (*args == ' ') args++;
    if (strcmp(cmd, "/cloud") == 0) answer(app, args, 1, 0);
    else if (strcmp(cmd, "/local") == 0) answer(app, args, 0, 1);
    else if (strcmp(cmd, "/route") == 0) cmd_route(app, args);
    else if (strcmp(cmd, "/set") == 0) cmd_set(app, args);
    else if (strcmp(cmd, "/get") == 0) cmd_get(app, args);
    else if (strcmp(cmd, "/status") == 0) cmd_status(app);
    else if (strcmp(cmd, "/talk") == 0) pg_app_voice(app, args);
    else if (strcmp(cmd, "/help") == 0) cmd_help(app);
    else if (strcmp(cmd, "/quit") == 0 || strcmp(cmd, "/exit") == 0) return 1;
    else pg_app_printf(app, "unknown command %s; /help lists them\n", cmd);
    return 0;
}
