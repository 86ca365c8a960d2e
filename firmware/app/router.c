// pocketgpt app: the routing policy (see router.h).
#include "router.h"

void pg_router_defaults(pg_router_cfg *c) {
    c->n_ctx = 256;
    c->min_reply = 16;
    c->max_bytefrac = 0.35f;
    c->max_surprisal = 8.25f;  // peak surprisal; bench/routing.py on one-line requests (docs/routing.md)
    c->min_tokens = 4;
}

int pg_router_is_bytefallback(const uint8_t *bytes, uint32_t len) {
    if (len != 1) return 0;
    uint8_t b = bytes[0];
    // a lone letter or a piece of a multi-byte character: the vocabulary had no longer token;
    // spaces, digits and punctuation are single bytes in any vocabulary and say nothing
    return b >= 0x80 || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z');
}

pg_route pg_router_decide(const pg_router_cfg *c, const pg_prompt_stats *s) {
    if (s->forced) return PG_ROUTE_FORCED;
    if (s->n_tokens + c->min_reply > c->n_ctx) return PG_ROUTE_TOO_LONG;
    if (s->n_request >= c->min_tokens) {
        if (c->max_bytefrac <= 1.0f && (float)s->n_bytefallback > c->max_bytefrac * (float)s->n_request)
            return PG_ROUTE_VOCAB;
        if (c->max_surprisal > 0.0f && s->peak_surprisal > c->max_surprisal) return PG_ROUTE_SURPRISED;
    }
    return PG_ROUTE_LOCAL;
}

void pg_router_peak_add(float *top, int32_t *n, float s) {
    int32_t i;
    if (*n < PG_ROUTER_PEAK_K) i = (*n)++;
    else if (s <= top[PG_ROUTER_PEAK_K - 1]) return;  // not among the k largest
    else i = PG_ROUTER_PEAK_K - 1;
    for (; i > 0 && top[i - 1] < s; i--) top[i] = top[i - 1];
    top[i] = s;
}

float pg_router_peak(const float *top, int32_t n) {
    float sum = 0.0f;
    for (int32_t i = 0; i < n; i++) sum += top[i];
    return n ? sum / (float)n : 0.0f;
}

const char *pg_route_name(pg_route r) {
    switch (r) {
    case PG_ROUTE_LOCAL: return "local";
    case PG_ROUTE_FORCED: return "forced";
    case PG_ROUTE_TOO_LONG: return "too_long";
    case PG_ROUTE_VOCAB: return "vocab";
    case PG_ROUTE_SURPRISED: return "surprised";
    }
    return "?";
}
