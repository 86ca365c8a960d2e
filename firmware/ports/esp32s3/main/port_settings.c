// pocketgpt ESP32-S3 port: settings in NVS. Each setting is one NVS string under namespace
// "pocketgpt"; NVS keys hold at most 15 characters, so the setting name is cut to 15 (the names
// are unique in their first 15 characters; checked at load). Values go through pg_settings_set,
// so NVS can never hold a value the console would refuse.
#include <string.h>

#include "esp_log.h"
#include "nvs.h"

#include "port.h"

static const char *TAG = "settings";
#define NS "pocketgpt"

static void nvs_key(const char *name, char out[16]) {
    strncpy(out, name, 15);
    out[15] = 0;
}

esp_err_t pg_port_settings_load(pg_settings *s) {
    nvs_handle_t h;
    esp_err_t err = nvs_open(NS, NVS_READONLY, &h);
    if (err == ESP_ERR_NVS_NOT_FOUND) return ESP_OK;  // nothing saved yet
    if (err != ESP_OK) return err;
    for (int i = 0; pg_settings_key(i); i++) {
        char key[16], value[300], msg[PG_SETTINGS_ERR];
        size_t len = sizeof value;
        nvs_key(pg_settings_key(i), key);
        for (int j = 0; j < i; j++) {
            char other[16];
            nvs_key(pg_settings_key(j), other);
            if (strcmp(key, other) == 0) ESP_LOGE(TAG, "settings %s and %s share an NVS key", pg_settings_key(i), other);
        }
        if (nvs_get_str(h, key, value, &len) != ESP_OK) continue;
        if (pg_settings_set(s, pg_settings_key(i), value, msg, sizeof msg) != 0) ESP_LOGW(TAG, "ignored: %s", msg);
    }
    nvs_close(h);
    return ESP_OK;
}

int pg_port_settings_save(void *ctx, const pg_settings *s, char *err, size_t err_cap) {
    (void)ctx;
    nvs_handle_t h;
    esp_err_t e = nvs_open(NS, NVS_READWRITE, &h);
    if (e != ESP_OK) {
        snprintf(err, err_cap, "NVS open failed: %s", esp_err_to_name(e));
        return -1;
    }
    for (int i = 0; pg_settings_key(i) && e == ESP_OK; i++) {
        char key[16], value[300];
        nvs_key(pg_settings_key(i), key);
        pg_settings_get(s, pg_settings_key(i), 1, value, sizeof value);
        e = nvs_set_str(h, key, value);
    }
    if (e == ESP_OK) e = nvs_commit(h);
    nvs_close(h);
    if (e != ESP_OK) {
        snprintf(err, err_cap, "NVS write failed: %s", esp_err_to_name(e));
        return -1;
    }
    return 0;
}
