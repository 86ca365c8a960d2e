// pocketgpt app: voice, the same on the ESP32-S3 and in the simulator (sans I/O).
//
// The XiaoZhi voice protocol (docs/protocol.md and docs/voice.md, version 1 framing): the device streams its
// microphone as raw Opus packets, 16 kHz mono, 60 ms each, one per binary websocket message, between
// {"type":"listen","state":"start","mode":...} and {"type":"listen","state":"stop"}; the relay
// answers stt, tts start, sentence_start texts, binary Opus packets at the rate its hello declared
// (24 kHz, 60 ms), and tts stop. {"type":"abort"} stops a reply at once.
//
// This file holds what can be tested without a microphone: the push-to-talk state machine, the
// listen/abort messages, the playback queue of received packets, and the port interface the
// microphone, speaker, button and Opus codec come through (I2S + esp_audio_codec on the chip,
// WAV files + libopus in the simulator). The turn loop that moves the bytes is in app_voice.c.
#ifndef PG_AUDIO_H
#define PG_AUDIO_H

#include <stddef.h>
#include <stdint.h>

#define PG_AUDIO_UP_RATE 16000       // microphone: 16 kHz mono
#define PG_AUDIO_UP_FRAME_MS 60      // one Opus packet per 60 ms
#define PG_AUDIO_UP_SAMPLES (PG_AUDIO_UP_RATE / 1000 * PG_AUDIO_UP_FRAME_MS)  // 960
#define PG_AUDIO_DOWN_RATE 24000     // the relay's default (its hello may say otherwise)
#define PG_AUDIO_DOWN_FRAME_MS 60
#define PG_AUDIO_MAX_PACKET 4000     // bytes: three 20 ms Opus frames of 1275 bytes fit, anything larger is refused
#define PG_AUDIO_MAX_DECODED 5760    // samples: 120 ms at 48 kHz, Opus's longest packet at its highest rate

// ---- the port: microphone, speaker, push-to-talk button, Opus codec, clock ----
// Every callback gets pg_port.ctx. All are required when pg_port.audio is set.
typedef struct {
    // Arm the microphone for one push-to-talk press coming from the console (/talk ARG). The
    // simulator opens the next WAV (or the file ARG); the chip holds a virtual button for ARG seconds
    // (the BOOT button does not need this). 0, or -1 with err.
    int (*mic_arm)(void *ctx, const char *arg, char *err, size_t err_cap);
    // Is push-to-talk held now?
    int (*ptt_pressed)(void *ctx);
    // Fill pcm with n samples (16 kHz mono). Blocks until they are captured (about one frame) on the
    // chip; the simulator paces its file at real time. n, or -1 when the microphone failed.
    int (*mic_read)(void *ctx, int16_t *pcm, size_t n);
    // Speaker: how many samples it takes now without blocking; write them (at sample_rate); drop
    // whatever it still holds (abort).
    size_t (*speaker_room)(void *ctx);
    int (*speaker_write)(void *ctx, const int16_t *pcm, size_t n, int sample_rate);
    void (*speaker_flush)(void *ctx);
    // Opus. (Re)open the encoder / decoder for rate, mono, frame_ms. 0, or -1 with err.
    int (*encoder_open)(void *ctx, int rate, int frame_ms, char *err, size_t err_cap);
    int (*decoder_open)(void *ctx, int rate, int frame_ms, char *err, size_t err_cap);
    // one frame of pcm (rate * frame_ms / 1000 samples) -> packet bytes, or -1
    int (*encode)(void *ctx, const int16_t *pcm, size_t n, uint8_t *out, size_t cap);
    // one packet -> samples written to pcm (at most cap), or -1 for a packet the codec refuses
    int (*decode)(void *ctx, const uint8_t *pkt, size_t n, int16_t *pcm, size_t cap);
    uint32_t (*now_ms)(void *ctx);  // a monotonic millisecond clock
} pg_audio_port;

// ---- messages (compact JSON, the shapes XiaoZhi devices send) ----
typedef enum { PG_LISTEN_MANUAL = 0, PG_LISTEN_AUTO = 1, PG_LISTEN_REALTIME = 2 } pg_listen_mode;

