// pocketgpt app: one voice turn (see pg_app_voice in pg_app.h): push-to-talk, the microphone
// streamed to the relay as Opus, the reply played. pg_voice_step (audio.h) decides what to do
// next; this file does the I/O it asks for.
#include <stdio.h>
#include <string.h>

#include "app_internal.h"
#include "relay_proto.h"

#define VOICE_MIN_WAIT_MS 15000  // the least a voice turn waits on the relay (relay.timeout_ms when larger)
#define VOICE_BURST 32          // relay messages handled between two microphone frames, at most

typedef struct {
    uint32_t t_press, t_release, t_first_audio;  // ms on the port's clock (t_* 0: not yet)
    uint32_t up_packets, down_packets, bad_packets;
    uint64_t played;     // reply samples handed to the speaker
    int got_first;
} voice_stats;

// A transcript or a sentence on its own line (any length: not through pg_app_printf's buffer).
static void voice_line(pg_app *app, const char *label, const pg_relay_msg *m) {
    out(app, label, strlen(label));
    out(app, m->text, m->text_len);
    out(app, "\n", 1);
}

static int voice_text(pg_app *app, const char *frame) { return pg_ws_send_text(&app->ws, frame, strlen(frame)); }

// Decode queued packets into the speaker: as many as it takes now, or (all) every one, waiting on it.
static void voice_play(pg_app *app, voice_stats *vs, int all) {
    const pg_audio_port *a = app->port.audio;
    void *ctx = app->port.ctx;
    size_t frame = (size_t)app->down_rate * (size_t)app->down_frame_ms / 1000;
    while (app->play_q.count) {
        if (!all && a->speaker_room(ctx) < frame) return;
        size_t n = pg_audio_queue_pop(&app->play_q, app->vpkt, PG_AUDIO_MAX_PACKET);
        int k = n ? a->decode(ctx, app->vpkt, n, app->vpcm, PG_AUDIO_MAX_DECODED) : -1;
        if (k < 0) {
            vs->bad_packets++;
            continue;
        }
        a->speaker_write(ctx, app->vpcm, (size_t)k, (int)app->down_rate);
        vs->played += (uint64_t)k;
    }
}

// Perform a step's actions (order: stop listening, abort, flush, start listening, play). -1 when
// the connection failed on the way.
static int voice_do(pg_app *app, pg_voice *v, unsigned act, const uint8_t *pkt, size_t n, voice_stats *vs) {
    const pg_audio_port *a = app->port.audio;
    void *ctx = app->port.ctx;
    uint32_t now = a->now_ms(ctx);
    int bad = 0;
    if (act & PG_VACT_LISTEN_STOP) {
        pg_audio_listen_stop(app->session_id, app->frame, PG_APP_NET_BUF);
        bad |= voice_text(app, app->frame);
    }
    if ((act & PG_VACT_MIC_OFF) && !vs->t_release) vs->t_release = now;
    if (act & PG_VACT_SEND_ABORT) {
        // XiaoZhi devices give this reason when the user talks over the reply
        pg_audio_abort(app->session_id, (act & PG_VACT_LISTEN_START) ? "wake_word_detected" : NULL, app->frame,
                       PG_APP_NET_BUF);
        bad |= voice_text(app, app->frame);
    }
    if (act & PG_VACT_FLUSH) {
        pg_audio_queue_clear(&app->play_q);
        a->speaker_flush(ctx);
    }
    if (act & PG_VACT_LISTEN_START) {
        pg_audio_listen_start(app->session_id, v->mode, app->frame, PG_APP_NET_BUF);
        bad |= voice_text(app, app->frame);
        vs->t_press = now;
        vs->t_release = 0;
        vs->got_first = 0;
    }
    if (act & PG_VACT_PLAY) {
        vs->down_packets++;
        if (!vs->got_first) {
            vs->got_first = 1;
            vs->t_first_audio = now;
        }
        if (pg_audio_queue_push(&app->play_q, pkt, n)) vs->bad_packets++;
    }
    return bad ? -1 : 0;
}

