// pocketgpt ESP32-S3 firmware entry: bring up NVS, the console, Wi-Fi and the model, then run the
// portable app (firmware/app/pg_app.c) on the console's lines, and a voice turn whenever the BOOT
// button (push-to-talk) goes down. Every answer is labelled [local] or [relay], exactly as in the
// simulator.
#include <stdio.h>
#include <string.h>

#include "esp_log.h"
#include "esp_heap_caps.h"
#include "esp_mac.h"
#include "esp_random.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "nvs_flash.h"

#include "port.h"

static const char *TAG = "pocketgpt";
static pg_app s_app;  // large: static, not on the task stack

static uint32_t port_random(void *ctx) {
    (void)ctx;
    return esp_random();
}

// Session buffers (KV cache, activations) in PSRAM; small hot tables in internal RAM.
static void *port_alloc(void *ctx, size_t n, pg_mem_kind kind) {
    (void)ctx;
    uint32_t caps = kind == PG_MEM_LARGE ? MALLOC_CAP_SPIRAM | MALLOC_CAP_8BIT : MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT;
    void *p = heap_caps_aligned_alloc(64, n, caps);
    if (!p && kind == PG_MEM_LARGE) p = heap_caps_aligned_alloc(64, n, MALLOC_CAP_8BIT);
    return p;
}

void app_main(void) {
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    ESP_ERROR_CHECK(err);
    ESP_ERROR_CHECK(pg_port_console_init());

    pg_settings set;
    pg_settings_defaults(&set);
    uint8_t mac[6];
    if (esp_read_mac(mac, ESP_MAC_WIFI_STA) == ESP_OK) {
        snprintf(set.device_id, sizeof set.device_id, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                 mac[4], mac[5]);
    }
    if (pg_port_settings_load(&set) != ESP_OK) ESP_LOGW(TAG, "settings: NVS unreadable, using defaults");
    if (set.wifi_ssid[0]) ESP_ERROR_CHECK(pg_port_wifi_start(&set));

    const void *blob = NULL;
    size_t size = 0;
    const char *where = "";
    if (pg_port_model_find(&blob, &size, &where) != ESP_OK) {
        ESP_LOGE(TAG, "no model: flash one with `pocketgpt export-c MODEL --partition` + tools/flash.py");
        return;
    }
    pg_port port = {
        .ctx = NULL,
        .platform = "esp32s3",
        .out = pg_port_console_out,
        .net_open = pg_port_net_open,
        .net_close = pg_port_net_close,
        .net_ready = pg_port_net_ready,
        .save_settings = pg_port_settings_save,
        .random = port_random,
        .alloc = port_alloc,
    };
    ESP_ERROR_CHECK(pg_port_parallel_init(&port.par));
    esp_err_t audio_err = pg_port_audio_init();
    if (audio_err == ESP_OK) port.audio = pg_port_audio();
    else ESP_LOGW(TAG, "voice off: audio init failed (%s)", esp_err_to_name(audio_err));
    char msg[256];
    if (pg_app_init(&s_app, &port, &set, blob, size, 256, msg, sizeof msg) != 0) {
        ESP_LOGE(TAG, "%s", msg);
        return;
    }
    pg_app_printf(&s_app, "pocketgpt on ESP32-S3: model from %s, context %ld; /help for commands\n", where,
                  (long)s_app.n_ctx);
    pg_console con;
    pg_console_init(&con, pg_port_console_out, NULL);  // a raw serial line: the device echoes
    pg_port_console_out(NULL, "> ", 2);
    for (;;) {
        int c = pg_port_console_getc(30);  // short: the push-to-talk button is polled between bytes
        if (c < 0 && port.audio && pg_port_ptt_down()) {
            pg_app_voice(&s_app, "");  // returns when the reply has played (or the turn was cancelled)
            pg_port_console_out(NULL, "> ", 2);
            continue;
        }
        if (c < 0) continue;
        if (pg_console_feed(&con, (uint8_t)c)) {
            pg_app_handle_line(&s_app, con.line);
            pg_port_console_out(NULL, "> ", 2);
        }
    }
}
