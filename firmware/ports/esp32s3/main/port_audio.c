// pocketgpt ESP32-S3 port: voice. The app's audio port (firmware/app/audio.h) over ESP-IDF's i2s_std
// driver and Espressif's esp_audio_codec component (Opus, prebuilt for the S3):
//   microphone  INMP441 on BOARD_MIC_I2S, 16 kHz, 32-bit left slot -> int16 (BOARD_MIC_SHIFT)
//   speaker     MAX98357A on BOARD_SPK_I2S, 16-bit mono at the relay's rate (24 kHz unless its hello
//               says otherwise); decoded audio goes through a stream buffer to a writer task, so the
//               app's loop never blocks on the DMA and an abort can drop what is queued
//   button      BOOT (GPIO0) as push-to-talk; /talk SECONDS holds a virtual button from the console
// Pins are in board.h. Type-checked against ESP-IDF v5.5.5 and esp_audio_codec 2.6.0 headers only:
// never run on a board here (firmware/README.md).
#include <stdlib.h>
#include <string.h>

#include "driver/gpio.h"
#include "driver/i2s_std.h"
#include "esp_log.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/stream_buffer.h"
#include "freertos/task.h"

#include "esp_audio_dec.h"
#include "esp_audio_enc.h"
#include "esp_opus_dec.h"
#include "esp_opus_enc.h"

#include "board.h"
#include "port.h"

static const char *TAG = "audio";

static i2s_chan_handle_t s_mic, s_spk;
static StreamBufferHandle_t s_play;   // int16 samples for the writer task
static int s_spk_rate = PG_AUDIO_DOWN_RATE;
static int64_t s_hold_until_us;       // the console's virtual push-to-talk
static void *s_enc, *s_dec;
static int s_enc_rate, s_dec_rate, s_dec_frame_ms;
static int32_t s_mic_raw[PG_AUDIO_UP_SAMPLES];  // one 60 ms frame of 32-bit slots

static void speaker_task(void *arg) {
    (void)arg;
    int16_t buf[480];
    for (;;) {
        size_t got = xStreamBufferReceive(s_play, buf, sizeof buf, pdMS_TO_TICKS(50));
        if (got == 0) continue;
        size_t written = 0;
        i2s_channel_write(s_spk, buf, got, &written, 1000);  // blocks on the DMA: real-time pacing
    }
}

esp_err_t pg_port_audio_init(void) {
    gpio_config_t btn = {
        .pin_bit_mask = 1ULL << BOARD_PTT_GPIO,
        .mode = GPIO_MODE_INPUT,
        .pull_up_en = GPIO_PULLUP_ENABLE,
        .pull_down_en = GPIO_PULLDOWN_DISABLE,
        .intr_type = GPIO_INTR_DISABLE,
    };
    esp_err_t err = gpio_config(&btn);
    if (err != ESP_OK) return err;
    if (BOARD_SPK_SD != GPIO_NUM_NC) {
        gpio_set_direction(BOARD_SPK_SD, GPIO_MODE_OUTPUT);
        gpio_set_level(BOARD_SPK_SD, 1);
    }

    // microphone: RX only on its own controller
    i2s_chan_config_t mc = I2S_CHANNEL_DEFAULT_CONFIG(BOARD_MIC_I2S, I2S_ROLE_MASTER);
    // 8 x 20 ms of DMA: the app reads 60 ms at a time and may spend a while in a Wi-Fi send in between
    mc.dma_desc_num = 8;
    mc.dma_frame_num = PG_AUDIO_UP_RATE / 50;
    err = i2s_new_channel(&mc, NULL, &s_mic);
    if (err != ESP_OK) return err;
    i2s_std_config_t ms = {
        .clk_cfg = I2S_STD_CLK_DEFAULT_CONFIG(PG_AUDIO_UP_RATE),
        .slot_cfg = I2S_STD_PHILIPS_SLOT_DEFAULT_CONFIG(I2S_DATA_BIT_WIDTH_32BIT, I2S_SLOT_MODE_MONO),
        .gpio_cfg = {
            .mclk = I2S_GPIO_UNUSED,
            .bclk = BOARD_MIC_SCK,
            .ws = BOARD_MIC_WS,
            .dout = I2S_GPIO_UNUSED,
            .din = BOARD_MIC_SD,
            .invert_flags = {.mclk_inv = false, .bclk_inv = false, .ws_inv = false},
        },
    };
    ms.slot_cfg.slot_mask = I2S_STD_SLOT_LEFT;  // L/R tied low
    err = i2s_channel_init_std_mode(s_mic, &ms);
    if (err == ESP_OK) err = i2s_channel_enable(s_mic);
    if (err != ESP_OK) return err;

    // speaker: TX only; the DMA sends zeros when nothing is queued (no buzz between replies)
    i2s_chan_config_t sc = I2S_CHANNEL_DEFAULT_CONFIG(BOARD_SPK_I2S, I2S_ROLE_MASTER);
    sc.auto_clear = true;
    err = i2s_new_channel(&sc, &s_spk, NULL);
    if (err != ESP_OK) return err;
    i2s_std_config_t ss = {
        .clk_cfg = I2S_STD_CLK_DEFAULT_CONFIG(PG_AUDIO_DOWN_RATE),
        .slot_cfg = I2S_STD_PHILIPS_SLOT_DEFAULT_CONFIG(I2S_DATA_BIT_WIDTH_16BIT, I2S_SLOT_MODE_MONO),
        .gpio_cfg = {
            .mclk = I2S_GPIO_UNUSED,
            .bclk = BOARD_SPK_BCLK,
            .ws = BOARD_SPK_LRC,
            .dout = BOARD_SPK_DIN,
            .din = I2S_GPIO_UNUSED,
            .invert_flags = {.mclk_inv = false, .bclk_inv = false, .ws_inv = false},
        },
    };
    err = i2s_channel_init_std_mode(s_spk, &ss);
    if (err == ESP_OK) err = i2s_channel_enable(s_spk);
    if (err != ESP_OK) return err;

    s_play = xStreamBufferCreate((size_t)PG_AUDIO_DOWN_RATE * BOARD_SPK_BUFFER_MS / 1000 * sizeof(int16_t), 2);
    if (!s_play) return ESP_ERR_NO_MEM;
    if (xTaskCreatePinnedToCore(speaker_task, "pg_speaker", 3072, NULL, 6, NULL, 0) != pdPASS) return ESP_ERR_NO_MEM;
    ESP_LOGI(TAG, "mic on I2S%d (SCK %d WS %d SD %d), speaker on I2S%d (BCLK %d LRC %d DIN %d), push-to-talk GPIO%d",
             (int)BOARD_MIC_I2S, BOARD_MIC_SCK, BOARD_MIC_WS, BOARD_MIC_SD, (int)BOARD_SPK_I2S, BOARD_SPK_BCLK,
             BOARD_SPK_LRC, BOARD_SPK_DIN, BOARD_PTT_GPIO);
    return ESP_OK;
}

