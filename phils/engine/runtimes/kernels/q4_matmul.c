// phils.Q4MatMul: 4-bit weights x int8-quantized activations on AVX-512 VNNI, as an ONNX Runtime
// custom operator (the int4 runtime's matrices, in place of MatMulNBits when the CPU has VNNI).
//
// Why: on the 2-core AVX-512 machine this project measures on, MatMulNBits (MLAS, blocks of 32,
// accuracy level 4) reads a 2560x10240 matrix at ~35 GB/s where the machine streams ~78; this
// kernel prefetches ahead and spends fewer instructions per block (bench/results/q4-kernel.md:
// 0.22 against 0.31 ms for one token, 0.42 against 1.0 ms for eight).
//
// Y[M, N] = A[M, K] . W^T, W asymmetric 4-bit in blocks of 32 along K (what MatMulNBits holds),
// laid out for vpdpbusd: per group of 16 rows and per block, 4 chunks of 64 bytes; byte r*4+j of
// chunk c holds row r's weights k = 8c+j (low nibble) and 8c+4+j (high nibble). S and Z: the
// block's scale and zero point x scale, fp16, [N/16][K/32][16]. A is quantized to int8 per block
// of 32 (scale max|a| / 127, as MLAS at accuracy level 4). Each token's arithmetic is the same
// however many tokens a call carries, so a cached prefix gives what a fresh prefill gives.
// Optional input P (int32 [K]): W's columns are A's channels in that order (act-order GPTQ's groups
// made runs); A is read through it while being quantized, which costs next to nothing, where an
// ONNX Gather in front of the node cost ~20 % of Phi-2's prefill.
//
// phils.Q8MatMul: the same for 8-bit weights (an output head, the matrices a GGUF stores wider than 4
// bits), where MatMulNBits' 8-bit path took 41 % of Qwen2.5-Coder 1.5B's prefill and 45 % of its decode.
// Per group of 16 rows and block of 32: 8 chunks of 64 bytes, byte r*4+j of chunk c holding row r's
// weight k = 4c+j (0..255); Z holds each block's zero point (an integer, exact in fp16), so
// w = scale * (code - zero).
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ort_helpers.h"

#define PREFETCH_BYTES 8192  // 0.44 -> 0.34 ms a 2560x10240 matrix on 2 cores
#define TOKENS_AT_ONCE 4     // tokens that share each block's unpacked weights

typedef struct {
    int bits;  // 4 (Q4MatMul) or 8 (Q8MatMul)
    const uint8_t* w;
    const uint16_t *s, *z;
    const int8_t* xq;
    const float *sx, *sxsum;
    const float* a;
    const int32_t* perm;  // NULL: A's channels in W's order
    float* y;
    int64_t m, n, k;
    size_t chunks;
} Work;

static void quantize_row(const float* x, const int32_t* perm, int64_t k, int8_t* xq, float* sx, float* sxsum) {
    for (int64_t b = 0; b < k / 32; b++) {
        const float* p = x + b * 32;
        __m512 a0, a1;
        if (perm) {
            a0 = _mm512_i32gather_ps(_mm512_loadu_si512(perm + b * 32), x, 4);
            a1 = _mm512_i32gather_ps(_mm512_loadu_si512(perm + b * 32 + 16), x, 4);
        } else {
            a0 = _mm512_loadu_ps(p), a1 = _mm512_loadu_ps(p + 16);
        }
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a0), _mm512_abs_ps(a1)));
        float inv = amax > 0 ? 127.0f / amax : 0.0f;
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(a0, _mm512_set1_ps(inv)));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(a1, _mm512_set1_ps(inv)));
        _mm_storeu_si128((__m128i*)(xq + b * 32), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i*)(xq + b * 32 + 16), _mm512_cvtsepi32_epi8(q1));
        sx[b] = amax / 127.0f;
        sxsum[b] = amax / 127.0f * (float)_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

static void quantize_rows(void* data, size_t chunk) {
    Work* work = (Work*)data;
    int64_t nb = work->k / 32, per = (work->m + work->chunks - 1) / work->chunks;
    for (int64_t row = (int64_t)chunk * per; row < work->m && row < ((int64_t)chunk + 1) * per; row++)
        quantize_row(work->a + row * work->k, work->perm, work->k, (int8_t*)work->xq + row * work->k,
                     (float*)work->sx + row * nb, (float*)work->sxsum + row * nb);
}

