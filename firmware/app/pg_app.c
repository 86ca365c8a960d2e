// pocketgpt app: console commands, routing, local generation and the relay client (see pg_app.h).
#include "pg_app.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pg_json.h"
#include "relay_proto.h"

#define N_BATCH 8
#define VOICE_MIN_WAIT_MS 15000  // the least a voice turn waits on the relay (relay.timeout_ms when larger)
#define VOICE_QUEUE_BYTES 16384
#define VOICE_BURST 32          // relay messages handled between two microphone frames, at most  // received Opus packets: ~5 s at 24 kHz / 60 ms; the relay paces at real time

void pg_app_printf(pg_app *app, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    app->port.out(app->port.ctx, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static void out(pg_app *app, const char *s, size_t n) { app->port.out(app->port.ctx, s, n); }

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

// ---- relay client ----

void pg_app_disconnect(pg_app *app) {
    if (app->net_open) {
        pg_ws_close(&app->ws);
        app->port.net_close(app->port.ctx, &app->net);
    }
    app->net_open = 0;
}

static uint32_t app_random(void *ctx) {
    pg_app *app = ctx;
    return app->port.random(app->port.ctx);
}

// The XiaoZhi-style configuration call: POST the device's info, read websocket.url and token.
static int relay_configure(pg_app *app, char *url, size_t url_cap, char *token, size_t token_cap, char *err,
                           size_t err_cap) {
    pg_url u;
    if (pg_url_parse(app->set.relay_ota, &u)) {
        // a value is quoted at most 120 characters: an error is one line in a caller's buffer
        snprintf(err, err_cap, "relay.ota '%.120s' is not a usable URL", app->set.relay_ota);
        return -1;
    }
    pg_transport t;
    if (app->port.net_open(app->port.ctx, u.host, u.port, u.tls, app->set.relay_timeout_ms, &t, err, err_cap))
        return -1;
    char headers[160], body[320];
    snprintf(headers, sizeof headers, "Device-Id: %s\r\nClient-Id: pocketgpt-%s\r\nUser-Agent: pocketgpt-device/1\r\n",
             app->set.device_id, app->set.device_id);
    snprintf(body, sizeof body,
             "{\"application\":{\"name\":\"pocketgpt\",\"version\":\"1.0.0\"},\"mac_address\":\"%s\","
             "\"chip_model_name\":\"%s\"}",
             app->set.device_id, app->port.platform);
    int status = 0;
    int rc = pg_http_post(&t, &u, headers, body, app->set.relay_timeout_ms, &status, app->text, PG_APP_NET_BUF, err,
                          err_cap);
    app->port.net_close(app->port.ctx, &t);
    if (rc) return -1;
    pgj_val root, ws, v;
    if (pgj_parse(app->text, strlen(app->text), &root) != PGJ_OBJECT) {
        snprintf(err, err_cap, "the configuration URL answered HTTP %d without a JSON object", status);
        return -1;
    }
    if (status != 200) {
        pgj_val e, m;
        char msg[160] = "";
        if (pgj_get(&root, "error", &e) && pgj_get(&e, "message", &m)) pgj_string(&m, msg, sizeof msg, NULL);
        snprintf(err, err_cap, "the configuration URL refused device %s: HTTP %d %s", app->set.device_id, status, msg);
        return -1;
    }
    pgj_val act;
    if (pgj_get(&root, "activation", &act) && pgj_get(&act, "code", &v)) {  // not paired yet: show the code
        char code[16] = "";
        pgj_string(&v, code, sizeof code, NULL);
        pg_app_printf(app, "pairing code %s: on the relay's machine run 'pocketgpt token pair %s'\n", code,
                      code);
        snprintf(err, err_cap, "this device is not paired with the relay yet (code %s)", code);
        return -1;
    }
    if (!pgj_get(&root, "websocket", &ws) || !pgj_get(&ws, "url", &v) || pgj_string(&v, url, url_cap, NULL)) {
        snprintf(err, err_cap, "the configuration reply has no websocket.url");
        return -1;
    }
    token[0] = 0;
    if (pgj_get(&ws, "token", &v)) pgj_string(&v, token, token_cap, NULL);
    if (token[0] && strcmp(token, app->set.relay_token) != 0) {
        // the relay hands a token out once: keep it (saved) for every later connection
        char save_err[120];
        snprintf(app->set.relay_token, sizeof app->set.relay_token, "%s", token);
        if (app->port.save_settings && app->port.save_settings(app->port.ctx, &app->set, save_err, sizeof save_err))
            pg_app_printf(app, "[relay] could not save the relay token: %s\n", save_err);
    } else if (!token[0]) {
        snprintf(token, token_cap, "%s", app->set.relay_token);
    }
    return 0;
}

static int relay_connect(pg_app *app, char *err, size_t err_cap) {
    if (app->net_open && app->ws.open) return 0;
    pg_app_disconnect(app);
    if (app->port.net_ready && !app->port.net_ready(app->port.ctx, err, err_cap)) return -1;
    char url[256], token[160];
    if (app->set.relay_url[0]) {
        snprintf(url, sizeof url, "%s", app->set.relay_url);
        snprintf(token, sizeof token, "%s", app->set.relay_token);
    } else if (app->set.relay_ota[0]) {
        if (relay_configure(app, url, sizeof url, token, sizeof token, err, err_cap)) return -1;
    } else {
        snprintf(err, err_cap, "no relay configured (/set relay.url ws://HOST:8000/xiaozhi/v1/ or /set relay.ota URL)");
        return -1;
    }
    pg_url u;
    if (pg_url_parse(url, &u) || (strcmp(u.scheme, "ws") && strcmp(u.scheme, "wss"))) {
        snprintf(err, err_cap, "relay URL '%.120s' is not a ws:// or wss:// URL", url);
        return -1;
    }
    if (app->port.net_open(app->port.ctx, u.host, u.port, u.tls, app->set.relay_timeout_ms, &app->net, err, err_cap))
        return -1;
    app->net_open = 1;
    pg_ws_init(&app->ws, app->net, app->ws_rx, app->ws_msg, PG_APP_NET_BUF, app_random, app);
    char headers[320];
    int hn = snprintf(headers, sizeof headers, "Protocol-Version: 1\r\nDevice-Id: %s\r\nClient-Id: pocketgpt-%s\r\n",
                      app->set.device_id, app->set.device_id);
    if (token[0]) snprintf(headers + hn, sizeof headers - (size_t)hn, "Authorization: Bearer %s\r\n", token);
    if (pg_ws_handshake(&app->ws, &u, headers, app->set.relay_timeout_ms, err, err_cap)) {
        pg_app_disconnect(app);
        return -1;
    }
    pg_proto_hello(app->frame, PG_APP_NET_BUF);
    if (pg_ws_send_text(&app->ws, app->frame, strlen(app->frame))) {
        snprintf(err, err_cap, "the relay closed the connection after the handshake");
        pg_app_disconnect(app);
        return -1;
    }
    for (;;) {
        const uint8_t *data;
        size_t n;
        pg_ws_event ev = pg_ws_recv(&app->ws, app->set.relay_timeout_ms, &data, &n);
        if (ev != PG_WS_TEXT && ev != PG_WS_BINARY) {
            snprintf(err, err_cap, "no hello from the relay (%s)", ev == PG_WS_TIMEOUT ? "timeout" : "connection closed");
            pg_app_disconnect(app);
            return -1;
        }
        if (ev != PG_WS_TEXT) continue;
        pg_relay_msg m;
        pg_msg_type t = pg_proto_parse((const char *)data, n, &m, app->text, PG_APP_NET_BUF);
        if (t == PG_MSG_ERROR) {
            // the relay's message is cut: an error is one line in a caller's buffer
            snprintf(err, err_cap, "the relay answered the hello with error %s: %.120s", m.code, m.message);
            pg_app_disconnect(app);
            return -1;
        }
        if (t != PG_MSG_HELLO) continue;
        snprintf(app->session_id, sizeof app->session_id, "%s", m.session_id);
        snprintf(app->down_format, sizeof app->down_format, "%s", m.audio_format);
        app->down_rate = m.audio_rate > 0 ? (int32_t)m.audio_rate : PG_AUDIO_DOWN_RATE;
        app->down_frame_ms = m.audio_frame_ms > 0 ? (int32_t)m.audio_frame_ms : PG_AUDIO_DOWN_FRAME_MS;
        app->relay_ext = m.extension;  // a stock XiaoZhi server: voice works, text prompts do not
        return 0;
    }
}

// 1: answered (or the relay reported an error, shown); 0: relay not reachable before any output
// (err says why; the caller answers locally).
static int relay_answer(pg_app *app, const char *prompt, char *err, size_t err_cap) {
    for (int attempt = 0; attempt < 2; attempt++) {
        int was_open = app->net_open && app->ws.open;
        if (relay_connect(app, err, err_cap)) return 0;
        if (!app->relay_ext) {
            snprintf(err, err_cap, "the relay does not offer the pocketgpt text extension");
            return 0;
        }
        char id[16];
        snprintf(id, sizeof id, "d%lu", (unsigned long)++app->request_no);
        // the relay puts the request in the model's chat template and stops the reply at its end
        pg_gen_request r = {.id = id, .prompt = prompt, .max_tokens = app->set.gen_max_tokens, .top_k = app->set.gen_top_k};
        if (app->set.gen_temperature <= 0.0f) {
            r.has_greedy = 1;
            r.greedy = 1;
        } else {
            r.has_temperature = 1;
            r.temperature = app->set.gen_temperature;
            r.has_top_p = 1;
            r.top_p = app->set.gen_top_p;
        }
        if (app->set.gen_seed >= 0) {
            r.has_seed = 1;
            r.seed = app->set.gen_seed;
        }
        if (pg_proto_generate(&r, app->frame, PG_APP_NET_BUF)) {
            snprintf(err, err_cap, "the prompt is too long for a relay frame");
            return 0;
        }
        if (pg_ws_send_text(&app->ws, app->frame, strlen(app->frame))) {
            pg_app_disconnect(app);
            if (was_open) continue;  // a stale connection (relay restarted, idle close): once more
            snprintf(err, err_cap, "could not send to the relay");
            return 0;
        }
        int started = 0;
        for (;;) {
            const uint8_t *data;
            size_t n;
            pg_ws_event ev = pg_ws_recv(&app->ws, app->set.relay_timeout_ms, &data, &n);
            if (ev == PG_WS_TIMEOUT) {
                char ab[96];
                pg_proto_abort(id, ab, sizeof ab);
                pg_ws_send_text(&app->ws, ab, strlen(ab));
                if (!started) {
                    snprintf(err, err_cap, "the relay did not answer within %ld ms", (long)app->set.relay_timeout_ms);
                    pg_app_disconnect(app);
                    return 0;
                }
                pg_app_printf(app, "\n[relay] (no reply for %ld ms: aborted)\n", (long)app->set.relay_timeout_ms);
                return 1;
            }
            if (ev == PG_WS_CLOSED || ev == PG_WS_ERROR) {
                int code = app->ws.close_code;
                pg_app_disconnect(app);
                if (!started) {
                    if (was_open && attempt == 0) break;  // stale connection: reconnect once
                    snprintf(err, err_cap, "the relay closed the connection (code %d)", code);
                    return 0;
                }
                pg_app_printf(app, "\n[relay] (connection lost, code %d)\n", code);
                return 1;
            }
            if (ev != PG_WS_TEXT) continue;
            pg_relay_msg m;
            pg_msg_type t = pg_proto_parse((const char *)data, n, &m, app->text, PG_APP_NET_BUF);
            if (t == PG_MSG_DELTA && strcmp(m.id, id) == 0) {
                if (!started) out(app, "[relay] ", 8);
                started = 1;
                out(app, m.text, m.text_len);
            } else if (t == PG_MSG_DONE && strcmp(m.id, id) == 0) {
                if (!started) out(app, "[relay] ", 8);
                pg_app_printf(app, "\n(relay: %lld tokens, %s)\n", m.tokens, m.reason);
                return 1;
            } else if (t == PG_MSG_ERROR && (m.id[0] == 0 || strcmp(m.id, id) == 0)) {
                pg_app_printf(app, "%s[relay] error %s: %s\n", started ? "\n" : "", m.code, m.message);
                return 1;
            }
        }
    }
    snprintf(err, err_cap, "the relay connection failed twice");
    return 0;
}

// ---- voice ----

typedef struct {
    uint32_t t_press, t_release, t_first_audio;  // ms on the port's clock (t_* 0: not yet)
    uint32_t up_packets, down_packets, bad_packets;
    uint64_t played;     // reply samples handed to the speaker
    int got_first;
} voice_stats;

// A transcript or a sentence on its own line (any length: not through pg_app_printf's buffer).
static void voice_line(pg_app *app, const char *label, const pg_relay_msg *m) {
    out(app, label, strlen(label));
    out(app, m->text, m->text_len);
    out(app, "\n", 1);
}

static int voice_text(pg_app *app, const char *frame) { return pg_ws_send_text(&app->ws, frame, strlen(frame)); }

// Decode queued packets into the speaker: as many as it takes now, or (all) every one, waiting on it.
static void voice_play(pg_app *app, voice_stats *vs, int all) {
    const pg_audio_port *a = app->port.audio;
    void *ctx = app->port.ctx;
    size_t frame = (size_t)app->down_rate * (size_t)app->down_frame_ms / 1000;
    while (app->play_q.count) {
        if (!all && a->speaker_room(ctx) < frame) return;
        size_t n = pg_audio_queue_pop(&app->play_q, app->vpkt, PG_AUDIO_MAX_PACKET);
        int k = n ? a->decode(ctx, app->vpkt, n, app->vpcm, PG_AUDIO_MAX_DECODED) : -1;
        if (k < 0) {
            vs->bad_packets++;
            continue;
        }
        a->speaker_write(ctx, app->vpcm, (size_t)k, (int)app->down_rate);
        vs->played += (uint64_t)k;
    }
}

// Perform a step's actions (order: stop listening, abort, flush, start listening, play). -1 when
// the connection failed on the way.
static int voice_do(pg_app *app, pg_voice *v, unsigned act, const uint8_t *pkt, size_t n, voice_stats *vs) {
    const pg_audio_port *a = app->port.audio;
    void *ctx = app->port.ctx;
    uint32_t now = a->now_ms(ctx);
    int bad = 0;
    if (act & PG_VACT_LISTEN_STOP) {
        pg_audio_listen_stop(app->session_id, app->frame, PG_APP_NET_BUF);
        bad |= voice_text(app, app->frame);
    }
    if ((act & PG_VACT_MIC_OFF) && !vs->t_release) vs->t_release = now;
    if (act & PG_VACT_SEND_ABORT) {
        // XiaoZhi devices give this reason when the user talks over the reply
        pg_audio_abort(app->session_id, (act & PG_VACT_LISTEN_START) ? "wake_word_detected" : NULL, app->frame,
                       PG_APP_NET_BUF);
        bad |= voice_text(app, app->frame);
    }
    if (act & PG_VACT_FLUSH) {
        pg_audio_queue_clear(&app->play_q);
        a->speaker_flush(ctx);
    }
    if (act & PG_VACT_LISTEN_START) {
        pg_audio_listen_start(app->session_id, v->mode, app->frame, PG_APP_NET_BUF);
        bad |= voice_text(app, app->frame);
        vs->t_press = now;
        vs->t_release = 0;
        vs->got_first = 0;
    }
    if (act & PG_VACT_PLAY) {
        vs->down_packets++;
        if (!vs->got_first) {
            vs->got_first = 1;
            vs->t_first_audio = now;
        }
        if (pg_audio_queue_push(&app->play_q, pkt, n)) vs->bad_packets++;
    }
    return bad ? -1 : 0;
}

// One message from the relay during a turn: the state machine's event for it, performed. Returns
// the step's actions (0 for messages that are not voice events).
static unsigned voice_message(pg_app *app, pg_voice *v, pg_ws_event ev, const uint8_t *data, size_t n,
                              voice_stats *vs, int *lost) {
    unsigned act;
    if (ev == PG_WS_BINARY) {
        act = pg_voice_step(v, PG_VEV_AUDIO);
        if (n == 0 || n > PG_AUDIO_MAX_PACKET) act &= ~(unsigned)PG_VACT_PLAY;  // not an Opus packet we take
        if (voice_do(app, v, act, data, n, vs)) *lost = 1;
        return act;
    }
    pg_relay_msg m;
    pg_msg_type t = pg_proto_parse((const char *)data, n, &m, app->text, PG_APP_NET_BUF);
    pg_voice_event vev;
    if (t == PG_MSG_STT) {
        voice_line(app, "[you] ", &m);
        vev = PG_VEV_STT;
    } else if (t == PG_MSG_TTS && strcmp(m.state, "start") == 0) {
        vev = PG_VEV_TTS_START;
    } else if (t == PG_MSG_TTS && strcmp(m.state, "stop") == 0) {
        vev = PG_VEV_TTS_STOP;
    } else if (t == PG_MSG_TTS && strcmp(m.state, "sentence_start") == 0) {
        if (v->state == PG_VOICE_SPEAKING && !v->stale) voice_line(app, "[relay] ", &m);
        return 0;
    } else if (t == PG_MSG_ERROR) {
        pg_app_printf(app, "[relay] error %s: %s\n", m.code, m.message);
        vev = PG_VEV_ERROR;
    } else {
        return 0;  // llm emotion, our text extension, anything newer
    }
    act = pg_voice_step(v, vev);
    if (voice_do(app, v, act, NULL, 0, vs)) *lost = 1;
    return act;
}

void pg_app_voice(pg_app *app, const char *arg) {
    const pg_audio_port *a = app->port.audio;
    void *ctx = app->port.ctx;
    char err[200];
    if (!a) {
        pg_app_printf(app, "(voice: %s has no microphone and speaker)\n", app->port.platform);
        return;
    }
    int was_open = app->net_open && app->ws.open;
    if (relay_connect(app, err, sizeof err)) {
        snprintf(app->last_error, sizeof app->last_error, "%s", err);
        pg_app_printf(app, "[voice] the relay is unreachable (%s); voice needs the relay\n", err);
        return;
    }
    if (!was_open) app->voice_stale = 0;  // a new connection owes nothing
    if (app->down_format[0] && strcmp(app->down_format, "opus") != 0) {
        pg_app_printf(app, "[voice] the relay's audio is '%s'; this device plays opus only\n", app->down_format);
        return;
    }
    if (a->encoder_open(ctx, PG_AUDIO_UP_RATE, PG_AUDIO_UP_FRAME_MS, err, sizeof err) ||
        a->decoder_open(ctx, (int)app->down_rate, (int)app->down_frame_ms, err, sizeof err)) {
        pg_app_printf(app, "[voice] codec: %s\n", err);
        return;
    }
    if (a->mic_arm(ctx, arg, err, sizeof err)) {
        pg_app_printf(app, "[voice] %s\n", err);
        return;
    }
    pg_voice v;
    pg_voice_init(&v, app->listen_mode);
    v.stale = app->voice_stale;
    voice_stats vs;
    memset(&vs, 0, sizeof vs);
    pg_audio_queue_clear(&app->play_q);
    app->last_first_audio_ms = -1;
    int pressed = 1, lost = 0;
    unsigned act = pg_voice_step(&v, PG_VEV_PRESS);
    if (voice_do(app, &v, act, NULL, 0, &vs)) lost = 1;
    uint32_t t_heard = a->now_ms(ctx);  // the last message from the relay (for the reply timeout)
    // recognition + the first sentence + its synthesis take longer than a text reply's first token
    uint32_t wait_ms = app->set.relay_timeout_ms > VOICE_MIN_WAIT_MS ? (uint32_t)app->set.relay_timeout_ms
                                                                     : VOICE_MIN_WAIT_MS;
    while (!lost && !(act & PG_VACT_END)) {
        int p = a->ptt_pressed(ctx) ? 1 : 0;
        if (p != pressed) {
            pressed = p;
            // the end of speech: the button's release (auto mode keeps streaming until the relay's VAD)
            if (!p && v.state == PG_VOICE_LISTENING && !vs.t_release) vs.t_release = a->now_ms(ctx);
            act = pg_voice_step(&v, p ? PG_VEV_PRESS : PG_VEV_RELEASE);
            if (voice_do(app, &v, act, NULL, 0, &vs)) lost = 1;
            t_heard = a->now_ms(ctx);  // the relay's wait starts over at every press and release
            continue;
        }
        if (v.mic_on) {  // one 60 ms frame: paced by the microphone itself
            int k = a->mic_read(ctx, app->vmic, PG_AUDIO_UP_SAMPLES);
            int nb = k == PG_AUDIO_UP_SAMPLES ? a->encode(ctx, app->vmic, PG_AUDIO_UP_SAMPLES, app->vpkt,
                                                          PG_AUDIO_MAX_PACKET)
                                              : -1;
            if (nb < 0) {
                pg_app_printf(app, "[voice] the microphone failed; turn cancelled\n");
                act = pg_voice_step(&v, PG_VEV_ABORT);
                voice_do(app, &v, act, NULL, 0, &vs);
                break;
            }
            if (pg_ws_send_binary(&app->ws, app->vpkt, (size_t)nb)) {
                lost = 1;
                break;
            }
            vs.up_packets++;
        }
        // everything the relay sent meanwhile (while the microphone streams, without waiting)
        for (int burst = 0; burst < VOICE_BURST && !lost && !(act & PG_VACT_END); burst++) {
            const uint8_t *data;
            size_t n;
            pg_ws_event ev = pg_ws_recv(&app->ws, v.mic_on || burst ? 0 : 10, &data, &n);
            uint32_t now = a->now_ms(ctx);
            if (ev == PG_WS_CLOSED || ev == PG_WS_ERROR) {
                lost = 1;
                break;
            }
            if (ev == PG_WS_TIMEOUT) {
                // waiting on the relay: a reply, or (auto, realtime, the button up) the end of the utterance
                int waiting = v.state == PG_VOICE_THINKING || v.state == PG_VOICE_SPEAKING ||
                              (v.state == PG_VOICE_LISTENING && v.mode != PG_LISTEN_MANUAL && !pressed);
                if (waiting && now - t_heard > wait_ms) {
                    pg_app_printf(app, "[voice] (nothing from the relay for %lu ms: turn ended)\n",
                                  (unsigned long)wait_ms);
                    act = pg_voice_step(&v, PG_VEV_TIMEOUT);
                    if (voice_do(app, &v, act, NULL, 0, &vs)) lost = 1;
                }
                break;
            }
            t_heard = now;
            act = voice_message(app, &v, ev, data, n, &vs, &lost);
        }
        voice_play(app, &vs, 0);
    }
    if (lost) {
        int code = app->ws.close_code;
        pg_app_disconnect(app);
        act = pg_voice_step(&v, PG_VEV_CLOSED);
        pg_app_printf(app, "[voice] (connection lost, code %d)\n", code);
    }
    app->voice_stale = lost ? 0 : v.stale;
    if (!(act & PG_VACT_FLUSH)) voice_play(app, &vs, 1);  // play out what came before tts stop
    uint32_t spoke = vs.t_release >= vs.t_press ? vs.t_release - vs.t_press : 0;
    long first = vs.got_first && vs.t_release && vs.t_first_audio >= vs.t_release ? (long)(vs.t_first_audio - vs.t_release) : -1;
    app->last_first_audio_ms = (int32_t)first;
    double reply_s = app->down_rate > 0 ? (double)vs.played / (double)app->down_rate : 0.0;
    pg_app_printf(app, "(voice: %s mode, %lu ms spoken in %lu packets; reply %.2f s in %lu packets", pg_listen_mode_name(v.mode),
                  (unsigned long)spoke, (unsigned long)vs.up_packets, reply_s, (unsigned long)vs.down_packets);
    if (first >= 0) pg_app_printf(app, "; first reply audio %ld ms after the end of speech", first);
    if (v.n_aborts) pg_app_printf(app, "; %lu abort%s", (unsigned long)v.n_aborts, v.n_aborts == 1 ? "" : "s");
    if (vs.bad_packets) pg_app_printf(app, "; %lu bad packets", (unsigned long)vs.bad_packets);
    pg_app_printf(app, ")\n");
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
