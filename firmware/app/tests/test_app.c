// C unit tests of the portable device app (run under ASan + UBSan by tests/test_firmware_c.py):
// the relay protocol against docs/protocol_vectors.json, the chat layout and reply shaping against
// docs/chat_vectors.json (both the relay's own vectors), JSON, router, settings, console editing,
// SHA-1/base64, and the websocket client over an in-memory transport.
//   test_app [protocol_vectors.json [chat_vectors.json]]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "console.h"
#include "pg_json.h"
#include "pg_ws.h"
#include "relay_proto.h"
#include "router.h"
#include "settings.h"
#include "tokenizer.h"
#include "check.h"  // CHECK, failures, checks

static char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, f);
    buf[*n] = 0;
    fclose(f);
    return buf;
}

static void str_of(const pgj_val *obj, const char *key, char *out, size_t cap) {
    pgj_val v;
    out[0] = 0;
    if (pgj_get(obj, key, &v)) pgj_string(&v, out, cap, NULL);
}

// A vector file read and parsed into root (a JSON object); NULL (a failed check) when it cannot be.
// The caller frees the text root points into.
static char *read_vectors(const char *path, pgj_val *root) {
    size_t n;
    char *doc = read_file(path, &n);
    CHECK(doc != NULL);
    if (doc) CHECK(pgj_parse(doc, n, root) == PGJ_OBJECT);
    return doc;
}

