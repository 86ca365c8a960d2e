// pocketgpt app: the device settings (Wi-Fi, relay, routing, sampling), validated on every set.
//
// One table names every key, its type and its range; the console's /set, the POSIX settings file
// and the ESP32's NVS all go through pg_settings_set, so a bad value is refused with a message
// the same way everywhere. Stored as text per key (NVS strings, "key=value" lines).
#ifndef PG_SETTINGS_H
#define PG_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char wifi_ssid[33];
    char wifi_pass[65];
    char relay_ota[256];      // the XiaoZhi-style configuration URL (http[s]://.../xiaozhi/ota/)
    char relay_url[256];      // a direct websocket URL (ws[s]://...), used when set
    char relay_token[160];
    char device_id[18];       // aa:bb:cc:dd:ee:ff (the MAC on the chip)
    int32_t relay_timeout_ms; // connect / first-byte timeout
    float route_max_bytefrac;
    float route_max_surprisal;
    int32_t route_min_reply;
    int32_t gen_max_tokens;
    float gen_temperature;
    int32_t gen_top_k;
    float gen_top_p;
    int32_t gen_seed;         // < 0: a fresh seed per answer
} pg_settings;

#define PG_SETTINGS_ERR 160

void pg_settings_defaults(pg_settings *s);
// 0, or -1 with a one-line message in err (key unknown or value out of range; s unchanged).
int pg_settings_set(pg_settings *s, const char *key, const char *value, char *err, size_t err_cap);
// The value as text; -1 for an unknown key. Secrets (wifi.pass, relay.token) are masked when
// `reveal` is 0.
int pg_settings_get(const pg_settings *s, const char *key, int reveal, char *out, size_t cap);
// Key names in table order (NULL past the end), for listing and saving.
const char *pg_settings_key(int i);
const char *pg_settings_help(int i);

#endif
