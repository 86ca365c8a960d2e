// pocketgpt device simulator: the voice port (firmware/app/audio.h) on a POSIX host.
//
// Microphone: WAV files (any PCM-16 rate, mono or stereo; mixed down and resampled to 16 kHz),
// one file per push-to-talk press, streamed at real time. A folder is taken in name order, one file
// per /talk. Push-to-talk is held while the file lasts (a simulated finger). Speaker: a 24 kHz (or
// whatever the relay declared) WAV of everything played, written through a model of an I2S DMA
// buffer that drains at real time, so an abort cuts what was not played yet. Opus through the
// host's libopus (built with -DPG_SIM_OPUS -lopus; without it /talk says so).
#ifndef PG_SIM_AUDIO_H
#define PG_SIM_AUDIO_H

#include <stdio.h>

#include "audio.h"

typedef struct {
    // microphone
    char mic_path[1024];     // a WAV file or a folder of them ("" none)
    int mic_is_dir;
    char **files;            // the folder's WAVs, sorted
    int n_files, next_file;
    int16_t *pcm;            // the armed file at 16 kHz mono
    size_t n, pos;
    double t_armed;          // ms: when the press began (frames are due every 60 ms from here)
    double t_end;            // ms: when the file ran out (0 still speaking)
    int armed;
    int barge_ms;            // > 0: press again (the next file) this long after a release
    int barge_done;
    char last_file[1024];
    // speaker
    char speaker_path[1024]; // "" none: played audio is dropped
    FILE *out;
    int out_rate;
    uint64_t out_samples;
    double busy_until;       // ms: when the modelled DMA buffer runs empty
    int rate_warned;
    // codec (libopus when built with PG_SIM_OPUS)
    void *enc, *dec;
    int enc_rate, dec_rate;
} sim_audio;

// Check the paths (the microphone exists, the speaker file can be written). 0, or -1 with err.
int sim_audio_init(sim_audio *A, const char *mic, const char *speaker, int barge_ms, char *err, size_t err_cap);
// The port; its callbacks take a pointer to the sim_audio as ctx (the first member of the
// simulator's context, so pg_port.ctx works for both).
const pg_audio_port *sim_audio_port(void);
// Finish the speaker WAV (header sizes, then renamed into place; keep 0: removed, the run failed).
// 0, or -1 with err.
int sim_audio_close(sim_audio *A, int keep, char *err, size_t err_cap);

#endif