// 16 output rows for up to TOKENS_AT_ONCE tokens. High nibbles are used in place (x16) and the
// product shifted back: one AND per chunk instead of a shift and an AND.
static inline void rows16(const uint8_t* w, const uint16_t* s16, const uint16_t* z16, int64_t nb, int64_t k,
                          int nt, const int8_t* xq, const float* sx, const float* sxsum, float* y, int64_t n) {
    const __m512i lom = _mm512_set1_epi8(0x0F), him = _mm512_set1_epi8((char)0xF0);
    __m512 acc[TOKENS_AT_ONCE], cor[TOKENS_AT_ONCE];
    for (int t = 0; t < TOKENS_AT_ONCE; t++) acc[t] = cor[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w += 256) {
        for (int line = 0; line < 256; line += 64) _mm_prefetch((const char*)w + PREFETCH_BYTES + line, _MM_HINT_T0);
        __m512i lo[4], hi[4];
        for (int c = 0; c < 4; c++) {
            __m512i v = _mm512_loadu_si512(w + c * 64);
            lo[c] = _mm512_and_si512(v, lom);
            hi[c] = _mm512_and_si512(v, him);
        }
        __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s16 + b * 16)));
        __m512 z = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(z16 + b * 16)));
        for (int t = 0; t < nt; t++) {
            const int32_t* xa = (const int32_t*)(xq + t * k + b * 32);
            __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
            for (int c = 0; c < 4; c++) {
                d0 = _mm512_dpbusd_epi32(d0, lo[c], _mm512_set1_epi32(xa[2 * c]));
                d1 = _mm512_dpbusd_epi32(d1, hi[c], _mm512_set1_epi32(xa[2 * c + 1]));
            }
            __m512 d = _mm512_cvtepi32_ps(_mm512_add_epi32(d0, _mm512_srai_epi32(d1, 4)));
            acc[t] = _mm512_fmadd_ps(d, _mm512_mul_ps(s, _mm512_set1_ps(sx[t * nb + b])), acc[t]);
            cor[t] = _mm512_fnmadd_ps(z, _mm512_set1_ps(sxsum[t * nb + b]), cor[t]);
        }
    }
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * n, _mm512_add_ps(acc[t], cor[t]));
}

// The 8-bit twin of rows16: no nibbles to take apart, the zero point times the scale per block.
static inline void rows16_q8(const uint8_t* w, const uint16_t* s16, const uint16_t* z16, int64_t nb, int64_t k,
                             int nt, const int8_t* xq, const float* sx, const float* sxsum, float* y, int64_t n) {
    __m512 acc[TOKENS_AT_ONCE], cor[TOKENS_AT_ONCE];
    for (int t = 0; t < TOKENS_AT_ONCE; t++) acc[t] = cor[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w += 512) {
        for (int line = 0; line < 512; line += 64) _mm_prefetch((const char*)w + PREFETCH_BYTES + line, _MM_HINT_T0);
        __m512i v[8];
        for (int c = 0; c < 8; c++) v[c] = _mm512_loadu_si512(w + c * 64);
        __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(s16 + b * 16)));
        __m512 z = _mm512_mul_ps(s, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(z16 + b * 16))));
        for (int t = 0; t < nt; t++) {
            const int32_t* xa = (const int32_t*)(xq + t * k + b * 32);
            __m512i d0 = _mm512_setzero_si512(), d1 = _mm512_setzero_si512();
            for (int c = 0; c < 8; c += 2) {
                d0 = _mm512_dpbusd_epi32(d0, v[c], _mm512_set1_epi32(xa[c]));
                d1 = _mm512_dpbusd_epi32(d1, v[c + 1], _mm512_set1_epi32(xa[c + 1]));
            }
            __m512 d = _mm512_cvtepi32_ps(_mm512_add_epi32(d0, d1));
            acc[t] = _mm512_fmadd_ps(d, _mm512_mul_ps(s, _mm512_set1_ps(sx[t * nb + b])), acc[t]);
            cor[t] = _mm512_fnmadd_ps(z, _mm512_set1_ps(sxsum[t * nb + b]), cor[t]);
        }
    }
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(y + t * n, _mm512_add_ps(acc[t], cor[t]));
}

