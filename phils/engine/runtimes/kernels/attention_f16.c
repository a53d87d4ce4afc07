// phils.AttentionF16: GroupQueryAttention's CPU work over an fp16 key/value cache, for the int4 runtime.
//
// Why: at 1 500 tokens of context, ONNX Runtime's CPU GroupQueryAttention spends ~25 ms a token on
// Phi-2's shape reading fp32 keys and values (0.98 GB a token, twice the floor of what it reads), and
// it cannot read fp16 ones (it converts them). Here the cache is fp16, read once per query at memory
// speed: half the bytes. Same inputs, outputs and attributes as the GroupQueryAttention nodes
// onnxruntime-genai writes for a CPU model (packed query/key/value, the cache shared in place between
// past and present, rotary embedding inside, causal, no local window, no softcap); the build swaps
// the nodes only where that holds.
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ort_helpers.h"

#define MAX_HEAD 256

typedef struct {
    int64_t heads, kv_heads;
    float scale;
} Attention;

typedef struct {
    const float* qkv;      // [S, (heads + 2 kv_heads) * hs]
    uint16_t *kc, *vc;     // [kv_heads, capacity, hs] fp16
    const float *cos, *sin;  // [positions, rot / 2]
    float* out;            // [S, heads * hs]
    float* scratch;        // per head: capacity floats
    int64_t s, hs, heads, kv_heads, capacity, past, rot;
    float scale;
} Job;

// 2^x for x <= 0 on 16 lanes: a degree-6 polynomial on the fraction and vscalefps for the exponent.
static inline __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.4426950409f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(1.540353e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.333355e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550411e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// Non-interleaved rotary embedding (rotate-half) on the first `rot` of `hs` values, at `pos`.
static void rotate(const float* in, float* out, int64_t hs, int64_t rot, const float* cos, const float* sin) {
    int64_t half = rot / 2;
    for (int64_t d = 0; d < half; d++) {
        float x1 = in[d], x2 = in[d + half];
        out[d] = x1 * cos[d] - x2 * sin[d];
        out[d + half] = x2 * cos[d] + x1 * sin[d];
    }
    memcpy(out + rot, in + rot, (size_t)(hs - rot) * sizeof(float));
}

// Phase 1, per key/value head: the new tokens' keys (rotated) and values into the fp16 cache.
static void write_cache(void* data, size_t kh) {
    Job* job = (Job*)data;
    int64_t hs = job->hs, width = (job->heads + 2 * job->kv_heads) * hs;
    float rotated[MAX_HEAD];
    for (int64_t i = 0; i < job->s; i++) {
        int64_t pos = job->past + i;
        const float* k = job->qkv + i * width + (job->heads + (int64_t)kh) * hs;
        const float* v = k + job->kv_heads * hs;
        rotate(k, rotated, hs, job->rot, job->cos + pos * (job->rot / 2), job->sin + pos * (job->rot / 2));
        uint16_t* kd = job->kc + ((int64_t)kh * job->capacity + pos) * hs;
        uint16_t* vd = job->vc + ((int64_t)kh * job->capacity + pos) * hs;
        for (int64_t c = 0; c < hs; c += 16) {
            _mm256_storeu_si256((__m256i*)(kd + c), _mm512_cvtps_ph(_mm512_loadu_ps(rotated + c), _MM_FROUND_TO_NEAREST_INT));
            _mm256_storeu_si256((__m256i*)(vd + c), _mm512_cvtps_ph(_mm512_loadu_ps(v + c), _MM_FROUND_TO_NEAREST_INT));
        }
    }
}

// Phase 2, per query head: softmax(q K^T * scale) V over the keys up to each query's position.
static void attend(void* data, size_t h) {
    Job* job = (Job*)data;
    int64_t hs = job->hs, chunks = hs / 16, width = (job->heads + 2 * job->kv_heads) * hs;
    int64_t kh = (int64_t)h / (job->heads / job->kv_heads);
    const uint16_t* keys = job->kc + kh * job->capacity * hs;
    const uint16_t* values = job->vc + kh * job->capacity * hs;
    float* scores = job->scratch + (int64_t)h * job->capacity;
    float rotated[MAX_HEAD];
    __m512 q[MAX_HEAD / 16], acc[MAX_HEAD / 16];
    for (int64_t i = 0; i < job->s; i++) {
        int64_t pos = job->past + i, length = pos + 1;
        rotate(job->qkv + i * width + (int64_t)h * hs, rotated, hs, job->rot, job->cos + pos * (job->rot / 2),
               job->sin + pos * (job->rot / 2));
        for (int64_t c = 0; c < chunks; c++) q[c] = _mm512_mul_ps(_mm512_loadu_ps(rotated + 16 * c), _mm512_set1_ps(job->scale));
        float best = -INFINITY;
        for (int64_t j = 0; j < length; j++) {
            const uint16_t* key = keys + j * hs;
            __m512 dot = _mm512_setzero_ps();
            for (int64_t c = 0; c < chunks; c++)
                dot = _mm512_fmadd_ps(q[c], _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(key + 16 * c))), dot);
            float score = _mm512_reduce_add_ps(dot);
            scores[j] = score;
            best = score > best ? score : best;
        }
        __m512 sum = _mm512_setzero_ps(), top = _mm512_set1_ps(best);
        int64_t j = 0;
        for (; j + 16 <= length; j += 16) {
            __m512 p = exp16(_mm512_sub_ps(_mm512_loadu_ps(scores + j), top));
            _mm512_storeu_ps(scores + j, p);
            sum = _mm512_add_ps(sum, p);
        }
        if (j < length) {
            __mmask16 tail = (__mmask16)((1u << (length - j)) - 1);
            __m512 p = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, scores + j), top));
            p = _mm512_maskz_mov_ps(tail, p);
            _mm512_mask_storeu_ps(scores + j, tail, p);
            sum = _mm512_add_ps(sum, p);
        }
        float total = _mm512_reduce_add_ps(sum);
        for (int64_t c = 0; c < chunks; c++) acc[c] = _mm512_setzero_ps();
        for (int64_t t = 0; t < length; t++) {
            const uint16_t* value = values + t * hs;
            __m512 p = _mm512_set1_ps(scores[t]);
            for (int64_t c = 0; c < chunks; c++)
                acc[c] = _mm512_fmadd_ps(p, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(value + 16 * c))), acc[c]);
        }
        float* out = job->out + i * job->heads * hs + (int64_t)h * hs;
        __m512 inverse = _mm512_set1_ps(1.0f / total);
        for (int64_t c = 0; c < chunks; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], inverse));
    }
}

