// A 4-bit weight x int8 activation matmul for AVX-512 VNNI: the measurement behind issue 13's
// "a 4-bit GEMV with fewer instructions per block" (scripts/bench-q4-kernel.py times it against
// ONNX Runtime's MatMulNBits on the same weights). Not used by phils' runtime.
//
// Weights: asymmetric 4-bit in blocks of 32 along K, as MatMulNBits holds them, re-laid out for
// vpdpbusd: for each group of 16 output rows and each block, 4 chunks of 64 bytes; byte r*4+j of
// chunk c holds row r's weights k = 8c+j (low nibble) and 8c+4+j (high nibble). Scales and
// zero point x scale are fp16, 16 per group and block. Activations are quantized to int8 per block
// of 32 (scale = max|x| / 127), as MLAS does at accuracy level 4.
#include <immintrin.h>
#include <stdint.h>

#define PREFETCH_BYTES 8192  // measured: 0.44 ms per 2560x10240 matrix without, 0.34 with (2 cores)
#define TOKENS_AT_ONCE 4

static void quantize_rows(const float* x, int M, int K, int8_t* xq, float* sx, float* sxsum) {
    int nb = K / 32;
    for (int m = 0; m < M; m++) {
        for (int b = 0; b < nb; b++) {
            const float* p = x + (size_t)m * K + b * 32;
            __m512 a0 = _mm512_loadu_ps(p), a1 = _mm512_loadu_ps(p + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a0), _mm512_abs_ps(a1)));
            float inv = amax > 0 ? 127.0f / amax : 0.0f;
            __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(a0, _mm512_set1_ps(inv)));
            __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(a1, _mm512_set1_ps(inv)));
            int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            _mm_storeu_si128((__m128i*)(xq + (size_t)m * K + b * 32), _mm512_cvtsepi32_epi8(q0));
            _mm_storeu_si128((__m128i*)(xq + (size_t)m * K + b * 32 + 16), _mm512_cvtsepi32_epi8(q1));
            sx[(size_t)m * nb + b] = amax / 127.0f;
            sxsum[(size_t)m * nb + b] = amax / 127.0f * (float)sum;
        }
    }
}

// 16 rows x up to TOKENS_AT_ONCE tokens; the high nibbles are used in place (x16) and the
// product shifted back, which saves a shift per chunk.
static inline void rows16(const uint8_t* W, const uint16_t* S, const uint16_t* Z, int nb, int K, int nt,
                          const int8_t* xq, const float* sx, const float* sxsum, __m512* out) {
    const __m512i lom = _mm512_set1_epi8(0x0F), him = _mm512_set1_epi8((char)0xF0);
    __m512 acc[TOKENS_AT_ONCE], cor[TOKENS_AT_ONCE];
    for (int t = 0; t < TOKENS_AT_ONCE; t++) acc[t] = cor[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t* w = W + (size_t)b * 256;
        for (int line = 0; line < 256; line += 64) _mm_prefetch((const char*)w + PREFETCH_BYTES + line, _MM_HINT_T0);
        __m512i lo[4], hi[4];
        for (int c = 0; c < 4; c++) {
            __m512i v = _mm512_loadu_si512(w + c * 64);
            lo[c] = _mm512_and_si512(v, lom);
            hi[c] = _mm512_and_si512(v, him);
        }
        __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(S + (size_t)b * 16)));
        __m512 z = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(Z + (size_t)b * 16)));
        #pragma GCC unroll 4
        for (int t = 0; t < TOKENS_AT_ONCE; t++) {
            if (t >= nt) break;
            const int32_t* xa = (const int32_t*)(xq + (size_t)t * K + b * 32);
            __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
            for (int c = 0; c < 4; c++) {
                d0 = _mm512_dpbusd_epi32(d0, lo[c], _mm512_set1_epi32(xa[2 * c]));
                d1 = _mm512_dpbusd_epi32(d1, hi[c], _mm512_set1_epi32(xa[2 * c + 1]));
            }
            __m512 d = _mm512_cvtepi32_ps(_mm512_add_epi32(d0, _mm512_srai_epi32(d1, 4)));
            acc[t] = _mm512_fmadd_ps(d, _mm512_mul_ps(s, _mm512_set1_ps(sx[(size_t)t * nb + b])), acc[t]);
            cor[t] = _mm512_fnmadd_ps(z, _mm512_set1_ps(sxsum[(size_t)t * nb + b]), cor[t]);
        }
    }
    for (int t = 0; t < nt; t++) out[t] = _mm512_add_ps(acc[t], cor[t]);
}

// y[M][N] = x[M][K] . W^T (+ bias). Scratch: xq M*K bytes; sx, sxsum M*K/32 floats each.
void q4_matmul(const uint8_t* W, const uint16_t* S, const uint16_t* Z, const float* bias, const float* x, float* y,
               int M, int N, int K, int8_t* xq, float* sx, float* sxsum) {
    int nb = K / 32, groups = N / 16;
    quantize_rows(x, M, K, xq, sx, sxsum);
    #pragma omp parallel for schedule(static)
    for (int g = 0; g < groups; g++) {
        __m512 bv = bias ? _mm512_loadu_ps(bias + g * 16) : _mm512_setzero_ps();
        for (int m0 = 0; m0 < M; m0 += TOKENS_AT_ONCE) {
            int nt = M - m0 < TOKENS_AT_ONCE ? M - m0 : TOKENS_AT_ONCE;
            __m512 out[TOKENS_AT_ONCE];
            rows16(W + (size_t)g * nb * 256, S + (size_t)g * nb * 16, Z + (size_t)g * nb * 16, nb, K, nt,
                   xq + (size_t)m0 * K, sx + (size_t)m0 * nb, sxsum + (size_t)m0 * nb, out);
            for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + (size_t)(m0 + t) * N + g * 16, _mm512_add_ps(out[t], bv));
        }
    }
}
