// pocketgpt app: the relay client (see pg_app.h): the XiaoZhi-style configuration call, the
// websocket to the relay and a text turn over it. The frames themselves are relay_proto.c's.
#include <stdio.h>
#include <string.h>

#include "app_internal.h"
#include "pg_json.h"
#include "relay_proto.h"

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

int relay_connect(pg_app *app, char *err, size_t err_cap) {
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
int relay_answer(pg_app *app, const char *prompt, char *err, size_t err_cap) {
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