// One message from the relay during a turn: the state machine's event for it, performed. Returns
// the step's actions (0 for messages that are not voice events).
static unsigned voice_message(pg_app *app, pg_voice *v, pg_ws_event ev, const uint8_t *data, size_t n,
                              voice_stats *vs, int *lost) {
    unsigned act;
    if (ev == PG_WS_BINARY) {
        act = pg_voice_step(v, PG_VEV_AUDIO);
        if (n == 0 || n > PG_AUDIO_MAX_PACKET) act &= ~(unsigned)PG_VACT_PLAY;  // not an Opus packet we take
        if (voice_do(app, v, act, data, n, vs)) *lost = 1;
        return act;
    }
    pg_relay_msg m;
    pg_msg_type t = pg_proto_parse((const char *)data, n, &m, app->text, PG_APP_NET_BUF);
    pg_voice_event vev;
    if (t == PG_MSG_STT) {
        voice_line(app, "[you] ", &m);
        vev = PG_VEV_STT;
    } else if (t == PG_MSG_TTS && strcmp(m.state, "start") == 0) {
        vev = PG_VEV_TTS_START;
    } else if (t == PG_MSG_TTS && strcmp(m.state, "stop") == 0) {
        vev = PG_VEV_TTS_STOP;
    } else if (t == PG_MSG_TTS && strcmp(m.state, "sentence_start") == 0) {
        if (v->state == PG_VOICE_SPEAKING && !v->stale) voice_line(app, "[relay] ", &m);
        return 0;
    } else if (t == PG_MSG_ERROR) {
        pg_app_printf(app, "[relay] error %s: %s\n", m.code, m.message);
        vev = PG_VEV_ERROR;
    } else {
        return 0;  // llm emotion, our text extension, anything newer
    }
    act = pg_voice_step(v, vev);
    if (voice_do(app, v, act, NULL, 0, vs)) *lost = 1;
    return act;
}

