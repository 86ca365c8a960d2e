// pocketgpt ESP32-S3 port for an image built without the radio and voice (POCKETGPT_NO_RADIO=1 in
// the build's environment, see CMakeLists.txt): no Wi-Fi, network or audio stack is linked. The on-device model, the
// console and the settings work as in the full image; every relay or voice request answers with
// one line saying this image has no network. Used where the full image cannot be linked (ESP-IDF's
// Wi-Fi libraries, esp-lwip or the Opus codec absent: docs/xtensa.md), never as a stand-in for them.
#include <stdio.h>

#include "port.h"

#define NO_NET "this firmware was built without Wi-Fi (POCKETGPT_NO_RADIO); flash the full image for the relay"

esp_err_t pg_port_wifi_start(const pg_settings *s) {
    (void)s;
    return ESP_OK;  // nothing to start; pg_port_net_ready says why there is no network
}

int pg_port_net_ready(void *ctx, char *err, size_t err_cap) {
    (void)ctx;
    snprintf(err, err_cap, "%s", NO_NET);
    return 0;
}

int pg_port_net_open(void *ctx, const char *host, int port, int tls, int timeout_ms, pg_transport *t, char *err,
                     size_t err_cap) {
    (void)ctx, (void)host, (void)port, (void)tls, (void)timeout_ms, (void)t;
    snprintf(err, err_cap, "%s", NO_NET);
    return -1;
}

void pg_port_net_close(void *ctx, pg_transport *t) {
    (void)ctx, (void)t;
}

esp_err_t pg_port_audio_init(void) {
    return ESP_ERR_NOT_SUPPORTED;  // app_main then runs with voice off and says so
}

const pg_audio_port *pg_port_audio(void) {
    return NULL;
}

int pg_port_ptt_down(void) {
    return 0;
}
