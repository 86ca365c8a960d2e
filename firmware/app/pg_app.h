// pocketgpt app: the device application, the same on the ESP32-S3 and in the simulator.
//
// It owns the model session, the settings, the router and the relay client, and turns console
// lines into answers. Everything that touches the platform goes through pg_port: console output,
// opening a byte stream to host:port (TCP or TLS), saving settings, randomness, memory (asked for
// once, at init) and the parallel-for the engine uses. Every answer starts with where it came from:
// "[local] " or "[relay] ".
#ifndef PG_APP_H
#define PG_APP_H

#include "audio.h"
#include "chat.h"
#include "console.h"
#include "gpt2.h"
#include "pg_ws.h"
#include "router.h"
#include "sampler.h"
#include "settings.h"

typedef enum { PG_MEM_LARGE = 0, PG_MEM_INTERNAL = 1 } pg_mem_kind;  // PSRAM / internal RAM on the chip

typedef struct {
    void *ctx;
    const char *platform;  // shown by /status
    void (*out)(void *ctx, const char *s, size_t n);
    // open a stream to host:port (tls: TLS); 0, or -1 with err
    int (*net_open)(void *ctx, const char *host, int port, int tls, int timeout_ms, pg_transport *t, char *err,
                    size_t err_cap);
    void (*net_close)(void *ctx, pg_transport *t);
    // is the network up (Wi-Fi associated)? NULL: always
    int (*net_ready)(void *ctx, char *err, size_t err_cap);
    int (*save_settings)(void *ctx, const pg_settings *s, char *err, size_t err_cap);
    uint32_t (*random)(void *ctx);
    void *(*alloc)(void *ctx, size_t n, pg_mem_kind kind);  // init only; never freed while the app runs
    pg_parallel par;
    const pg_audio_port *audio;  // microphone, speaker, push-to-talk, Opus (NULL: no voice)
} pg_port;

#define PG_APP_NET_BUF 16384
#define PG_APP_CHAT_BYTES (PG_CONSOLE_LINE + 8)
#define PG_APP_REPLY_HOLD 1024

typedef struct {
    pg_port port;
    pg_settings set;
    pg_model model;
    pg_state state;
    int32_t n_ctx, n_batch;
    float *chunk_logits;    // (n_batch, V) per-position logits while measuring surprisal
    int32_t *ids;           // (PG_CONSOLE_LINE + n_ctx,) prompt and generated tokens
    void *tok_scratch;
    size_t tok_scratch_size;
    uint8_t *text_out;      // pg_textout output buffer
    char *chat;             // (PG_APP_CHAT_BYTES,) the request in the chat layout: "Q: <request>\nA:"
    char *reply_buf;        // (PG_APP_REPLY_HOLD,) the reply after its last sentence end (pg_reply)
    char *reply_out;        // (PG_REPLY_OUT(PG_APP_REPLY_HOLD),) what pg_reply releases
    // relay client
    pg_ws ws;
    pg_transport net;
    int net_open;
    int relay_ext;          // the relay acknowledged the text extension
    uint8_t *ws_rx, *ws_msg;
    char *frame;            // outgoing frame / parsed text / HTTP body
    char *text;
    uint32_t request_no;
    char last_error[200];
    // voice (buffers only when the port has audio)
    char session_id[65];    // the relay's hello
    char down_format[16];   // the relay's audio_params: what its binary frames carry
    int32_t down_rate, down_frame_ms;
    pg_listen_mode listen_mode;  // manual (push-to-talk, the default) | auto | realtime
    pg_audio_queue play_q;  // received packets waiting for the speaker
    uint8_t *vpkt;          // (PG_AUDIO_MAX_PACKET,) one packet
    int16_t *vpcm;          // (PG_AUDIO_MAX_DECODED,) one decoded packet
    int16_t *vmic;          // (PG_AUDIO_UP_SAMPLES,) one microphone frame
    int32_t last_first_audio_ms;  // the last turn: end of speech -> first reply packet (-1 none)
    uint32_t voice_stale;   // tts stops the relay still owes for aborts of earlier turns (same connection)
} pg_app;

// Validate and bind the model blob (the linked array or the mapped partition), size the session
// for n_ctx tokens, allocate every buffer. 0, or -1 with err.
int pg_app_init(pg_app *app, const pg_port *port, const pg_settings *set, const void *blob, size_t blob_size,
                int32_t n_ctx, char *err, size_t err_cap);
// Handle one console line (a command or a prompt). Returns 1 for /quit, else 0.
int pg_app_handle_line(pg_app *app, const char *line);
// Measure a request for the router and leave it in the KV cache, ready for the reply: the request
// goes in the chat layout after end-of-text ("<|endoftext|>Q: <request>\nA:", as the relay's
// template renders it); n_tokens counts that whole prompt, byte fallbacks and the mean surprisal
// (nats per token) cover the request's own tokens. -1 if it could not be evaluated (err).
int pg_app_measure(pg_app *app, const char *prompt, pg_prompt_stats *st, char *err, size_t err_cap);
void pg_app_printf(pg_app *app, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
// One voice turn: push-to-talk (the port's button, or armed by /talk ARG), the microphone streamed
// to the relay as Opus, the reply played until tts stop; a press while the reply plays barges in.
void pg_app_voice(pg_app *app, const char *arg);
// Close the relay connection (for shutdown, or after a settings change).
void pg_app_disconnect(pg_app *app);

#endif
