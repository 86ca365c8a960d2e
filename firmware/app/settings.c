// pocketgpt app: settings table and validation (see settings.h).
#include "settings.h"

#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_STR, K_INT, K_FLOAT } kind;

typedef struct {
    const char *key;
    kind k;
    size_t off;
    size_t size;     // string capacity
    double lo, hi;   // numeric range (inclusive)
    int secret;
    const char *help;
} entry;

#define F(field) offsetof(pg_settings, field), sizeof(((pg_settings *)0)->field)

static const entry TABLE[] = {
    {"wifi.ssid", K_STR, F(wifi_ssid), 0, 0, 0, "Wi-Fi network name (empty: no Wi-Fi)"},
    {"wifi.pass", K_STR, F(wifi_pass), 0, 0, 1, "Wi-Fi password (empty for an open network, else 8-63 characters)"},
    {"relay.ota", K_STR, F(relay_ota), 0, 0, 0, "configuration URL, e.g. http://HOST:8003/xiaozhi/ota/ (empty: off)"},
    {"relay.url", K_STR, F(relay_url), 0, 0, 0, "direct websocket URL ws://HOST:8000/xiaozhi/v1/ (wins over relay.ota)"},
    {"relay.token", K_STR, F(relay_token), 0, 0, 1, "device token for relay.url (pocketgpt token add DEVICE_ID)"},
    {"device.id", K_STR, F(device_id), 0, 0, 0, "device id sent to the relay, MAC style aa:bb:cc:dd:ee:ff"},
    {"relay.timeout_ms", K_INT, F(relay_timeout_ms), 100, 120000, 0, "connect and reply timeout in ms"},
    {"route.max_bytefrac", K_FLOAT, F(route_max_bytefrac), 0, 2, 0, "escalate when more request tokens than this are byte fallbacks (>1: off)"},
    {"route.max_surprisal", K_FLOAT, F(route_max_surprisal), 0, 50, 0, "escalate when the request's 3 least expected tokens average above this, nats/token (0: off)"},
    {"route.min_reply", K_INT, F(route_min_reply), 1, 4096, 0, "context tokens a local reply needs (longer prompts escalate)"},
    {"gen.max_tokens", K_INT, F(gen_max_tokens), 1, 512, 0, "tokens per answer"},
    {"gen.temperature", K_FLOAT, F(gen_temperature), 0, 5, 0, "sampling temperature (0: greedy)"},
    {"gen.top_k", K_INT, F(gen_top_k), 0, 100000, 0, "top-k (0: off)"},
    {"gen.top_p", K_FLOAT, F(gen_top_p), 0.001, 1, 0, "top-p, (0, 1]"},
    {"gen.seed", K_INT, F(gen_seed), -1, 2147483647, 0, "sampling seed (-1: a new one each answer)"},
};
#define N_ENTRIES (sizeof TABLE / sizeof TABLE[0])

void pg_settings_defaults(pg_settings *s) {
    memset(s, 0, sizeof *s);
    strcpy(s->device_id, "02:00:00:00:00:01");
    s->relay_timeout_ms = 5000;
    pg_router_cfg rc;  // the router's defaults live in one place: router.c
    pg_router_defaults(&rc);
    s->route_max_bytefrac = rc.max_bytefrac;
    s->route_max_surprisal = rc.max_surprisal;
    s->route_min_reply = rc.min_reply;
    s->gen_max_tokens = 48;
    s->gen_temperature = 0.8f;
    s->gen_top_k = 40;
    s->gen_top_p = 0.95f;
    s->gen_seed = -1;
}

static const entry *find(const char *key) {
    for (size_t i = 0; i < N_ENTRIES; i++)
        if (strcmp(TABLE[i].key, key) == 0) return &TABLE[i];
    return NULL;
}

const char *pg_settings_key(int i) { return i >= 0 && (size_t)i < N_ENTRIES ? TABLE[i].key : NULL; }
const char *pg_settings_help(int i) { return i >= 0 && (size_t)i < N_ENTRIES ? TABLE[i].help : NULL; }

static int starts(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static int is_mac(const char *v) {
    if (strlen(v) != 17) return 0;
    for (int i = 0; i < 17; i++) {
        char c = v[i];
        if (i % 3 == 2) {
            if (c != ':') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

// per-key rules beyond the length
static const char *check_string(const char *key, const char *v) {
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20) return "control characters are not allowed";
    if (strcmp(key, "wifi.pass") == 0 && n != 0 && (n < 8 || n > 63))
        return "WPA2 passwords have 8-63 characters (empty for an open network)";
    if (strcmp(key, "relay.ota") == 0 && n && !starts(v, "http://") && !starts(v, "https://"))
        return "the configuration URL starts with http:// or https://";
    if (strcmp(key, "relay.url") == 0 && n && !starts(v, "ws://") && !starts(v, "wss://"))
        return "the websocket URL starts with ws:// or wss://";
    if ((strcmp(key, "relay.url") == 0 || strcmp(key, "relay.ota") == 0) && strchr(v, ' '))
        return "a URL has no spaces";
    if (strcmp(key, "device.id") == 0 && !is_mac(v)) return "use the MAC form aa:bb:cc:dd:ee:ff";
    return NULL;
}

int pg_settings_set(pg_settings *s, const char *key, const char *value, char *err, size_t err_cap) {
    const entry *e = find(key);
    if (!e) {
        snprintf(err, err_cap, "unknown setting '%s'; /get lists them", key);
        return -1;
    }
    char *field = (char *)s + e->off;
    if (e->k == K_STR) {
        size_t n = strlen(value);
        if (n >= e->size) {
            snprintf(err, err_cap, "%s: at most %zu bytes (got %zu)", key, e->size - 1, n);
            return -1;
        }
        const char *why = check_string(key, value);
        if (why) {
            snprintf(err, err_cap, "%s: %s", key, why);
            return -1;
        }
        memcpy(field, value, n + 1);
        return 0;
    }
    char *end = NULL;
    errno = 0;
    double d = e->k == K_INT ? (double)strtoll(value, &end, 10) : strtod(value, &end);
    if (!*value || errno || !end || *end || d != d) {
        snprintf(err, err_cap, "%s: '%s' is not %s", key, value, e->k == K_INT ? "an integer" : "a number");
        return -1;
    }
    if (d < e->lo || d > e->hi) {
        snprintf(err, err_cap, "%s: %s is out of range [%g, %g]", key, value, e->lo, e->hi);
        return -1;
    }
    if (e->k == K_INT) {
        int32_t v = (int32_t)d;
        memcpy(field, &v, sizeof v);
    } else {
        float v = (float)d;
        memcpy(field, &v, sizeof v);
    }
    return 0;
}

int pg_settings_get(const pg_settings *s, const char *key, int reveal, char *out, size_t cap) {
    const entry *e = find(key);
    if (!e) return -1;
    const char *field = (const char *)s + e->off;
    if (e->k == K_STR) {
        if (e->secret && !reveal && field[0]) snprintf(out, cap, "(set, %zu bytes)", strlen(field));
        else snprintf(out, cap, "%s", field);
    } else if (e->k == K_INT) {
        int32_t v;
        memcpy(&v, field, sizeof v);
        snprintf(out, cap, "%ld", (long)v);
    } else {
        float v;
        memcpy(&v, field, sizeof v);
        snprintf(out, cap, "%g", (double)v);
    }
    return 0;
}