// --- the ONNX Runtime operator ---------------------------------------------------------------

typedef struct {
    const OrtApi* api;
    Attention attrs;
} AttentionKernel;

static OrtStatus* ORT_API_CALL create_attention(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                                                void** out) {
    (void)op;
    AttentionKernel* kernel = (AttentionKernel*)calloc(1, sizeof(AttentionKernel));
    if (!kernel) return api->CreateStatus(ORT_FAIL, "phils.AttentionF16: out of memory");
    kernel->api = api;
    OrtStatus* status = api->KernelInfoGetAttribute_int64(info, "num_heads", &kernel->attrs.heads);
    if (!status) status = api->KernelInfoGetAttribute_int64(info, "kv_num_heads", &kernel->attrs.kv_heads);
    if (!status) status = api->KernelInfoGetAttribute_float(info, "scale", &kernel->attrs.scale);
    if (!status && (kernel->attrs.kv_heads <= 0 || kernel->attrs.heads % kernel->attrs.kv_heads))
        status = api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.AttentionF16: num_heads must be a multiple of kv_num_heads");
    if (status) {
        free(kernel);
        return status;
    }
    *out = kernel;
    return NULL;
}

static OrtStatus* ORT_API_CALL compute_attention(void* opaque, OrtKernelContext* context) {
    AttentionKernel* kernel = (AttentionKernel*)opaque;
    const OrtApi* api = kernel->api;
    const OrtValue *qkv, *past_k, *past_v, *seqlens, *cos;
    CHECK(api->KernelContext_GetInput(context, 0, &qkv));
    CHECK(api->KernelContext_GetInput(context, 3, &past_k));
    CHECK(api->KernelContext_GetInput(context, 4, &past_v));
    CHECK(api->KernelContext_GetInput(context, 5, &seqlens));
    CHECK(api->KernelContext_GetInput(context, 7, &cos));
    int64_t qdims[4], kdims[4], cdims[4];
    size_t qrank, krank, crank;
    CHECK(shape_of(api, qkv, qdims, 4, &qrank));
    CHECK(shape_of(api, past_k, kdims, 4, &krank));
    CHECK(shape_of(api, cos, cdims, 4, &crank));
    Job job = {0};
    job.heads = kernel->attrs.heads, job.kv_heads = kernel->attrs.kv_heads;
    if (qrank != 3 || krank != 4 || crank != 2 || qdims[0] != 1 || kdims[1] != job.kv_heads)
        return api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.AttentionF16: one sequence of packed query/key/value");
    job.s = qdims[1], job.hs = kdims[3], job.capacity = kdims[2], job.rot = 2 * cdims[1];
    if (job.hs % 16 || job.hs > MAX_HEAD || qdims[2] != (job.heads + 2 * job.kv_heads) * job.hs || job.rot > job.hs)
        return api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.AttentionF16: unexpected head size");
    const int32_t* total_minus_one;
    CHECK(api->GetTensorMutableData((OrtValue*)seqlens, (void**)&total_minus_one));
    job.past = (int64_t)total_minus_one[0] + 1 - job.s;
    if (job.past < 0 || job.past + job.s > job.capacity || job.past + job.s > cdims[0])
        return api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.AttentionF16: the cache is too small");
    job.scale = kernel->attrs.scale != 0.0f ? kernel->attrs.scale : 1.0f / sqrtf((float)job.hs);
    int64_t odims[3] = {1, job.s, job.heads * job.hs};
    OrtValue *out, *present_k, *present_v;
    CHECK(api->KernelContext_GetOutput(context, 0, odims, 3, &out));
    CHECK(api->KernelContext_GetOutput(context, 1, kdims, 4, &present_k));
    CHECK(api->KernelContext_GetOutput(context, 2, kdims, 4, &present_v));
    CHECK(api->GetTensorMutableData((OrtValue*)qkv, (void**)&job.qkv));
    CHECK(api->GetTensorMutableData(out, (void**)&job.out));
    CHECK(api->GetTensorMutableData(present_k, (void**)&job.kc));
    CHECK(api->GetTensorMutableData(present_v, (void**)&job.vc));
    CHECK(api->GetTensorMutableData((OrtValue*)cos, (void**)&job.cos));
    CHECK(input_data(api, context, 8, (const void**)&job.sin));
    const uint16_t *pk, *pv;
    CHECK(input_data(api, context, 3, (const void**)&pk));
    CHECK(input_data(api, context, 4, (const void**)&pv));
    size_t bytes = (size_t)(job.kv_heads * job.capacity * job.hs) * sizeof(uint16_t);
    if (pk != job.kc) memcpy(job.kc, pk, bytes);  // not shared in place: start from the past
    if (pv != job.vc) memcpy(job.vc, pv, bytes);
    job.scratch = (float*)malloc((size_t)(job.heads * job.capacity) * sizeof(float));
    if (!job.scratch) return api->CreateStatus(ORT_FAIL, "phils.AttentionF16: out of memory");
    OrtStatus* status = api->KernelContext_ParallelFor(context, write_cache, (size_t)job.kv_heads, 0, &job);
    if (!status) status = api->KernelContext_ParallelFor(context, attend, (size_t)job.heads, 0, &job);
    free(job.scratch);
    return status;
}

