/* Benchmark-only helper, not part of the kernels: a copy of n bytes with
   streaming (non-temporal) stores, the second half of the benchmark's
   roofline (benchmarks/bench.py times it beside np.copyto and takes the
   faster of the two).  Streaming stores write whole cache lines without
   reading them first, so a copy moves 2 bytes over the memory bus per byte
   instead of 3; glibc's memcpy switches to them only above a threshold
   derived from the cache size the machine reports, which is why the
   benchmark measures both.

   Plain C99 with SSE2 intrinsics (every x86-64 has them); a plain memcpy on
   other architectures.  One thread, no Python headers. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64) || defined(__x86_64__)
#include <emmintrin.h>
#define BNF_HAVE_STREAM 1
#else
#define BNF_HAVE_STREAM 0
#endif

/* 1 if bnf_stream_copy uses streaming stores on this build, else 0. */
int bnf_stream_copy_streams(void) { return BNF_HAVE_STREAM; }

/* Copies n bytes from src to dst (not overlapping). */
void bnf_stream_copy(const void *src, void *dst, size_t n)
{
#if BNF_HAVE_STREAM
    const unsigned char *s = (const unsigned char *)src;
    unsigned char *d = (unsigned char *)dst;
    /* head: up to the first 16-byte aligned byte of dst */
    size_t head = (size_t)((16 - ((uintptr_t)d & 15)) & 15);
    size_t i;
    if (head > n)
        head = n;
    memcpy(d, s, head);
    s += head;
    d += head;
    n -= head;
    /* one 64-byte cache line per iteration: four 16-byte streaming stores */
    for (i = 0; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_stream_si128((__m128i *)(d + i), a);
        _mm_stream_si128((__m128i *)(d + i + 16), b);
        _mm_stream_si128((__m128i *)(d + i + 32), c);
        _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    for (; i + 16 <= n; i += 16)
        _mm_stream_si128((__m128i *)(d + i),
                         _mm_loadu_si128((const __m128i *)(s + i)));
    /* the streaming stores are weakly ordered: fence before anyone reads */
    _mm_sfence();
    memcpy(d + i, s + i, n - i);
#else
    memcpy(dst, src, n);
#endif
}