int pg_port_ptt_down(void) { return gpio_get_level(BOARD_PTT_GPIO) == BOARD_PTT_ACTIVE_LEVEL; }

// ---- the pg_audio_port callbacks ----

static int mic_arm(void *ctx, const char *arg, char *err, size_t err_cap) {
    (void)ctx;
    if (pg_port_ptt_down() && !(arg && *arg)) return 0;  // the BOOT button is the finger
    double seconds = 3.0;
    if (arg && *arg) {
        char *end;
        seconds = strtod(arg, &end);
        if (*end || seconds <= 0 || seconds > 60) {
            snprintf(err, err_cap, "/talk %s: give the seconds to listen (0.5..60), or hold the BOOT button", arg);
            return -1;
        }
    }
    s_hold_until_us = esp_timer_get_time() + (int64_t)(seconds * 1e6);
    return 0;
}

static int ptt_pressed(void *ctx) {
    (void)ctx;
    return pg_port_ptt_down() || esp_timer_get_time() < s_hold_until_us;
}

static int mic_read(void *ctx, int16_t *pcm, size_t n) {
    (void)ctx;
    if (n > PG_AUDIO_UP_SAMPLES) return -1;
    size_t got = 0;
    if (i2s_channel_read(s_mic, s_mic_raw, n * sizeof(int32_t), &got, 1000) != ESP_OK || got != n * sizeof(int32_t))
        return -1;
    for (size_t i = 0; i < n; i++) {
        int32_t v = s_mic_raw[i] >> BOARD_MIC_SHIFT;
        pcm[i] = (int16_t)(v > 32767 ? 32767 : v < -32768 ? -32768 : v);
    }
    return (int)n;
}

static size_t speaker_room(void *ctx) {
    (void)ctx;
    return xStreamBufferSpacesAvailable(s_play) / sizeof(int16_t);
}

static int speaker_write(void *ctx, const int16_t *pcm, size_t n, int rate) {
    (void)ctx;
    if (rate != s_spk_rate) return -1;  // decoder_open set the clock; a mismatch is a bug upstream
    size_t bytes = n * sizeof(int16_t);
    return xStreamBufferSend(s_play, pcm, bytes, portMAX_DELAY) == bytes ? 0 : -1;
}

static void speaker_flush(void *ctx) {
    (void)ctx;
    // A reset is refused while the writer task waits on the buffer, and then it is empty anyway;
    // what the DMA already holds (about 60 ms) still plays.
    for (int i = 0; i < 5 && xStreamBufferReset(s_play) != pdPASS; i++) vTaskDelay(1);
}

static esp_opus_dec_frame_duration_t dec_duration(int frame_ms) {
    switch (frame_ms) {
    case 10: return ESP_OPUS_DEC_FRAME_DURATION_10_MS;
    case 20: return ESP_OPUS_DEC_FRAME_DURATION_20_MS;
    case 40: return ESP_OPUS_DEC_FRAME_DURATION_40_MS;
    case 60: return ESP_OPUS_DEC_FRAME_DURATION_60_MS;
    case 120: return ESP_OPUS_DEC_FRAME_DURATION_120_MS;
    default: return ESP_OPUS_DEC_FRAME_DURATION_INVALID;  // counted as 60 ms by the decoder
    }
}

