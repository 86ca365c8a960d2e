// pocketgpt app: where a prompt is answered (docs/routing.md, ../shared DESIGN "Hard prompts").
//
// The device escalates to the relay when the user forces it (/cloud), when the prompt does not
// fit the device context with room for a reply, when too many of its tokens are byte-level
// fallbacks (the prompt lies outside the device vocabulary), or when the device model is surprised
// by it (mean surprisal per token above a threshold). Pure decision: the caller measures.
#ifndef PG_ROUTER_H
#define PG_ROUTER_H

#include <stdint.h>

typedef enum {
    PG_ROUTE_LOCAL = 0,
    PG_ROUTE_FORCED,      // the user typed /cloud
    PG_ROUTE_TOO_LONG,    // prompt + min_reply tokens exceed the device context
    PG_ROUTE_VOCAB,       // byte-fallback fraction above max_bytefrac
    PG_ROUTE_SURPRISED,   // mean surprisal (nats/token) above max_surprisal
} pg_route;

typedef struct {
    int32_t n_ctx;          // device context (tokens)
    int32_t min_reply;      // tokens of room a local reply needs
    float max_bytefrac;     // 0..1; > 1 disables the vocabulary rule
    float max_surprisal;    // nats per token; <= 0 disables the surprisal rule
    int32_t min_tokens;     // the statistical rules need at least this many request tokens
} pg_router_cfg;

typedef struct {
    int forced;
    int32_t n_tokens;         // the whole prompt (chat layout included)
    int32_t n_request;        // the request's own tokens
    int32_t n_bytefallback;   // request tokens that are single letters or non-ASCII bytes
    float mean_surprisal;     // nats per request token, each predicted from the prompt before it
} pg_prompt_stats;

void pg_router_defaults(pg_router_cfg *c);
pg_route pg_router_decide(const pg_router_cfg *c, const pg_prompt_stats *s);
const char *pg_route_name(pg_route r);  // "local", "forced", "too_long", "vocab", "surprised"
// Is this token (its raw bytes) a byte-level fallback for the router's vocabulary rule?
int pg_router_is_bytefallback(const uint8_t *bytes, uint32_t len);

#endif
