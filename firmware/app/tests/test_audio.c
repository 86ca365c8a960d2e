// C unit tests of the device's voice logic (firmware/app/audio.c), run under ASan + UBSan by
// tests/test_firmware_voice.py: the push-to-talk state machine (press, release, barge-in, abort,
// stale packets of an aborted reply, the three listening modes), the listen/abort messages, the
// playback queue (wrap-around, overflow, flush), and the relay hello's audio_params.
#include <stdio.h>
#include <string.h>

#include "audio.h"
#include "relay_proto.h"
#include "check.h"  // CHECK, failures, checks

static void test_messages(void) {
    char out[256];
    CHECK(pg_audio_listen_start("s-1", PG_LISTEN_MANUAL, out, sizeof out) == 0);
    CHECK(strcmp(out, "{\"session_id\":\"s-1\",\"type\":\"listen\",\"state\":\"start\",\"mode\":\"manual\"}") == 0);
    CHECK(pg_audio_listen_start(NULL, PG_LISTEN_AUTO, out, sizeof out) == 0);
    CHECK(strcmp(out, "{\"session_id\":\"\",\"type\":\"listen\",\"state\":\"start\",\"mode\":\"auto\"}") == 0);
    CHECK(pg_audio_listen_stop("s-1", out, sizeof out) == 0);
    CHECK(strcmp(out, "{\"session_id\":\"s-1\",\"type\":\"listen\",\"state\":\"stop\"}") == 0);
    CHECK(pg_audio_abort("s-1", NULL, out, sizeof out) == 0);
    CHECK(strcmp(out, "{\"session_id\":\"s-1\",\"type\":\"abort\"}") == 0);
    CHECK(pg_audio_abort("s-1", "wake_word_detected", out, sizeof out) == 0);
    CHECK(strcmp(out, "{\"session_id\":\"s-1\",\"type\":\"abort\",\"reason\":\"wake_word_detected\"}") == 0);
    CHECK(pg_audio_listen_stop("s-1", out, 10) == -1);  // too small: refused, never cut
    pg_listen_mode m;
    CHECK(pg_listen_mode_parse("realtime", &m) == 0 && m == PG_LISTEN_REALTIME);
    CHECK(pg_listen_mode_parse("loud", &m) == -1);
}

// The everyday push-to-talk turn: press, speak, release, reply, tts stop.
static void test_push_to_talk(void) {
    pg_voice v;
    pg_voice_init(&v, PG_LISTEN_MANUAL);
    CHECK(v.state == PG_VOICE_IDLE);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_DROP);  // nothing asked for: dropped
    CHECK(pg_voice_step(&v, PG_VEV_RELEASE) == 0);
    CHECK(pg_voice_step(&v, PG_VEV_PRESS) == (PG_VACT_LISTEN_START | PG_VACT_MIC_ON));
    CHECK(v.state == PG_VOICE_LISTENING && v.mic_on);
    CHECK(pg_voice_step(&v, PG_VEV_PRESS) == 0);     // still held
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == 0);  // late stop of an older reply: ignored
    CHECK(pg_voice_step(&v, PG_VEV_RELEASE) == (PG_VACT_LISTEN_STOP | PG_VACT_MIC_OFF));
    CHECK(v.state == PG_VOICE_THINKING && !v.mic_on);
    CHECK(pg_voice_step(&v, PG_VEV_STT) == 0);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_DROP);  // audio only after tts start
    CHECK(pg_voice_step(&v, PG_VEV_TTS_START) == 0 && v.state == PG_VOICE_SPEAKING);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_PLAY);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_START) == 0 && v.state == PG_VOICE_SPEAKING);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_PLAY);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == PG_VACT_END);  // no FLUSH: what is queued plays out
    CHECK(v.state == PG_VOICE_IDLE && v.n_aborts == 0 && v.n_dropped == 2);
    // a turn the relay answers with nothing (it heard silence)
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == PG_VACT_END && v.state == PG_VOICE_IDLE);
}

