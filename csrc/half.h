/* Half-precision storage: float16 (IEEE binary16) and bfloat16 (the top
   half of a float32), both stored as uint16_t bits and computed in float32
   (instantiate.h: their LOAD and STORE).

   The conversions are integer code with selects, not _Float16 or the F16C
   intrinsics: GCC 12 leaves _Float16 conversions scalar (no vectorized
   loop), and the baseline (x86-64) build must give bitwise the results of
   the x86-64-v3/v4 clones (tools/simd_identity.py).  Branch-free, so the
   loops that call them vectorize at every SIMD level; exact: a load is
   exact, a store rounds to nearest, ties to even, Inf stays Inf and a NaN
   stays a (quiet) NaN of the same sign.

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

/* float16 bits -> float (exact) */
BNF_HALF_INLINE float bnf_f16_load(uint16_t h)
{
    uint32_t e = h & 0x7c00u, m = h & 0x3ffu;
    uint32_t s = (uint32_t)(h & 0x8000u) << 16;
    uint32_t nrm = ((uint32_t)(h & 0x7fffu) << 13) + (112u << 23);
    uint32_t inf = 0x7f800000u | (m << 13);
    /* zero and subnormals: m * 2**-24, exact in float */
    uint32_t sub = bnf_f32_bits((float)(int32_t)m * 0x1p-24f);
    uint32_t u = e == 0x7c00u ? inf : (e == 0 ? sub : nrm);
    return bnf_f32_from_bits(u | s);
}

/* float -> float16 bits, to nearest even */
BNF_HALF_INLINE uint16_t bnf_f16_store(float f)
{
    uint32_t u = bnf_f32_bits(f);
    uint32_t s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    /* normal results (rounding may carry into the exponent, up to Inf):
       rebias, add half an ulp less one plus the lowest kept bit */
    uint32_t nrm = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
    /* below 2**-14: adding 0.5 rounds to a multiple of 2**-24 */
    uint32_t sub = bnf_f32_bits(bnf_f32_from_bits(a) + 0.5f) - 0x3f000000u;
    /* from 2**16: Inf, or NaN (quiet, keeping the payload's top bits) */
    uint32_t big = a > 0x7f800000u ? 0x7e00u | ((a >> 13) & 0x3ffu) : 0x7c00u;
    uint32_t r = a >= 0x47800000u ? big : (a < 0x38800000u ? sub : nrm);
    return (uint16_t)(r | s);
}

/* bfloat16 bits -> float (exact) */
BNF_HALF_INLINE float bnf_bf16_load(uint16_t h)
{
    return bnf_f32_from_bits((uint32_t)h << 16);
}

/* float -> bfloat16 bits, to nearest even; NaN stays a quiet NaN */
BNF_HALF_INLINE uint16_t bnf_bf16_store(float f)
{
    uint32_t u = bnf_f32_bits(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : r);
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
