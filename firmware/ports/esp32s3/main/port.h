// pocketgpt ESP32-S3 port: the few chip services the portable app (firmware/app) needs.
// Everything here is thin glue over ESP-IDF; the logic lives in firmware/app and is tested on the
// host through the simulator (firmware/ports/posix).
#pragma once

#include "esp_err.h"
#include "pg_app.h"

// console over USB-Serial-JTAG and UART0 at once: bytes in from either, output to both
esp_err_t pg_port_console_init(void);
int pg_port_console_getc(uint32_t timeout_ms);  // a byte, or -1 on timeout
void pg_port_console_out(void *ctx, const char *s, size_t n);

// settings in NVS (namespace "pocketgpt"), each key stored as text through pg_settings_set
esp_err_t pg_port_settings_load(pg_settings *s);
int pg_port_settings_save(void *ctx, const pg_settings *s, char *err, size_t err_cap);

// Wi-Fi station with reconnects (backoff); net_ready waits for an IP
esp_err_t pg_port_wifi_start(const pg_settings *s);
int pg_port_net_ready(void *ctx, char *err, size_t err_cap);

// TCP or TLS streams through esp_transport
int pg_port_net_open(void *ctx, const char *host, int port, int tls, int timeout_ms, pg_transport *t, char *err,
                     size_t err_cap);
void pg_port_net_close(void *ctx, pg_transport *t);

// the engine's parallel-for: the calling task (core 0) and a worker task pinned to core 1
esp_err_t pg_port_parallel_init(pg_parallel *par);

// the model: the `model` flash partition when it holds a GGUF (memory-mapped), else the linked array
esp_err_t pg_port_model_find(const void **blob, size_t *size, const char **where);

// voice (board.h has the pins): I2S microphone and amplifier, the BOOT button, Opus through
// esp_audio_codec. pg_port_audio() is the app's audio port once init succeeded.
esp_err_t pg_port_audio_init(void);
const pg_audio_port *pg_port_audio(void);
int pg_port_ptt_down(void);  // the push-to-talk button is held now