static void row_groups(void* data, size_t chunk) {
    Work* work = (Work*)data;
    int64_t nb = work->k / 32, groups = work->n / 16, block_bytes = work->bits * 64;
    int64_t per = (groups + work->chunks - 1) / work->chunks;
    for (int64_t g = (int64_t)chunk * per; g < groups && g < ((int64_t)chunk + 1) * per; g++)
        for (int64_t m0 = 0; m0 < work->m; m0 += TOKENS_AT_ONCE) {
            int nt = work->m - m0 < TOKENS_AT_ONCE ? (int)(work->m - m0) : TOKENS_AT_ONCE;
            (work->bits == 8 ? rows16_q8 : rows16)(
                work->w + g * nb * block_bytes, work->s + g * nb * 16, work->z + g * nb * 16, nb, work->k, nt,
                work->xq + m0 * work->k, work->sx + m0 * nb, work->sxsum + m0 * nb, work->y + m0 * work->n + g * 16,
                work->n);
        }
}

// --- the ONNX Runtime operator ---------------------------------------------------------------

typedef struct {
    const OrtApi* api;
    int64_t k, n;
    int bits;
} Kernel;

static const OrtApi* g_api;
static OrtCustomOp g_op, g_q8, g_attention, g_last_rows;

static OrtStatus* ORT_API_CALL create_kernel(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                                             void** out) {
    Kernel* kernel = (Kernel*)calloc(1, sizeof(Kernel));
    if (!kernel) return api->CreateStatus(ORT_FAIL, "phils.Q4MatMul: out of memory");
    kernel->api = api;
    kernel->bits = op == &g_q8 ? 8 : 4;
    OrtStatus* status = api->KernelInfoGetAttribute_int64(info, "K", &kernel->k);
    if (!status) status = api->KernelInfoGetAttribute_int64(info, "N", &kernel->n);
    if (!status && (kernel->k % 32 || kernel->n % 16 || kernel->k <= 0 || kernel->n <= 0))
        status = api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.Q4MatMul: K must be a multiple of 32, N of 16");
    if (status) {
        free(kernel);
        return status;
    }
    *out = kernel;
    return NULL;
}

static OrtStatus* ORT_API_CALL compute(void* opaque, OrtKernelContext* context) {
    Kernel* kernel = (Kernel*)opaque;
    const OrtApi* api = kernel->api;
    const OrtValue* a;
    CHECK(api->KernelContext_GetInput(context, 0, &a));
    size_t rank = 0;
    int64_t dims[8];
    CHECK(shape_of(api, a, dims, 8, &rank));
    if (dims[rank - 1] != kernel->k) return api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.Q4MatMul: A's last dimension is not K");
    int64_t m = 1;
    for (size_t i = 0; i + 1 < rank; i++) m *= dims[i];
    dims[rank - 1] = kernel->n;
    OrtValue* output;
    CHECK(api->KernelContext_GetOutput(context, 0, dims, rank, &output));
    Work work = {0};
    work.bits = kernel->bits;
    work.m = m, work.n = kernel->n, work.k = kernel->k;
    CHECK(input_data(api, context, 0, (const void**)&work.a));
    CHECK(input_data(api, context, 1, (const void**)&work.w));
    CHECK(input_data(api, context, 2, (const void**)&work.s));
    CHECK(input_data(api, context, 3, (const void**)&work.z));
    CHECK(api->GetTensorMutableData(output, (void**)&work.y));
    size_t inputs = 0;
    CHECK(api->KernelContext_GetInputCount(context, &inputs));
    if (inputs > 4) {
        const OrtValue* p = NULL;
        CHECK(api->KernelContext_GetInput(context, 4, &p));
        if (p) {
            int64_t pdims[8];
            size_t prank = 0;
            CHECK(shape_of(api, p, pdims, 8, &prank));
            if (prank != 1 || pdims[0] != kernel->k)
                return api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.Q4MatMul: P must hold K channel indices");
            CHECK(api->GetTensorMutableData((OrtValue*)p, (void**)&work.perm));
        }
    }
    if (m == 0) return NULL;
    int64_t nb = kernel->k / 32;
    char* scratch = (char*)malloc((size_t)(m * kernel->k + 2 * m * nb * (int64_t)sizeof(float)));
    if (!scratch) return api->CreateStatus(ORT_FAIL, "phils.Q4MatMul: out of memory");
    work.xq = (const int8_t*)scratch;
    work.sx = (const float*)(scratch + m * kernel->k);
    work.sxsum = work.sx + m * nb;
    work.chunks = (size_t)(m < 64 ? m : 64);
    OrtStatus* status = m == 1 ? (quantize_rows(&work, 0), NULL)
                    : api->KernelContext_ParallelFor(context, quantize_rows, work.chunks, 0, &work);
    int64_t groups = kernel->n / 16;
    work.chunks = (size_t)(groups < 32 ? groups : 32);
    if (!status) status = api->KernelContext_ParallelFor(context, row_groups, work.chunks, 0, &work);
    free(scratch);
    return status;
}