void pg_app_voice(pg_app *app, const char *arg) {
    const pg_audio_port *a = app->port.audio;
    void *ctx = app->port.ctx;
    char err[200];
    if (!a) {
        pg_app_printf(app, "(voice: %s has no microphone and speaker)\n", app->port.platform);
        return;
    }
    int was_open = app->net_open && app->ws.open;
    if (relay_connect(app, err, sizeof err)) {
        snprintf(app->last_error, sizeof app->last_error, "%s", err);
        pg_app_printf(app, "[voice] the relay is unreachable (%s); voice needs the relay\n", err);
        return;
    }
    if (!was_open) app->voice_stale = 0;  // a new connection owes nothing
    if (app->down_format[0] && strcmp(app->down_format, "opus") != 0) {
        pg_app_printf(app, "[voice] the relay's audio is '%s'; this device plays opus only\n", app->down_format);
        return;
    }
    if (a->encoder_open(ctx, PG_AUDIO_UP_RATE, PG_AUDIO_UP_FRAME_MS, err, sizeof err) ||
        a->decoder_open(ctx, (int)app->down_rate, (int)app->down_frame_ms, err, sizeof err)) {
        pg_app_printf(app, "[voice] codec: %s\n", err);
        return;
    }
    if (a->mic_arm(ctx, arg, err, sizeof err)) {
        pg_app_printf(app, "[voice] %s\n", err);
        return;
    }
    pg_voice v;
    pg_voice_init(&v, app->listen_mode);
    v.stale = app->voice_stale;
    voice_stats vs;
    memset(&vs, 0, sizeof vs);
    pg_audio_queue_clear(&app->play_q);
    app->last_first_audio_ms = -1;
    int pressed = 1, lost = 0;
    unsigned act = pg_voice_step(&v, PG_VEV_PRESS);
    if (voice_do(app, &v, act, NULL, 0, &vs)) lost = 1;
    uint32_t t_heard = a->now_ms(ctx);  // the last message from the relay (for the reply timeout)
    // recognition + the first sentence + its synthesis take longer than a text reply's first token
    uint32_t wait_ms = app->set.relay_timeout_ms > VOICE_MIN_WAIT_MS ? (uint32_t)app->set.relay_timeout_ms
                                                                     : VOICE_MIN_WAIT_MS;
    while (!lost && !(act & PG_VACT_END)) {
        int p = a->ptt_pressed(ctx) ? 1 : 0;
        if (p != pressed) {
            pressed = p;
            // the end of speech: the button's release (auto mode keeps streaming until the relay's VAD)
            if (!p && v.state == PG_VOICE_LISTENING && !vs.t_release) vs.t_release = a->now_ms(ctx);
            act = pg_voice_step(&v, p ? PG_VEV_PRESS : PG_VEV_RELEASE);
            if (voice_do(app, &v, act, NULL, 0, &vs)) lost = 1;
            t_heard = a->now_ms(ctx);  // the relay's wait starts over at every press and release
            continue;
        }
        if (v.mic_on) {  // one 60 ms frame: paced by the microphone itself
            int k = a->mic_read(ctx, app->vmic, PG_AUDIO_UP_SAMPLES);
            int nb = k == PG_AUDIO_UP_SAMPLES ? a->encode(ctx, app->vmic, PG_AUDIO_UP_SAMPLES, app->vpkt,
                                                          PG_AUDIO_MAX_PACKET)
                                              : -1;
            if (nb < 0) {
                pg_app_printf(app, "[voice] the microphone failed; turn cancelled\n");
                act = pg_voice_step(&v, PG_VEV_ABORT);
                voice_do(app, &v, act, NULL, 0, &vs);
                break;
            }
            if (pg_ws_send_binary(&app->ws, app->vpkt, (size_t)nb)) {
                lost = 1;
                break;
            }
            vs.up_packets++;
        }
        // everything the relay sent meanwhile (while the microphone streams, without waiting)
        for (int burst = 0; burst < VOICE_BURST && !lost && !(act & PG_VACT_END); burst++) {
            const uint8_t *data;
            size_t n;
            pg_ws_event ev = pg_ws_recv(&app->ws, v.mic_on || burst ? 0 : 10, &data, &n);
            uint32_t now = a->now_ms(ctx);
            if (ev == PG_WS_CLOSED || ev == PG_WS_ERROR) {
                lost = 1;
                break;
            }
            if (ev == PG_WS_TIMEOUT) {
                // waiting on the relay: a reply, or (auto, realtime, the button up) the end of the utterance
                int waiting = v.state == PG_VOICE_THINKING || v.state == PG_VOICE_SPEAKING ||
                              (v.state == PG_VOICE_LISTENING && v.mode != PG_LISTEN_MANUAL && !pressed);
                if (waiting && now - t_heard > wait_ms) {
                    pg_app_printf(app, "[voice] (nothing from the relay for %lu ms: turn ended)\n",
                                  (unsigned long)wait_ms);
                    act = pg_voice_step(&v, PG_VEV_TIMEOUT);
                    if (voice_do(app, &v, act, NULL, 0, &vs)) lost = 1;
                }
                break;
            }
            t_heard = now;
            act = voice_message(app, &v, ev, data, n, &vs, &lost);
        }
        voice_play(app, &vs, 0);
    }
    if (lost) {
        int code = app->ws.close_code;
        pg_app_disconnect(app);
        act = pg_voice_step(&v, PG_VEV_CLOSED);
        pg_app_printf(app, "[voice] (connection lost, code %d)\n", code);
    }
    app->voice_stale = lost ? 0 : v.stale;
    if (!(act & PG_VACT_FLUSH)) voice_play(app, &vs, 1);  // play out what came before tts stop
    uint32_t spoke = vs.t_release >= vs.t_press ? vs.t_release - vs.t_press : 0;
    long first = vs.got_first && vs.t_release && vs.t_first_audio >= vs.t_release ? (long)(vs.t_first_audio - vs.t_release) : -1;
    app->last_first_audio_ms = (int32_t)first;
    double reply_s = app->down_rate > 0 ? (double)vs.played / (double)app->down_rate : 0.0;
    pg_app_printf(app, "(voice: %s mode, %lu ms spoken in %lu packets; reply %.2f s in %lu packets", pg_listen_mode_name(v.mode),
                  (unsigned long)spoke, (unsigned long)vs.up_packets, reply_s, (unsigned long)vs.down_packets);
    if (first >= 0) pg_app_printf(app, "; first reply audio %ld ms after the end of speech", first);
    if (v.n_aborts) pg_app_printf(app, "; %lu abort%s", (unsigned long)v.n_aborts, v.n_aborts == 1 ? "" : "s");
    if (vs.bad_packets) pg_app_printf(app, "; %lu bad packets", (unsigned long)vs.bad_packets);
    pg_app_printf(app, ")\n");
}