// Talking over the reply: abort it at once, flush the speaker, start the next utterance.
static void test_barge_in_and_abort(void) {
    pg_voice v;
    pg_voice_init(&v, PG_LISTEN_MANUAL);
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    pg_voice_step(&v, PG_VEV_TTS_START);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_PLAY);
    unsigned a = pg_voice_step(&v, PG_VEV_PRESS);
    CHECK(a == (PG_VACT_SEND_ABORT | PG_VACT_FLUSH | PG_VACT_LISTEN_START | PG_VACT_MIC_ON));
    CHECK(v.state == PG_VOICE_LISTENING && v.n_aborts == 1);
    // packets and the stop of the aborted reply still in flight: never played
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_DROP);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_START) == 0 && v.state == PG_VOICE_LISTENING);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == 0 && v.state == PG_VOICE_LISTENING);
    CHECK(v.stale == 0);  // the aborted reply's stop came while listening
    CHECK(pg_voice_step(&v, PG_VEV_RELEASE) == (PG_VACT_LISTEN_STOP | PG_VACT_MIC_OFF));
    // a press while the relay is still thinking is a barge-in too
    a = pg_voice_step(&v, PG_VEV_PRESS);
    CHECK((a & PG_VACT_SEND_ABORT) && (a & PG_VACT_LISTEN_START) && v.state == PG_VOICE_LISTENING);
    // cancel while listening: stop listening and abort, nothing more to play
    a = pg_voice_step(&v, PG_VEV_ABORT);
    CHECK(a == (PG_VACT_LISTEN_STOP | PG_VACT_SEND_ABORT | PG_VACT_MIC_OFF | PG_VACT_FLUSH | PG_VACT_END));
    CHECK(v.state == PG_VOICE_IDLE && !v.mic_on);
    // cancel while speaking
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    pg_voice_step(&v, PG_VEV_TTS_START);
    a = pg_voice_step(&v, PG_VEV_ABORT);
    CHECK(a == (PG_VACT_SEND_ABORT | PG_VACT_FLUSH | PG_VACT_END) && v.state == PG_VOICE_IDLE);
    // the relay goes silent: abort and end; the connection drops: end, nothing sent
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    a = pg_voice_step(&v, PG_VEV_TIMEOUT);
    CHECK((a & PG_VACT_SEND_ABORT) && (a & PG_VACT_END) && v.state == PG_VOICE_IDLE);
    pg_voice_step(&v, PG_VEV_PRESS);
    a = pg_voice_step(&v, PG_VEV_CLOSED);
    CHECK(a == (PG_VACT_MIC_OFF | PG_VACT_FLUSH | PG_VACT_END) && v.state == PG_VOICE_IDLE && !v.mic_on);
    // a relay error ends the turn without an abort (the relay already dropped it)
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    a = pg_voice_step(&v, PG_VEV_ERROR);
    CHECK(a == PG_VACT_END && v.state == PG_VOICE_IDLE);
}

// A very short barge-in: the aborted reply's packets and tts stop arrive after the new utterance
// ended. They must not end the new turn or play; the new reply then plays normally.
static void test_late_tail_of_an_aborted_reply(void) {
    pg_voice v;
    pg_voice_init(&v, PG_LISTEN_MANUAL);
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    pg_voice_step(&v, PG_VEV_TTS_START);
    pg_voice_step(&v, PG_VEV_PRESS);  // barge-in: abort sent
    CHECK(v.stale == 1);
    pg_voice_step(&v, PG_VEV_RELEASE);
    CHECK(v.state == PG_VOICE_THINKING);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_DROP);     // old reply, still in flight
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == 0);             // its stop: not the end of this turn
    CHECK(v.state == PG_VOICE_THINKING && v.stale == 0);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_START) == 0 && v.state == PG_VOICE_SPEAKING);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_PLAY);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == PG_VACT_END && v.state == PG_VOICE_IDLE);
}

// auto: a click opens the microphone, the relay's VAD ends the utterance; realtime keeps listening.
static void test_modes(void) {
    pg_voice v;
    pg_voice_init(&v, PG_LISTEN_AUTO);
    CHECK(pg_voice_step(&v, PG_VEV_PRESS) == (PG_VACT_LISTEN_START | PG_VACT_MIC_ON));
    CHECK(pg_voice_step(&v, PG_VEV_RELEASE) == 0 && v.state == PG_VOICE_LISTENING && v.mic_on);
    CHECK(pg_voice_step(&v, PG_VEV_STT) == PG_VACT_MIC_OFF && v.state == PG_VOICE_THINKING);
    pg_voice_step(&v, PG_VEV_TTS_START);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == PG_VACT_END && v.state == PG_VOICE_IDLE);
    // auto, a second click before the relay heard anything: stop listening
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    CHECK(pg_voice_step(&v, PG_VEV_PRESS) == (PG_VACT_LISTEN_STOP | PG_VACT_MIC_OFF | PG_VACT_FLUSH | PG_VACT_END));

    pg_voice_init(&v, PG_LISTEN_REALTIME);
    pg_voice_step(&v, PG_VEV_PRESS);
    pg_voice_step(&v, PG_VEV_RELEASE);
    CHECK(pg_voice_step(&v, PG_VEV_STT) == 0 && v.state == PG_VOICE_LISTENING);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_START) == 0 && v.state == PG_VOICE_SPEAKING && v.mic_on);
    CHECK(pg_voice_step(&v, PG_VEV_AUDIO) == PG_VACT_PLAY);
    CHECK(pg_voice_step(&v, PG_VEV_TTS_STOP) == 0 && v.state == PG_VOICE_LISTENING && v.mic_on);
    pg_voice_step(&v, PG_VEV_TTS_START);
    unsigned a = pg_voice_step(&v, PG_VEV_PRESS);  // realtime: a press stops everything
    CHECK(a == (PG_VACT_SEND_ABORT | PG_VACT_LISTEN_STOP | PG_VACT_MIC_OFF | PG_VACT_FLUSH | PG_VACT_END));
    CHECK(v.state == PG_VOICE_IDLE && !v.mic_on);
}