const char *pg_listen_mode_name(pg_listen_mode m);
// 0 and the mode, or -1 for a name that is not manual | auto | realtime
int pg_listen_mode_parse(const char *name, pg_listen_mode *m);
// {"session_id":S,"type":"listen","state":"start","mode":M}; 0, or -1 if cap is too small
int pg_audio_listen_start(const char *session_id, pg_listen_mode mode, char *out, size_t cap);
// {"session_id":S,"type":"listen","state":"stop"}
int pg_audio_listen_stop(const char *session_id, char *out, size_t cap);
// {"session_id":S,"type":"abort"} plus "reason" when given (XiaoZhi: "wake_word_detected" on barge-in)
int pg_audio_abort(const char *session_id, const char *reason, char *out, size_t cap);

// ---- the push-to-talk state machine ----
typedef enum {
    PG_VOICE_IDLE = 0,   // nothing on the way
    PG_VOICE_LISTENING,  // the microphone streams to the relay
    PG_VOICE_THINKING,   // the utterance is over; waiting for the relay's reply
    PG_VOICE_SPEAKING,   // tts start came: reply packets are played
} pg_voice_state;

typedef enum {
    PG_VEV_PRESS = 0,    // push-to-talk went down
    PG_VEV_RELEASE,      // push-to-talk went up
    PG_VEV_STT,          // the relay's transcript
    PG_VEV_TTS_START,
    PG_VEV_TTS_STOP,
    PG_VEV_AUDIO,        // one binary packet from the relay
    PG_VEV_ABORT,        // the user cancels (console, long press)
    PG_VEV_ERROR,        // the relay reported an error for this turn
    PG_VEV_TIMEOUT,      // no reply in time
    PG_VEV_CLOSED,       // the connection is gone
} pg_voice_event;

// Actions the caller performs for a step, as bits.
enum {
    PG_VACT_LISTEN_START = 1 << 0,  // send listen start (mode of the machine)
    PG_VACT_LISTEN_STOP = 1 << 1,   // send listen stop
    PG_VACT_SEND_ABORT = 1 << 2,    // send abort
    PG_VACT_MIC_ON = 1 << 3,        // start streaming the microphone
    PG_VACT_MIC_OFF = 1 << 4,
    PG_VACT_PLAY = 1 << 5,          // queue this packet for the speaker
    PG_VACT_DROP = 1 << 6,          // ignore this packet (not speaking: stale audio of an aborted reply)
    PG_VACT_FLUSH = 1 << 7,         // drop queued and buffered playback at once
    PG_VACT_END = 1 << 8,           // the turn is over (play out what is queued unless FLUSH)
};

typedef struct {
    pg_voice_state state;
    pg_listen_mode mode;
    int mic_on;
    uint32_t n_aborts;   // abort messages sent (barge-ins and cancels)
    uint32_t stale;      // tts stops still due for aborted replies: until they come, that reply's
                         // tts start, audio and stop are ignored (the relay answers every abort with one)
    uint32_t n_dropped;  // packets dropped because they came outside tts start..stop
} pg_voice;

void pg_voice_init(pg_voice *v, pg_listen_mode mode);
// One event in, the actions to perform out (PG_VACT_* bits); v->state is the new state.
unsigned pg_voice_step(pg_voice *v, pg_voice_event ev);
const char *pg_voice_state_name(pg_voice_state s);

// ---- playback queue: received Opus packets waiting for the speaker ----
// A byte ring of [u16 length][packet] records in the caller's buffer; nothing is allocated.
typedef struct {
    uint8_t *buf;
    size_t cap, head, used;  // head: first byte of the oldest record
    uint32_t count;          // packets held
    uint32_t overflows;      // packets refused because the ring was full
} pg_audio_queue;

void pg_audio_queue_init(pg_audio_queue *q, uint8_t *buf, size_t cap);
// 0, or -1 when the packet is empty, longer than PG_AUDIO_MAX_PACKET or does not fit (counted)
int pg_audio_queue_push(pg_audio_queue *q, const uint8_t *pkt, size_t n);
// The oldest packet into out (cap bytes); its length, 0 when empty.
size_t pg_audio_queue_pop(pg_audio_queue *q, uint8_t *out, size_t cap);
void pg_audio_queue_clear(pg_audio_queue *q);

#endif