static void test_vectors(const char *path) {
    pgj_val root, list, vec, fields, v;
    char *doc = read_vectors(path, &root);
    if (!doc) return;
    CHECK(pgj_get(&root, "client", &list));
    int built = 0, parsed = 0;
    static char wire[4096], mine[4096], text[4096];
    for (size_t i = 0; pgj_at(&list, i, &vec); i++) {
        char name[128];
        str_of(&vec, "name", name, sizeof name);
        str_of(&vec, "wire", wire, sizeof wire);
        if (strcmp(name, "hello from a pocketgpt device") == 0) {
            CHECK(pg_proto_hello(mine, sizeof mine) == 0);
            CHECK(strcmp(mine, wire) == 0);
            built++;
        }
        if (!pgj_get(&vec, "fields", &fields)) continue;
        char id[80], prompt[512];
        str_of(&fields, "id", id, sizeof id);
        if (!pgj_get(&fields, "prompt", &v)) {  // abort
            CHECK(pg_proto_abort(id, mine, sizeof mine) == 0);
        } else {
            pgj_string(&v, prompt, sizeof prompt, NULL);
            pg_gen_request r = {.id = id, .prompt = prompt, .max_tokens = -1, .top_k = -1};
            long long x;
            double d;
            char stop_text[4][64];
            const char *stops[4];
            if (pgj_get(&fields, "max_tokens", &v) && pgj_int(&v, &x) == 0) r.max_tokens = (int32_t)x;
            if (pgj_get(&fields, "temperature", &v) && pgj_number(&v, &d) == 0) r.has_temperature = 1, r.temperature = d;
            if (pgj_get(&fields, "top_k", &v) && pgj_int(&v, &x) == 0) r.top_k = (int32_t)x;
            if (pgj_get(&fields, "top_p", &v) && pgj_number(&v, &d) == 0) r.has_top_p = 1, r.top_p = d;
            if (pgj_get(&fields, "seed", &v) && pgj_int(&v, &x) == 0) r.has_seed = 1, r.seed = x;
            if (pgj_get(&fields, "greedy", &v)) r.has_greedy = 1, r.greedy = v.kind == PGJ_TRUE;
            if (pgj_get(&fields, "stop", &v)) {
                pgj_val s;
                for (size_t k = 0; k < 4 && pgj_at(&v, k, &s); k++) {
                    pgj_string(&s, stop_text[k], sizeof stop_text[k], NULL);
                    stops[k] = stop_text[k];
                    r.n_stop = (int)k + 1;
                }
                r.stop = stops;
            }
            CHECK(pg_proto_generate(&r, mine, sizeof mine) == 0);
        }
        if (strcmp(mine, wire) != 0) fprintf(stderr, "vector '%s':\n  want %s\n  got  %s\n", name, wire, mine);
        CHECK(strcmp(mine, wire) == 0);
        built++;
    }
    CHECK(pgj_get(&root, "server", &list));
    for (size_t i = 0; pgj_at(&list, i, &vec); i++) {
        pgj_val b;
        char fn[32], want[512];
        str_of(&vec, "wire", wire, sizeof wire);
        CHECK(pgj_get(&vec, "build", &b));
        str_of(&b, "fn", fn, sizeof fn);
        pg_relay_msg m;
        pg_msg_type t = pg_proto_parse(wire, strlen(wire), &m, text, sizeof text);
        str_of(&b, "session_id", want, sizeof want);
        CHECK(strcmp(m.session_id, want) == 0);
        str_of(&b, "request_id", want, sizeof want);
        CHECK(strcmp(m.id, want) == 0);
        str_of(&b, "text", want, sizeof want);
        CHECK(strcmp(m.text, want) == 0 && m.text_len == strlen(want));
        if (strcmp(fn, "server_hello") == 0) {
            CHECK(t == PG_MSG_HELLO && m.transport_ok);
            CHECK(m.extension == pgj_get(&b, "extension", &v));
            if (m.extension) CHECK(m.relay_max_tokens == 512);
        } else if (strcmp(fn, "stt") == 0) {
            CHECK(t == PG_MSG_STT);
        } else if (strcmp(fn, "tts") == 0) {
            str_of(&b, "state", want, sizeof want);
            CHECK(t == PG_MSG_TTS && strcmp(m.state, want) == 0);
        } else if (strcmp(fn, "delta") == 0) {
            CHECK(t == PG_MSG_DELTA);
        } else if (strcmp(fn, "done") == 0) {
            long long x = -1;
            str_of(&b, "reason", want, sizeof want);
            CHECK(t == PG_MSG_DONE && strcmp(m.reason, want) == 0);
            pgj_get(&b, "tokens", &v), pgj_int(&v, &x);
            CHECK(m.tokens == x);
            pgj_get(&b, "prompt_tokens", &v), pgj_int(&v, &x);
            CHECK(m.prompt_tokens == x);
        } else if (strcmp(fn, "error") == 0) {
            CHECK(t == PG_MSG_ERROR);
            str_of(&b, "code", want, sizeof want);
            CHECK(strcmp(m.code, want) == 0);
            str_of(&b, "message", want, sizeof want);
            CHECK(strcmp(m.message, want) == 0);
        } else {
            CHECK(!"unknown build fn in the vectors");
        }
        parsed++;
    }
    printf("protocol vectors: %d client frames built, %d server frames parsed\n", built, parsed);
    CHECK(built >= 4 && parsed >= 10);
    free(doc);
}

