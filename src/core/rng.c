/* xoshiro256** seeded through splitmix64 (Blackman and Vigna, 2018). */
#include "equivar/tensor.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void eq_rng_seed(eq_rng *rng, uint64_t seed)
{
    uint64_t state = seed;

    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&state);
}

uint64_t eq_rng_u64(eq_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t eq_rng_below(eq_rng *rng, uint64_t bound)
{
    /* Rejection sampling keeps the draw exactly uniform for any bound. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t value;

    do {
        value = eq_rng_u64(rng);
    } while (value >= limit);
    return value % bound;
}

float eq_rng_uniform(eq_rng *rng)
{
    /* The top 24 bits give every float in [0, 1) with spacing 2^-24. */
    return (float)(eq_rng_u64(rng) >> 40) * (1.0f / 16777216.0f);
}

float eq_rng_normal(eq_rng *rng)
{
    /* Box-Muller; u1 is kept away from 0 so that log stays finite. */
    double u1 = ((double)(eq_rng_u64(rng) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(eq_rng_u64(rng) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
