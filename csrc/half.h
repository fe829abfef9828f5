/* Half-precision storage: float16 (IEEE binary16) and bfloat16 (the top
   half of a float32), both stored as uint16_t bits and computed in float32
   (instantiate.h: their LOAD and STORE).

   The conversions are integer code with selects, not _Float16 or the F16C
   intrinsics: GCC 12 leaves _Float16 conversions scalar (no vectorized
   loop), and the baseline (x86-64) level must give bitwise the results of
   the x86-64-v3/v4 levels (tools/simd_identity.py).  Branch-free, so the
   loops that call them vectorize at every SIMD level; exact: a load is
   exact, a store rounds to nearest, ties to even, Inf stays Inf and a NaN
   stays a NaN of the same sign.

   The f64 conversions (per-channel parameters and gradients, scalar)
   round once from double: to float32 by round-to-odd, then to nearest
   even (float32 has more than two bits beyond either format, so the
   double rounding is exact). */
#ifndef BNFAST_HALF_H
#define BNFAST_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define BNF_HALF_INLINE static inline __attribute__((always_inline))
#else
#define BNF_HALF_INLINE static inline
#endif

BNF_HALF_INLINE uint32_t bnf_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

BNF_HALF_INLINE float bnf_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* float16 bits -> float (exact; a NaN comes out quiet).  The exponent
   rebias of a normal value is a float multiply by 2**-112 (Inf and NaN
   stay so), a subnormal's value is formed by a float subtraction
   (Maratyszcza's FP16 library; checked against NumPy on every value by
   tests/test_half.py): fewer operations than per-case integer code, one
   select.  Written on the 15 magnitude bits as a 32-bit int (a signed
   compare, one instruction in AVX2, where the unsigned one is two), the
   sign ORed in last. */
BNF_HALF_INLINE float bnf_f16_load(uint16_t h)
{
    uint32_t e = (uint32_t)h & 0x7fffu;
    float nrm = bnf_f32_from_bits((e << 13) + 0x70000000u) * 0x1p-112f;
    float sub = bnf_f32_from_bits(e | 0x3f000000u) - 0.5f;
    uint32_t mag = (int32_t)e < 0x400 ? bnf_f32_bits(sub) : bnf_f32_bits(nrm);
    return bnf_f32_from_bits(mag | (((uint32_t)h & 0x8000u) << 16));
}

/* float -> float16 bits, to nearest even (as above: the rounding is a
   float addition of a power of two at the target's lowest bit, scaled so
   that overflow gives Inf and subnormals round at 2**-24); a NaN gives
   the quiet NaN 0x7e00 of its sign.

   The result is assembled in the high half of a 32-bit word and shifted
   down once at the end: written on 16-bit values, GCC's vectorizer
   narrows each part separately (in AVX2 a pack and a lane permute per
   part, the most expensive instructions of the loop); this way there is
   one narrowing per vector.  Same for bnf_bf16_store. */
BNF_HALF_INLINE uint16_t bnf_f16_store(float f)
{
    float base = (fabsf(f) * 0x1p+112f) * 0x1p-110f;
    uint32_t w = bnf_f32_bits(f), shl1 = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1 & 0xff000000u;
    bias = bias < 0x71000000u ? 0x71000000u : bias;
    base = bnf_f32_from_bits((bias >> 1) + 0x07800000u) + base;
    uint32_t bits = bnf_f32_bits(base);
    uint32_t hi = ((bits << 3) & 0x7c000000u) + ((bits << 16) & 0x0fff0000u);
    hi = (int32_t)(w & 0x7fffffffu) > 0x7f800000 ? 0x7e000000u : hi;
    return (uint16_t)((sign | hi) >> 16);
}

/* bfloat16 bits -> float (exact) */
BNF_HALF_INLINE float bnf_bf16_load(uint16_t h)
{
    return bnf_f32_from_bits((uint32_t)h << 16);
}

/* float -> bfloat16 bits, to nearest even; NaN stays a quiet NaN (its
   payload's top bits kept, as before) */
BNF_HALF_INLINE uint16_t bnf_bf16_store(float f)
{
    uint32_t u = bnf_f32_bits(f);
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    r = (int32_t)(u & 0x7fffffffu) > 0x7f800000 ? (u | 0x00400000u) : r;
    return (uint16_t)(r >> 16);
}

/* double -> float by round-to-odd (then a rounding to a format at least
   two bits shorter is the correctly rounded one of the double) */
static inline float bnf_f64_to_f32_odd(double d)
{
    float f = (float)d;
    if (!isnan(d) && (double)f != d) {
        uint32_t u = bnf_f32_bits(f);
        if (fabs((double)f) > fabs(d))
            u -= 1; /* toward zero */
        f = bnf_f32_from_bits(u | 1u);
    }
    return f;
}

static inline uint16_t bnf_f64_to_f16(double d)
{
    return bnf_f16_store(bnf_f64_to_f32_odd(d));
}

static inline uint16_t bnf_f64_to_bf16(double d)
{
    return bnf_bf16_store(bnf_f64_to_f32_odd(d));
}

static inline double bnf_f16_to_f64(uint16_t h)
{
    return (double)bnf_f16_load(h);
}

static inline double bnf_bf16_to_f64(uint16_t h)
{
    return (double)bnf_bf16_load(h);
}

#endif /* BNFAST_HALF_H */