static void test_json(void) {
    const char *bad[] = {"", "{", "{\"a\":}", "[1,]", "{\"a\" 1}", "\"\\x\"", "01", "{\"a\":1}x", "tru", "\"a\nb\"",
                         "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(pgj_parse(bad[i], strlen(bad[i]), NULL) == PGJ_NONE);
    const char *doc = " { \"a\" : [1, {\"b\": \"x\"}], \"s\": \"\\u00e9\\ud83d\\ude42\\n\\\"\", \"a\": 2, \"n\": -1.5e2 } ";
    pgj_val root, v;
    CHECK(pgj_parse(doc, strlen(doc), &root) == PGJ_OBJECT);
    long long x;
    CHECK(pgj_get(&root, "a", &v) && pgj_int(&v, &x) == 0 && x == 2);  // the last duplicate, like Python
    char s[32];
    CHECK(pgj_get(&root, "s", &v) && pgj_string(&v, s, sizeof s, NULL) == 0);
    CHECK(strcmp(s, "\xc3\xa9\xf0\x9f\x99\x82\n\"") == 0);
    CHECK(pgj_string(&v, s, 4, NULL) == -1);  // does not fit: refused, never cut
    double d;
    CHECK(pgj_get(&root, "n", &v) && pgj_number(&v, &d) == 0 && d == -150.0 && pgj_int(&v, &x) == -1);
    CHECK(!pgj_get(&root, "missing", &v));
    char buf[64];
    pgj_writer w;
    pgj_init(&w, buf, sizeof buf);
    pgj_obj_begin(&w);
    pgj_kv_str(&w, "t", "a\x01\tb");
    pgj_kv_num(&w, "x", 0.1);
    pgj_kv_num(&w, "y", 1.0);
    pgj_obj_end(&w);
    CHECK(pgj_finish(&w) == 0 && strcmp(buf, "{\"t\":\"a\\u0001\\tb\",\"x\":0.1,\"y\":1.0}") == 0);
    pgj_init(&w, buf, 8);
    pgj_kv_str(&w, "long", "does not fit");
    CHECK(pgj_finish(&w) == -1);
    // malformed relay frames are INVALID, unknown types OTHER
    pg_relay_msg m;
    char text[8];
    CHECK(pg_proto_parse("[1]", 3, &m, text, sizeof text) == PG_MSG_INVALID);
    CHECK(pg_proto_parse("{\"type\":3}", 10, &m, text, sizeof text) == PG_MSG_INVALID);
    CHECK(pg_proto_parse("{\"type\":\"alert\"}", 16, &m, text, sizeof text) == PG_MSG_OTHER);
    const char *big = "{\"type\":\"pg.delta\",\"id\":\"r\",\"text\":\"longer than eight\"}";
    CHECK(pg_proto_parse(big, strlen(big), &m, text, sizeof text) == PG_MSG_INVALID);
}

static void test_router(void) {
    pg_router_cfg c;
    pg_router_defaults(&c);
    c.n_ctx = 128;
    c.min_reply = 16;
    c.max_surprisal = 6.0f;
    pg_prompt_stats s = {.n_tokens = 16, .n_request = 10, .n_bytefallback = 0, .mean_surprisal = 1.0f};
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_LOCAL);
    s.forced = 1;
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_FORCED);
    s.forced = 0;
    s.n_tokens = 113;
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_TOO_LONG);
    s.n_tokens = 112;
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_LOCAL);
    s.n_tokens = 16, s.n_bytefallback = 4;
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_VOCAB);
    s.n_bytefallback = 3, s.mean_surprisal = 6.5f;
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_LOCAL);  // the peak decides, not the mean
    s.peak_surprisal = 6.5f;
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_SURPRISED);
    c.max_surprisal = 0.0f;  // off
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_LOCAL);
    s.n_request = 3, s.n_bytefallback = 3, c.max_surprisal = 6.0f;  // too short to judge
    CHECK(pg_router_decide(&c, &s) == PG_ROUTE_LOCAL);
    float top[PG_ROUTER_PEAK_K];
    int32_t n_top = 0;
    const float seen[] = {1.0f, 9.0f, 2.0f, 7.0f, 7.0f, 3.0f};
    CHECK(pg_router_peak(top, n_top) == 0.0f);
    pg_router_peak_add(top, &n_top, 4.0f);
    CHECK(n_top == 1 && pg_router_peak(top, n_top) == 4.0f);  // fewer than k: their mean
    n_top = 0;
    for (int i = 0; i < 6; i++) pg_router_peak_add(top, &n_top, seen[i]);
    CHECK(n_top == PG_ROUTER_PEAK_K && top[0] == 9.0f && top[1] == 7.0f && top[2] == 7.0f);
    CHECK(pg_router_peak(top, n_top) == 23.0f / 3.0f);
    pg_settings set;
    pg_settings_defaults(&set);
    pg_router_defaults(&c);  // one place for the defaults: the settings take the router's
    CHECK(set.route_max_surprisal == c.max_surprisal && set.route_max_bytefrac == c.max_bytefrac &&
          set.route_min_reply == c.min_reply);
    CHECK(pg_router_is_bytefallback((const uint8_t *)"q", 1) && pg_router_is_bytefallback((const uint8_t *)"\xe4", 1));
    CHECK(!pg_router_is_bytefallback((const uint8_t *)" ", 1) && !pg_router_is_bytefallback((const uint8_t *)"the", 3));
}

