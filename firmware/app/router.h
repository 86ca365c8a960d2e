// pocketgpt app: where a prompt is answered (docs/routing.md: the policy and its measurements).
//
// The device escalates to the relay when the user forces it (/cloud), when the prompt does not
// fit the device context with room for a reply, when too many of its tokens are byte-level
// fallbacks (the prompt lies outside the device vocabulary), or when the device model is surprised
// by it (its PG_ROUTER_PEAK_K least expected request tokens average above a threshold: a request
// about a subject the model knows has few surprising words, a technical question several; the
// mean over all tokens is diluted by the easy words every request has). Pure decision: the caller
// measures. The defaults, measured in docs/routing.md, live in pg_router_defaults only.
#ifndef PG_ROUTER_H
#define PG_ROUTER_H

#include <stdint.h>

typedef enum {
    PG_ROUTE_LOCAL = 0,
    PG_ROUTE_FORCED,      // the user typed /cloud
    PG_ROUTE_TOO_LONG,    // prompt + min_reply tokens exceed the device context
    PG_ROUTE_VOCAB,       // byte-fallback fraction above max_bytefrac
    PG_ROUTE_SURPRISED,   // peak surprisal (nats/token) above max_surprisal
} pg_route;

typedef struct {
    int32_t n_ctx;          // device context (tokens)
    int32_t min_reply;      // tokens of room a local reply needs
    float max_bytefrac;     // 0..1; > 1 disables the vocabulary rule
    float max_surprisal;    // peak surprisal, nats per token; <= 0 disables the surprisal rule
    int32_t min_tokens;     // the statistical rules need at least this many request tokens
} pg_router_cfg;

typedef struct {
    int forced;
    int32_t n_tokens;         // the whole prompt (chat layout included)
    int32_t n_request;        // the request's own tokens
    int32_t n_bytefallback;   // request tokens that are single letters or non-ASCII bytes
    float mean_surprisal;     // nats per request token, each predicted from the prompt before it
    float peak_surprisal;     // the mean of the PG_ROUTER_PEAK_K largest of those (all of them when fewer)
} pg_prompt_stats;

#define PG_ROUTER_PEAK_K 3

void pg_router_defaults(pg_router_cfg *c);
// Keep the k largest surprisals seen so far (top[0..k), descending; *n of them filled).
void pg_router_peak_add(float *top, int32_t *n, float s);
float pg_router_peak(const float *top, int32_t n);
pg_route pg_router_decide(const pg_router_cfg *c, const pg_prompt_stats *s);
const char *pg_route_name(pg_route r);  // "local", "forced", "too_long", "vocab", "surprised"
// Is this token (its raw bytes) a byte-level fallback for the router's vocabulary rule?
int pg_router_is_bytefallback(const uint8_t *bytes, uint32_t len);

#endif
