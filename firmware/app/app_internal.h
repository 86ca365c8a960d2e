// pocketgpt app: what the app's own files share (pg_app.c: init, console, local model;
// app_relay.c: the relay client; app_voice.c: the voice turn). Not part of the app's API (pg_app.h).
#ifndef PG_APP_INTERNAL_H
#define PG_APP_INTERNAL_H

#include "pg_app.h"

// received Opus packets: ~5 s at 24 kHz / 60 ms; the relay paces at real time
#define VOICE_QUEUE_BYTES 16384

static inline void out(pg_app *app, const char *s, size_t n) { app->port.out(app->port.ctx, s, n); }

// Configure (when needed) and open the websocket to the relay, then the hello; 0 when connected
// (or already), -1 with err.
int relay_connect(pg_app *app, char *err, size_t err_cap);
// 1: answered (or the relay reported an error, shown); 0: relay not reachable before any output
// (err says why; the caller answers locally).
int relay_answer(pg_app *app, const char *prompt, char *err, size_t err_cap);

#endif