static void test_settings(void) {
    pg_settings s;
    char err[PG_SETTINGS_ERR], v[300];
    pg_settings_defaults(&s);
    CHECK(pg_settings_set(&s, "gen.top_k", "12", err, sizeof err) == 0 && s.gen_top_k == 12);
    CHECK(pg_settings_set(&s, "gen.top_k", "12x", err, sizeof err) == -1 && strstr(err, "not an integer"));
    CHECK(pg_settings_set(&s, "gen.top_p", "0", err, sizeof err) == -1 && strstr(err, "out of range"));
    CHECK(pg_settings_set(&s, "gen.temperature", "nan", err, sizeof err) == -1);
    CHECK(pg_settings_set(&s, "gen.temperature", "", err, sizeof err) == -1);
    CHECK(pg_settings_set(&s, "relay.url", "wss://relay.example/xiaozhi/v1/", err, sizeof err) == 0);
    CHECK(pg_settings_set(&s, "relay.ota", "ftp://x", err, sizeof err) == -1);
    CHECK(pg_settings_set(&s, "wifi.ssid", "a-very-long-network-name-of-more-than-32", err, sizeof err) == -1);
    CHECK(pg_settings_set(&s, "wifi.pass", "hunter22", err, sizeof err) == 0);
    CHECK(pg_settings_get(&s, "wifi.pass", 0, v, sizeof v) == 0 && strstr(v, "hunter22") == NULL);
    CHECK(pg_settings_get(&s, "wifi.pass", 1, v, sizeof v) == 0 && strcmp(v, "hunter22") == 0);
    CHECK(pg_settings_set(&s, "device.id", "AA:bb:cc:dd:ee:0f", err, sizeof err) == 0);
    CHECK(pg_settings_set(&s, "device.id", "AA:bb:cc:dd:ee:0", err, sizeof err) == -1);
    CHECK(pg_settings_set(&s, "bogus", "1", err, sizeof err) == -1 && strstr(err, "unknown setting"));
    // every key's value reads back through set (the file and NVS round trip)
    pg_settings t;
    pg_settings_defaults(&t);
    for (int i = 0; pg_settings_key(i); i++) {
        CHECK(pg_settings_get(&s, pg_settings_key(i), 1, v, sizeof v) == 0);
        CHECK(pg_settings_set(&t, pg_settings_key(i), v, err, sizeof err) == 0);
    }
    CHECK(memcmp(&s, &t, sizeof s) == 0);
}

static void test_console(void) {
    pg_console c;
    pg_console_init(&c, NULL, NULL);
    const char *in = "helo\x7fl\x7flo wor\x1b[Dld\r\nx\x15y\n\xc3\xa9\x7f!\r";
    const char *want[] = {"hello world", "y", "!"};
    int k = 0;
    for (const char *p = in; *p; p++)
        if (pg_console_feed(&c, (uint8_t)*p)) {
            CHECK(k < 3 && strcmp(c.line, want[k]) == 0);
            k++;
        }
    CHECK(k == 3);
    for (int i = 0; i < 2 * PG_CONSOLE_LINE; i++) pg_console_feed(&c, 'a');  // overlong: cut, never overflows
    CHECK(pg_console_feed(&c, '\n') && strlen(c.line) == PG_CONSOLE_LINE - 1);
}