static int encoder_open(void *ctx, int rate, int frame_ms, char *err, size_t err_cap) {
    (void)ctx;
    if (s_enc && s_enc_rate == rate) return esp_opus_enc_reset(s_enc) == ESP_AUDIO_ERR_OK ? 0 : -1;
    if (s_enc) esp_opus_enc_close(s_enc);
    s_enc = NULL;
    esp_opus_enc_config_t cfg = ESP_OPUS_ENC_CONFIG_DEFAULT();
    cfg.sample_rate = rate;
    cfg.channel = ESP_AUDIO_MONO;
    cfg.bits_per_sample = ESP_AUDIO_BIT16;
    cfg.bitrate = ESP_OPUS_BITRATE_AUTO;
    cfg.frame_duration = frame_ms == 20 ? ESP_OPUS_ENC_FRAME_DURATION_20_MS : ESP_OPUS_ENC_FRAME_DURATION_60_MS;
    cfg.application_mode = ESP_OPUS_ENC_APPLICATION_VOIP;
    cfg.complexity = 0;  // the cheapest setting: both cores may be busy with the model
    cfg.enable_vbr = true;
    esp_audio_err_t e = esp_opus_enc_open(&cfg, sizeof cfg, &s_enc);
    if (e != ESP_AUDIO_ERR_OK || !s_enc) {
        s_enc = NULL;
        snprintf(err, err_cap, "Opus encoder at %d Hz: error %d", rate, (int)e);
        return -1;
    }
    s_enc_rate = rate;
    return 0;
}

static int decoder_open(void *ctx, int rate, int frame_ms, char *err, size_t err_cap) {
    (void)ctx;
    if (rate != s_spk_rate) {  // follow the relay's declared rate
        i2s_std_clk_config_t clk = I2S_STD_CLK_DEFAULT_CONFIG((uint32_t)rate);
        esp_err_t e = i2s_channel_disable(s_spk);
        if (e == ESP_OK) e = i2s_channel_reconfig_std_clock(s_spk, &clk);
        if (e == ESP_OK) e = i2s_channel_enable(s_spk);
        if (e != ESP_OK) {
            snprintf(err, err_cap, "speaker clock %d Hz: %s", rate, esp_err_to_name(e));
            return -1;
        }
        s_spk_rate = rate;
    }
    if (s_dec && s_dec_rate == rate && s_dec_frame_ms == frame_ms) return 0;
    if (s_dec) esp_opus_dec_close(s_dec);
    s_dec = NULL;
    esp_opus_dec_cfg_t cfg = ESP_OPUS_DEC_CONFIG_DEFAULT();
    cfg.sample_rate = (uint32_t)rate;
    cfg.channel = ESP_AUDIO_MONO;
    cfg.frame_duration = dec_duration(frame_ms);
    cfg.self_delimited = false;  // one raw packet per websocket message
    esp_audio_err_t e = esp_opus_dec_open(&cfg, sizeof cfg, &s_dec);
    if (e != ESP_AUDIO_ERR_OK || !s_dec) {
        s_dec = NULL;
        snprintf(err, err_cap, "Opus decoder at %d Hz: error %d", rate, (int)e);
        return -1;
    }
    s_dec_rate = rate;
    s_dec_frame_ms = frame_ms;
    return 0;
}

static int encode(void *ctx, const int16_t *pcm, size_t n, uint8_t *out, size_t cap) {
    (void)ctx;
    esp_audio_enc_in_frame_t in = {.buffer = (uint8_t *)pcm, .len = (uint32_t)(n * sizeof(int16_t))};
    esp_audio_enc_out_frame_t o = {.buffer = out, .len = (uint32_t)cap};
    if (!s_enc || esp_opus_enc_process(s_enc, &in, &o) != ESP_AUDIO_ERR_OK) return -1;
    return (int)o.encoded_bytes;
}

static int decode(void *ctx, const uint8_t *pkt, size_t n, int16_t *pcm, size_t cap) {
    (void)ctx;
    esp_audio_dec_in_raw_t raw = {.buffer = (uint8_t *)pkt, .len = (uint32_t)n};
    esp_audio_dec_out_frame_t fr = {.buffer = (uint8_t *)pcm, .len = (uint32_t)(cap * sizeof(int16_t))};
    esp_audio_dec_info_t info;
    if (!s_dec || esp_opus_dec_decode(s_dec, &raw, &fr, &info) != ESP_AUDIO_ERR_OK) return -1;
    return (int)(fr.decoded_size / sizeof(int16_t));
}

static uint32_t now_ms(void *ctx) {
    (void)ctx;
    return (uint32_t)(esp_timer_get_time() / 1000);
}

static const pg_audio_port PORT = {
    .mic_arm = mic_arm, .ptt_pressed = ptt_pressed, .mic_read = mic_read, .speaker_room = speaker_room,
    .speaker_write = speaker_write, .speaker_flush = speaker_flush, .encoder_open = encoder_open,
    .decoder_open = decoder_open, .encode = encode, .decode = decode, .now_ms = now_ms,
};

const pg_audio_port *pg_port_audio(void) { return &PORT; }