static void ORT_API_CALL destroy_attention(void* kernel) { free(kernel); }
static const char* ORT_API_CALL attention_name(const OrtCustomOp* op) { (void)op; return "AttentionF16"; }
static const char* ORT_API_CALL attention_provider(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static size_t ORT_API_CALL attention_inputs(const OrtCustomOp* op) { (void)op; return 9; }
static size_t ORT_API_CALL attention_outputs(const OrtCustomOp* op) { (void)op; return 3; }
static ONNXTensorElementDataType ORT_API_CALL attention_input_type(const OrtCustomOp* op, size_t index) {
    (void)op;
    switch (index) {
        case 3: case 4: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
        case 5: case 6: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
        default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    }
}
static ONNXTensorElementDataType ORT_API_CALL attention_output_type(const OrtCustomOp* op, size_t index) {
    (void)op;
    return index == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL attention_characteristic(const OrtCustomOp* op, size_t index) {
    (void)op;
    return index == 1 || index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;  // key, value: packed in the query
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL attention_output_characteristic(const OrtCustomOp* op, size_t index) {
    (void)op, (void)index;
    return INPUT_OUTPUT_REQUIRED;
}
static OrtMemType ORT_API_CALL attention_memory(const OrtCustomOp* op, size_t index) {
    (void)op;
    return index == 6 ? OrtMemTypeCPUInput : OrtMemTypeDefault;
}

void phils_attention_op(OrtCustomOp* op) {
    memset(op, 0, sizeof(*op));
    op->version = 16;
    op->GetName = attention_name;
    op->GetExecutionProviderType = attention_provider;
    op->GetInputType = attention_input_type;
    op->GetInputTypeCount = attention_inputs;
    op->GetOutputType = attention_output_type;
    op->GetOutputTypeCount = attention_outputs;
    op->KernelDestroy = destroy_attention;
    op->GetInputCharacteristic = attention_characteristic;
    op->GetOutputCharacteristic = attention_output_characteristic;
    op->GetInputMemoryType = attention_memory;
    op->CreateKernelV2 = create_attention;
    op->KernelComputeV2 = compute_attention;
}