// ---- websocket over an in-memory transport ----
typedef struct {
    const uint8_t *in;
    size_t in_len, in_pos;
    uint8_t sent[8192];
    size_t sent_len;
} mem_net;

static int mem_send(void *ctx, const uint8_t *b, size_t n) {
    mem_net *m = ctx;
    if (m->sent_len + n > sizeof m->sent) return -1;
    memcpy(m->sent + m->sent_len, b, n);
    m->sent_len += n;
    return 0;
}

static int mem_recv(void *ctx, uint8_t *b, size_t cap, int timeout_ms) {
    (void)timeout_ms;
    mem_net *m = ctx;
    if (m->in_pos >= m->in_len) return -1;
    size_t k = 3 < cap ? 3 : cap;  // dribble: 3 bytes at a time, frames split anywhere
    if (k > m->in_len - m->in_pos) k = m->in_len - m->in_pos;
    memcpy(b, m->in + m->in_pos, k);
    m->in_pos += k;
    return (int)k;
}

static uint32_t fixed_random(void *ctx) {
    (void)ctx;
    return 0x04030201u;
}

static void test_ws(void) {
    uint8_t dig[20];
    char b64[64];
    pg_sha1((const uint8_t *)"abc", 3, dig);
    pg_base64(dig, 20, b64);
    CHECK(strcmp(b64, "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=") == 0);
    const char *k = "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11";  // RFC 6455 section 1.3
    pg_sha1((const uint8_t *)k, strlen(k), dig);
    pg_base64(dig, 20, b64);
    CHECK(strcmp(b64, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    pg_url u;
    CHECK(pg_url_parse("ws://127.0.0.1:8000/xiaozhi/v1/", &u) == 0 && u.port == 8000 && !u.tls &&
          strcmp(u.path, "/xiaozhi/v1/") == 0 && strcmp(u.host, "127.0.0.1") == 0);
    CHECK(pg_url_parse("wss://relay.example", &u) == 0 && u.port == 443 && u.tls && strcmp(u.path, "/") == 0);
    CHECK(pg_url_parse("ws://host:99999/", &u) == -1 && pg_url_parse("gopher://x/", &u) == -1);
    // the key this client sends for random 0x04030201 x4 is base64 of 01 02 03 04 ... -> accept below
    uint8_t nonce[16];
    for (int i = 0; i < 16; i++) nonce[i] = (uint8_t)(i % 4 + 1);
    char key[32], src[96], accept[32];
    pg_base64(nonce, 16, key);
    snprintf(src, sizeof src, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    pg_sha1((const uint8_t *)src, strlen(src), dig);
    pg_base64(dig, 20, accept);
    static uint8_t server[1024];
    size_t n = (size_t)snprintf((char *)server, sizeof server,
                                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nconnection: Upgrade\r\n"
                                "sec-websocket-accept: %s\r\n\r\n",
                                accept);
    const uint8_t frames[] = {0x01, 3, 'a', 'b', 'c', 0x89, 2, 'p', 'q', 0x80, 2, 'd', 'e',  // fragmented + ping
                              0x81, 126, 0, 3, 'x', 'y', 'z',                                     // 16-bit length
                              0x88, 2, 0x03, 0xE9};                                               // close 1001
    memcpy(server + n, frames, sizeof frames);
    n += sizeof frames;
    mem_net net = {server, n, 0, {0}, 0};
    pg_transport t = {&net, mem_send, mem_recv};
    static uint8_t rx[256], msg[256];
    pg_ws ws;
    pg_ws_init(&ws, t, rx, msg, sizeof rx, fixed_random, NULL);
    char err[160];
    CHECK(pg_ws_handshake(&ws, &u, "Device-Id: x\r\n", 100, err, sizeof err) == 0);
    CHECK(strstr((char *)net.sent, "Sec-WebSocket-Key: AQIDBAECAwQBAgMEAQIDBA==\r\n") != NULL);
    const uint8_t *data;
    size_t len;
    net.sent_len = 0;
    CHECK(pg_ws_recv(&ws, 100, &data, &len) == PG_WS_TEXT && len == 5 && memcmp(data, "abcde", 5) == 0);
    // the pong went out masked with the ping's payload
    CHECK(net.sent_len == 8 && net.sent[0] == 0x8A && net.sent[1] == 0x82 && (net.sent[6] ^ net.sent[2]) == 'p');
    CHECK(pg_ws_recv(&ws, 100, &data, &len) == PG_WS_TEXT && len == 3 && memcmp(data, "xyz", 3) == 0);
    CHECK(pg_ws_recv(&ws, 100, &data, &len) == PG_WS_CLOSED && ws.close_code == 1001);
    // a client text frame: FIN|text, masked, payload XOR mask
    pg_ws ws2;
    mem_net net2 = {(const uint8_t *)"", 0, 0, {0}, 0};
    pg_ws_init(&ws2, (pg_transport){&net2, mem_send, mem_recv}, rx, msg, sizeof rx, fixed_random, NULL);
    ws2.open = 1;
    CHECK(pg_ws_send_text(&ws2, "hi", 2) == 0);
    CHECK(net2.sent_len == 8 && net2.sent[0] == 0x81 && net2.sent[1] == 0x82 && (net2.sent[6] ^ 0x01) == 'h');
    // a refusal is reported with its status and body line
    const char *refuse = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nbad token here";
    mem_net net3 = {(const uint8_t *)refuse, strlen(refuse), 0, {0}, 0};
    pg_ws ws3;
    pg_ws_init(&ws3, (pg_transport){&net3, mem_send, mem_recv}, rx, msg, sizeof rx, fixed_random, NULL);
    CHECK(pg_ws_handshake(&ws3, &u, NULL, 100, err, sizeof err) == -1 && strstr(err, "HTTP 401 bad token here"));
    // a frame larger than the buffer is refused, not overflowed
    uint8_t huge[] = {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0};
    mem_net net4 = {huge, sizeof huge, 0, {0}, 0};
    pg_ws ws4;
    pg_ws_init(&ws4, (pg_transport){&net4, mem_send, mem_recv}, rx, msg, sizeof rx, fixed_random, NULL);
    ws4.open = 1;
    CHECK(pg_ws_recv(&ws4, 100, &data, &len) == PG_WS_ERROR);
}

// Every request renders to the Python template's bytes; every streamed reply shows the same text.
static void test_chat_vectors(const char *path) {
    pgj_val root, list, vec, v, pieces;
    char *doc = read_vectors(path, &root);
    if (!doc) return;
    static char req[1024], want[1024], mine[1024], piece[1024], buf[512], out[PG_REPLY_OUT(512)];
    int n_prompts = 0, n_replies = 0;
    CHECK(pgj_get(&root, "prompts", &list));
    for (size_t i = 0; pgj_at(&list, i, &vec); i++) {
        size_t rl = 0, wl = 0;
        CHECK(pgj_get(&vec, "request", &v) && pgj_string(&v, req, sizeof req, &rl) == 0);
        CHECK(pgj_get(&vec, "prompt", &v) && pgj_string(&v, want, sizeof want, &wl) == 0);
        long got = pg_chat_prompt(req, rl, mine, sizeof mine);
        CHECK(got == (long)wl && memcmp(mine, want, wl) == 0);
        if (got != (long)wl || memcmp(mine, want, wl) != 0) fprintf(stderr, "chat prompt %zu: got '%s'\n", i, mine);
        n_prompts++;
    }
    CHECK(pg_chat_prompt("abc", 3, mine, 9) == -1);  // "Q: abc\nA:" needs 10 bytes with the NUL
    CHECK(pgj_get(&root, "replies", &list));
    for (size_t i = 0; pgj_at(&list, i, &vec); i++) {
        char finish[16];
        size_t wl = 0, got = 0;
        str_of(&vec, "finish", finish, sizeof finish);
        CHECK(pgj_get(&vec, "shown", &v) && pgj_string(&v, want, sizeof want, &wl) == 0);
        CHECK(pgj_get(&vec, "pieces", &pieces));
        pg_reply r;
        pg_reply_init(&r, buf, sizeof buf);
        for (size_t j = 0; pgj_at(&pieces, j, &v); j++) {
            size_t pl = 0;
            pgj_string(&v, piece, sizeof piece, &pl);
            size_t k = pg_reply_feed(&r, piece, pl, out);
            memcpy(mine + got, out, k);
            got += k;
        }
        size_t k = pg_reply_finish(&r, strcmp(finish, "length") == 0, strcmp(finish, "abort") == 0, out);
        memcpy(mine + got, out, k);
        got += k;
        mine[got] = 0;
        CHECK(got == wl && memcmp(mine, want, wl) == 0);
        if (got != wl || memcmp(mine, want, wl) != 0) fprintf(stderr, "reply %zu: got '%s' want '%s'\n", i, mine, want);
        n_replies++;
    }
    // the subject a request steers the reply to: chat_format.subject_of's answer (null: none)
    int n_subjects = 0;
    CHECK(pgj_get(&root, "subjects", &list));
    for (size_t i = 0; pgj_at(&list, i, &vec); i++) {
        size_t rl = 0, wl = 0;
        CHECK(pgj_get(&vec, "request", &v) && pgj_string(&v, req, sizeof req, &rl) == 0);
        CHECK(pgj_get(&vec, "subject", &v));
        if (v.kind == PGJ_NULL) want[0] = 0;
        else CHECK(pgj_string(&v, want, sizeof want, &wl) == 0);
        char subj[PG_CHAT_SUBJECT_MAX + 1];
        size_t got = pg_chat_subject(req, rl, subj, sizeof subj);
        CHECK(got == wl && strcmp(subj, want) == 0);
        if (got != wl || strcmp(subj, want) != 0) fprintf(stderr, "subject %zu: got '%s' want '%s'\n", i, subj, want);
        n_subjects++;
    }
    int n_words = 0;
    CHECK(pgj_get(&root, "words", &list));
    for (size_t i = 0; pgj_at(&list, i, &vec); i++) {  // the word count of the relay, the engine's guard and here
        size_t tl = 0;
        CHECK(pgj_get(&vec, "text", &v) && pgj_string(&v, req, sizeof req, &tl) == 0);
        long long want_ll = -1;
        CHECK(pgj_get(&vec, "words", &v) && pgj_int(&v, &want_ll) == 0);
        int want_n = (int)want_ll;
        int got_n = pg_unicode_count_words((const uint8_t *)req, tl);
        pg_reply r;  // released text is counted the same, however it is cut into pieces
        pg_reply_init(&r, buf, sizeof buf);
        for (size_t j = 0; j < tl; j++) pg_reply_feed(&r, req + j, 1, out);
        pg_reply_finish(&r, 0, 0, out);
        int shaped_n = r.n_words;
        CHECK(got_n == want_n && (shaped_n == want_n || want_n == 0));
        if (got_n != want_n || (shaped_n != want_n && want_n))
            fprintf(stderr, "words %zu: %d, shaped %d, want %d\n", i, got_n, shaped_n, want_n);
        n_words++;
    }
    CHECK(n_prompts >= 10 && n_replies >= 10 && n_subjects >= 40 && n_words >= 10);
    printf("%d chat prompts, %d replies, %d subjects and %d word counts match the relay's\n", n_prompts, n_replies,
           n_subjects, n_words);
    free(doc);
}

int main(int argc, char **argv) {
    test_json();
    test_router();
    test_settings();
    test_console();
    test_ws();
    if (argc > 1) test_vectors(argv[1]);
    if (argc > 2) test_chat_vectors(argv[2]);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