static void ORT_API_CALL destroy_kernel(void* kernel) { free(kernel); }
static const char* ORT_API_CALL op_name(const OrtCustomOp* op) { return op == &g_q8 ? "Q8MatMul" : "Q4MatMul"; }
static const char* ORT_API_CALL op_provider(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static size_t ORT_API_CALL input_count(const OrtCustomOp* op) { (void)op; return 5; }
static size_t ORT_API_CALL output_count(const OrtCustomOp* op) { (void)op; return 1; }
static ONNXTensorElementDataType ORT_API_CALL input_type(const OrtCustomOp* op, size_t index) {
    (void)op;
    static const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
                                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
                                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32};
    return types[index];
}
static ONNXTensorElementDataType ORT_API_CALL output_type(const OrtCustomOp* op, size_t index) {
    (void)op, (void)index;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL required(const OrtCustomOp* op, size_t index) {
    (void)op;
    return index == 4 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}
static OrtMemType ORT_API_CALL memory_type(const OrtCustomOp* op, size_t index) {
    (void)op, (void)index;
    return OrtMemTypeDefault;
}

void phils_attention_op(OrtCustomOp* op);  // attention_f16.c
void phils_last_rows_op(OrtCustomOp* op);  // last_rows.c

ORT_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* base) {
    g_api = base->GetApi(ORT_API_VERSION);
    if (!g_api) return NULL;  // an older runtime than these headers: ONNX Runtime then fails on the unknown op
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vnni"))
        return g_api->CreateStatus(ORT_FAIL, "phils.Q4MatMul needs AVX-512 VNNI");
    static int described;  // every session registers the same operators: fill them in once
    if (!described) {
        memset(&g_op, 0, sizeof(g_op));
        g_op.version = 16;  // CreateKernelV2 / KernelComputeV2 (ONNX Runtime 1.16+)
        g_op.GetName = op_name;
        g_op.GetExecutionProviderType = op_provider;
        g_op.GetInputType = input_type;
        g_op.GetInputTypeCount = input_count;
        g_op.GetOutputType = output_type;
        g_op.GetOutputTypeCount = output_count;
        g_op.KernelDestroy = destroy_kernel;
        g_op.GetInputCharacteristic = required;
        g_op.GetOutputCharacteristic = required;
        g_op.GetInputMemoryType = memory_type;
        g_op.CreateKernelV2 = create_kernel;
        g_op.KernelComputeV2 = compute;
        g_q8 = g_op;  // the same operator but for its weights' width (create_kernel tells them apart)
        phils_attention_op(&g_attention);
        phils_last_rows_op(&g_last_rows);
        described = 1;
    }
    OrtCustomOpDomain* domain;
    CHECK(g_api->CreateCustomOpDomain("phils", &domain));
    CHECK(g_api->CustomOpDomain_Add(domain, &g_op));
    CHECK(g_api->CustomOpDomain_Add(domain, &g_q8));
    CHECK(g_api->CustomOpDomain_Add(domain, &g_attention));
    CHECK(g_api->CustomOpDomain_Add(domain, &g_last_rows));
    return g_api->AddCustomOpDomain(options, domain);
}