static void test_queue(void) {
    uint8_t ring[64], pkt[PG_AUDIO_MAX_PACKET + 1], out[64];
    pg_audio_queue q;
    pg_audio_queue_init(&q, ring, sizeof ring);
    CHECK(pg_audio_queue_pop(&q, out, sizeof out) == 0);
    for (int i = 0; i < (int)sizeof pkt; i++) pkt[i] = (uint8_t)(i * 7 + 1);
    CHECK(pg_audio_queue_push(&q, pkt, 0) == -1 && q.overflows == 0);  // empty: refused, not counted
    CHECK(pg_audio_queue_push(&q, pkt, PG_AUDIO_MAX_PACKET + 1) == -1 && q.overflows == 1);
    // many rounds of different sizes: every record wraps around the 64-byte ring at some point
    int ok = 1;
    for (int round = 0; round < 200; round++) {
        size_t a = 5 + (size_t)(round % 17), b = 3 + (size_t)(round % 11);
        ok &= pg_audio_queue_push(&q, pkt + round % 50, a) == 0;
        ok &= pg_audio_queue_push(&q, pkt + round % 30, b) == 0;
        ok &= q.count == 2;
        ok &= pg_audio_queue_pop(&q, out, sizeof out) == a && memcmp(out, pkt + round % 50, a) == 0;
        ok &= pg_audio_queue_pop(&q, out, sizeof out) == b && memcmp(out, pkt + round % 30, b) == 0;
        ok &= q.count == 0 && q.used == 0;
    }
    CHECK(ok);
    // full: refused and counted, the packets already in stay intact and in order
    CHECK(pg_audio_queue_push(&q, pkt, 30) == 0);
    CHECK(pg_audio_queue_push(&q, pkt + 1, 30) == 0);
    CHECK(pg_audio_queue_push(&q, pkt + 2, 3) == -1 && q.overflows == 2);
    CHECK(pg_audio_queue_pop(&q, out, sizeof out) == 30 && memcmp(out, pkt, 30) == 0);
    CHECK(pg_audio_queue_push(&q, pkt + 2, 3) == 0);
    CHECK(pg_audio_queue_pop(&q, out, sizeof out) == 30 && memcmp(out, pkt + 1, 30) == 0);
    CHECK(pg_audio_queue_pop(&q, out, sizeof out) == 3 && memcmp(out, pkt + 2, 3) == 0);
    // abort: clear drops everything at once
    pg_audio_queue_push(&q, pkt, 10);
    pg_audio_queue_push(&q, pkt, 10);
    pg_audio_queue_clear(&q);
    CHECK(q.count == 0 && pg_audio_queue_pop(&q, out, sizeof out) == 0);
    CHECK(pg_audio_queue_push(&q, pkt + 9, 20) == 0 && pg_audio_queue_pop(&q, out, sizeof out) == 20 &&
          memcmp(out, pkt + 9, 20) == 0);
}

static void test_hello_audio_params(void) {
    static char text[512];
    pg_relay_msg m;
    const char *hello = "{\"type\":\"hello\",\"transport\":\"websocket\",\"session_id\":\"abc\",\"features\":{\"pocketgpt\":1},"
                        "\"audio_params\":{\"format\":\"opus\",\"sample_rate\":24000,\"channels\":1,\"frame_duration\":60}}";
    CHECK(pg_proto_parse(hello, strlen(hello), &m, text, sizeof text) == PG_MSG_HELLO);
    CHECK(strcmp(m.session_id, "abc") == 0 && strcmp(m.audio_format, "opus") == 0);
    CHECK(m.audio_rate == 24000 && m.audio_channels == 1 && m.audio_frame_ms == 60);
    const char *bare = "{\"type\":\"hello\",\"transport\":\"websocket\"}";
    CHECK(pg_proto_parse(bare, strlen(bare), &m, text, sizeof text) == PG_MSG_HELLO);
    CHECK(m.audio_rate == 0 && m.audio_format[0] == 0);  // absent: the device keeps 24 kHz / 60 ms
    const char *sent = "{\"type\":\"tts\",\"state\":\"sentence_start\",\"text\":\"Hello there.\"}";
    CHECK(pg_proto_parse(sent, strlen(sent), &m, text, sizeof text) == PG_MSG_TTS);
    CHECK(strcmp(m.state, "sentence_start") == 0 && strcmp(m.text, "Hello there.") == 0);
}

int main(void) {
    test_messages();
    test_push_to_talk();
    test_barge_in_and_abort();
    test_late_tail_of_an_aborted_reply();
    test_modes();
    test_queue();
    test_hello_audio_params();
    printf("voice: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
