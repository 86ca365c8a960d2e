// pocketgpt app: the relay's websocket messages (docs/protocol.md), sans I/O.
//
// Builders write the exact compact JSON of docs/protocol_vectors.json; the parser reads any JSON
// spelling of the relay's frames. No sockets here: the relay client (app_relay.c, app_voice.c) moves the bytes.
#ifndef PG_RELAY_PROTO_H
#define PG_RELAY_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PG_PROTO_ID_MAX 64

typedef struct {
    const char *id;          // required, 1..64 characters
    const char *prompt;      // required, non-empty
    int32_t max_tokens;      // < 0: relay default
    int has_temperature;
    double temperature;
    int32_t top_k;           // < 0: relay default
    int has_top_p;
    double top_p;
    int has_seed;
    long long seed;
    int has_greedy;
    int greedy;
    const char *const *stop; // n_stop strings
    int n_stop;
} pg_gen_request;

// The client hello of a pocketgpt device (the extension switched on). 0, or -1 if cap is too small.
int pg_proto_hello(char *out, size_t cap);
int pg_proto_generate(const pg_gen_request *r, char *out, size_t cap);
// abort of one request (id non-NULL) or of everything
int pg_proto_abort(const char *id, char *out, size_t cap);

typedef enum {
    PG_MSG_INVALID = 0,  // not a JSON object or no string type
    PG_MSG_HELLO,
    PG_MSG_DELTA,
    PG_MSG_DONE,
    PG_MSG_ERROR,
    PG_MSG_STT,
    PG_MSG_TTS,
    PG_MSG_OTHER,        // a type the device does not use (ignored)
} pg_msg_type;

typedef struct {
    pg_msg_type type;
    char type_name[32];
    char id[PG_PROTO_ID_MAX + 1];  // request id ("" when absent)
    char session_id[65];
    char state[24];                // tts state
    char reason[16];               // pg.done: stop | length | abort
    char code[32];                 // error code
    char message[256];             // error message (cut when longer)
    long long tokens, prompt_tokens;
    int transport_ok;              // hello: transport == "websocket"
    int extension;                 // hello: the relay acknowledged features.pocketgpt
    long long relay_max_tokens;    // hello: pocketgpt.max_tokens (0 unknown)
    char audio_format[16];         // hello: audio_params of the relay's speech ("" when absent)
    long long audio_rate, audio_channels, audio_frame_ms;  // 0 when absent
    char *text;                    // pg.delta / stt / tts text, decoded into the caller's buffer
    size_t text_len;
} pg_relay_msg;

// Parse one text frame. text_buf (cap bytes) receives the decoded text field. Returns the type;
// a text longer than text_cap is an INVALID frame (the caller sizes it to the frame size).
pg_msg_type pg_proto_parse(const char *frame, size_t n, pg_relay_msg *m, char *text_buf, size_t text_cap);

#endif
