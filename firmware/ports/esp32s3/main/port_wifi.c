// pocketgpt ESP32-S3 port: Wi-Fi station that keeps reconnecting (backoff up to 30 s) and tells
// the app whether an IP is up. Credentials come from the settings (wifi.ssid, wifi.pass).
#include <string.h>

#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "freertos/task.h"

#include "port.h"

static const char *TAG = "wifi";
#define GOT_IP BIT0
static EventGroupHandle_t s_events;
static int s_backoff_ms = 500;

static void on_event(void *arg, esp_event_base_t base, int32_t id, void *data) {
    (void)arg;
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) {
        esp_wifi_connect();
    } else if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
        const wifi_event_sta_disconnected_t *d = data;
        xEventGroupClearBits(s_events, GOT_IP);
        ESP_LOGW(TAG, "disconnected (reason %d), retry in %d ms", d->reason, s_backoff_ms);
        vTaskDelay(pdMS_TO_TICKS(s_backoff_ms));  // the event task may sleep: nothing else is queued here
        s_backoff_ms = s_backoff_ms * 2 > 30000 ? 30000 : s_backoff_ms * 2;
        esp_wifi_connect();
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        const ip_event_got_ip_t *ip = data;
        ESP_LOGI(TAG, "got ip " IPSTR, IP2STR(&ip->ip_info.ip));
        s_backoff_ms = 500;
        xEventGroupSetBits(s_events, GOT_IP);
    }
}

esp_err_t pg_port_wifi_start(const pg_settings *s) {
    s_events = xEventGroupCreate();
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_event, NULL, NULL));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_event, NULL, NULL));
    wifi_config_t cfg = {0};
    strncpy((char *)cfg.sta.ssid, s->wifi_ssid, sizeof cfg.sta.ssid);
    strncpy((char *)cfg.sta.password, s->wifi_pass, sizeof cfg.sta.password);
    cfg.sta.threshold.authmode = s->wifi_pass[0] ? WIFI_AUTH_WPA2_PSK : WIFI_AUTH_OPEN;
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &cfg));
    ESP_ERROR_CHECK(esp_wifi_set_ps(WIFI_PS_MIN_MODEM));
    return esp_wifi_start();
}

int pg_port_net_ready(void *ctx, char *err, size_t err_cap) {
    (void)ctx;
    if (!s_events) {
        snprintf(err, err_cap, "Wi-Fi is not configured (/set wifi.ssid NAME, /set wifi.pass PASS, then reset)");
        return 0;
    }
    if (xEventGroupWaitBits(s_events, GOT_IP, pdFALSE, pdTRUE, pdMS_TO_TICKS(5000)) & GOT_IP) return 1;
    snprintf(err, err_cap, "Wi-Fi is not connected (still trying)");
    return 0;
}
