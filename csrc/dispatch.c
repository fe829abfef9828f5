/* Runtime SIMD dispatch (internal.h, bnfast.h: bnf_simd_*): the levels
   this build has (BNF_HAVE_V3, BNF_HAVE_V4, defined by setup.py when it
   compiled the kernel files for them), the levels this CPU runs (cpuid and
   xgetbv, read once), and the table of entry points of the level in use.
   Compiled once, for the baseline. */
#include <stddef.h>

#include "bnfast.h"

extern const bnf_kernels bnf_table_base[BNF_NDTYPES];
#if defined(BNF_HAVE_V3)
extern const bnf_kernels bnf_table_v3[BNF_NDTYPES];
#endif
#if defined(BNF_HAVE_V4)
extern const bnf_kernels bnf_table_v4[BNF_NDTYPES];
#endif

static const char *const bnf_level_names[BNF_SIMD_NLEVELS] = {
    "baseline", "x86-64-v3", "x86-64-v4"};

static const bnf_kernels *const bnf_level_tables[BNF_SIMD_NLEVELS] = {
    bnf_table_base,
#if defined(BNF_HAVE_V3)
    bnf_table_v3,
#else
    NULL,
#endif
#if defined(BNF_HAVE_V4)
    bnf_table_v4,
#else
    NULL,
#endif
};

/* ------------------------------------------------------- CPU features */

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) ||            \
    defined(_M_IX86)
#define BNF_X86 1
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static void bnf_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    int a[4];
    __cpuidex(a, (int)leaf, (int)sub);
    r[0] = (unsigned)a[0], r[1] = (unsigned)a[1];
    r[2] = (unsigned)a[2], r[3] = (unsigned)a[3];
}
static unsigned long long bnf_xgetbv0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void bnf_cpuid(unsigned leaf, unsigned sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
/* xgetbv as bytes: assemblers and flags without -mxsave take it */
static unsigned long long bnf_xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ __volatile__(".byte 0x0f, 0x01, 0xd0"
                         : "=a"(lo), "=d"(hi)
                         : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#else
#define BNF_X86 0
#endif

#define BNF_BIT(v, b) (((v) >> (b)) & 1u)

/* The best level this CPU and OS run: x86-64-v3 needs AVX, AVX2, FMA,
   F16C, BMI1, BMI2, LZCNT and MOVBE (and SSE4.2, POPCNT, ... which come
   with them) and the OS saving the YMM registers; x86-64-v4 adds AVX-512
   F, BW, CD, DQ and VL and the OS saving the ZMM registers. */
static int bnf_cpu_level(void)
{
#if BNF_X86
    unsigned r[4], max, ext, c1, b7;
    unsigned long long xcr0;
    int v3, v4;
    bnf_cpuid(0, 0, r);
    max = r[0];
    if (max < 7)
        return BNF_SIMD_BASELINE;
    bnf_cpuid(1, 0, r);
    c1 = r[2];
    /* OSXSAVE (27): xgetbv may be used */
    if (!(BNF_BIT(c1, 27) && BNF_BIT(c1, 28)))
        return BNF_SIMD_BASELINE;
    xcr0 = bnf_xgetbv0();
    bnf_cpuid(7, 0, r);
    b7 = r[1];
    bnf_cpuid(0x80000000u, 0, r);
    ext = r[0];
    if (ext < 0x80000001u)
        return BNF_SIMD_BASELINE;
    bnf_cpuid(0x80000001u, 0, r);
    v3 = BNF_BIT(c1, 12) /* FMA */ && BNF_BIT(c1, 19) /* SSE4.1 */ &&
         BNF_BIT(c1, 20) /* SSE4.2 */ && BNF_BIT(c1, 22) /* MOVBE */ &&
         BNF_BIT(c1, 23) /* POPCNT */ && BNF_BIT(c1, 29) /* F16C */ &&
         BNF_BIT(b7, 3) /* BMI1 */ && BNF_BIT(b7, 5) /* AVX2 */ &&
         BNF_BIT(b7, 8) /* BMI2 */ && BNF_BIT(r[2], 5) /* LZCNT */ &&
         (xcr0 & 0x6) == 0x6; /* XMM and YMM state */
    if (!v3)
        return BNF_SIMD_BASELINE;
    v4 = BNF_BIT(b7, 16) /* AVX512F */ && BNF_BIT(b7, 17) /* DQ */ &&
         BNF_BIT(b7, 28) /* CD */ && BNF_BIT(b7, 30) /* BW */ &&
         BNF_BIT(b7, 31) /* VL */;
#if defined(__APPLE__)
    /* macOS enables the AVX-512 state on first use: XCR0 does not show
       it beforehand; the kernel says whether it will */
    if (v4) {
        int on = 0;
        size_t len = sizeof on;
        if (sysctlbyname("hw.optional.avx512f", &on, &len, NULL, 0) != 0)
            on = 0;
        v4 = on != 0;
    }
#else
    v4 = v4 && (xcr0 & 0xe6) == 0xe6; /* opmask, ZMM0-15, ZMM16-31 */
#endif
    return v4 ? BNF_SIMD_V4 : BNF_SIMD_V3;
#else
    return BNF_SIMD_BASELINE;
#endif
}

/* --------------------------------------------------------- the choice */

static int bnf_cpu = -1;   /* bnf_cpu_level(), once */
static int bnf_level = -1; /* the level in use */
static const bnf_kernels *bnf_active = NULL;

static void bnf_dispatch_init(void)
{
    int l;
    if (bnf_active != NULL)
        return;
    bnf_cpu = bnf_cpu_level();
    for (l = bnf_cpu; l > BNF_SIMD_BASELINE; l--)
        if (bnf_level_tables[l] != NULL)
            break;
    bnf_level = l;
    bnf_active = bnf_level_tables[l];
}

const char *bnf_simd_name(int level)
{
    return level >= 0 && level < BNF_SIMD_NLEVELS ? bnf_level_names[level]
                                                  : NULL;
}

int bnf_simd_built(int level)
{
    return level >= 0 && level < BNF_SIMD_NLEVELS &&
           bnf_level_tables[level] != NULL;
}

int bnf_simd_cpu(int level)
{
    bnf_dispatch_init();
    return level >= 0 && level <= bnf_cpu;
}

int bnf_simd_get(void)
{
    bnf_dispatch_init();
    return bnf_level;
}

int bnf_simd_set(int level)
{
    if (!bnf_simd_built(level) || !bnf_simd_cpu(level))
        return -1;
    bnf_level = level;
    bnf_active = bnf_level_tables[level];
    return 0;
}

const bnf_kernels *bnf_kernels_for(int dtype)
{
    if (dtype < 0 || dtype >= BNF_NDTYPES)
        return NULL;
    bnf_dispatch_init();
    return &bnf_active[dtype];
}
