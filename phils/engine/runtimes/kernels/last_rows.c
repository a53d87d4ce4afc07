// phils.LastRows: logits [B, k, V] placed as the last k rows of a [B, T, V] output (T from the second
// input's shape), the rows before them left as the allocator gave them.
//
// Why: the int4 build runs the output head on the rows a run asks for (num_logits_to_keep), but GenAI
// binds a [B, T, V] buffer for the logits. ONNX Runtime's Pad filled the rows nobody reads with zeros:
// 330 ms of a 768-token prefill of Qwen2.5-Coder 1.5B (466 MB written). Nobody reads them: GenAI takes
// the last row, phils the last k (runtime_genai.forward asks for every row where GenAI could look
// elsewhere: a prompt ending in the pad token).
#include <string.h>

#include "ort_helpers.h"

static OrtStatus* ORT_API_CALL create_last_rows(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info,
                                                void** out) {
    (void)op, (void)info;
    *out = (void*)api;
    return NULL;
}

static OrtStatus* ORT_API_CALL compute_last_rows(void* opaque, OrtKernelContext* context) {
    const OrtApi* api = (const OrtApi*)opaque;
    const OrtValue *rows, *like;
    CHECK(api->KernelContext_GetInput(context, 0, &rows));
    CHECK(api->KernelContext_GetInput(context, 1, &like));
    int64_t dims[3], like_dims[8];
    size_t rank = 0, like_rank = 0;
    CHECK(shape_of(api, rows, dims, 3, &rank));
    CHECK(shape_of(api, like, like_dims, 8, &like_rank));
    if (rank != 3 || like_rank < 2 || like_dims[0] != dims[0] || like_dims[1] < dims[1])
        return api->CreateStatus(ORT_INVALID_ARGUMENT, "phils.LastRows: rows must be [B, k, V] with k <= T");
    int64_t tokens = like_dims[1], kept = dims[1], width = dims[2];
    int64_t out_dims[3] = {dims[0], tokens, width};
    OrtValue* output;
    CHECK(api->KernelContext_GetOutput(context, 0, out_dims, 3, &output));
    const float* source;
    float* target;
    CHECK(api->GetTensorMutableData((OrtValue*)rows, (void**)&source));
    CHECK(api->GetTensorMutableData(output, (void**)&target));
    size_t row_bytes = (size_t)width * sizeof(float);
    for (int64_t b = 0; b < dims[0]; b++)
        memcpy(target + (b * tokens + tokens - kept) * width, source + b * kept * width, (size_t)kept * row_bytes);
    return NULL;
}

static void ORT_API_CALL destroy_last_rows(void* kernel) { (void)kernel; }
static const char* ORT_API_CALL last_rows_name(const OrtCustomOp* op) { (void)op; return "LastRows"; }
static const char* ORT_API_CALL last_rows_provider(const OrtCustomOp* op) { (void)op; return "CPUExecutionProvider"; }
static size_t ORT_API_CALL last_rows_inputs(const OrtCustomOp* op) { (void)op; return 2; }
static size_t ORT_API_CALL last_rows_outputs(const OrtCustomOp* op) { (void)op; return 1; }
static ONNXTensorElementDataType ORT_API_CALL last_rows_type(const OrtCustomOp* op, size_t index) {
    (void)op, (void)index;
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}
static OrtCustomOpInputOutputCharacteristic ORT_API_CALL last_rows_characteristic(const OrtCustomOp* op, size_t index) {
    (void)op, (void)index;
    return INPUT_OUTPUT_REQUIRED;
}
static OrtMemType ORT_API_CALL last_rows_memory(const OrtCustomOp* op, size_t index) {
    (void)op, (void)index;
    return OrtMemTypeDefault;
}

void phils_last_rows_op(OrtCustomOp* op) {
    memset(op, 0, sizeof(*op));
    op->version = 16;
    op->GetName = last_rows_name;
    op->GetExecutionProviderType = last_rows_provider;
    op->GetInputType = last_rows_type;
    op->GetInputTypeCount = last_rows_inputs;
    op->GetOutputType = last_rows_type;
    op->GetOutputTypeCount = last_rows_outputs;
    op->KernelDestroy = destroy_last_rows;
    op->GetInputCharacteristic = last_rows_characteristic;
    op->GetOutputCharacteristic = last_rows_characteristic;
    op->GetInputMemoryType = last_rows_memory;
    op->CreateKernelV2 = create_last_rows;
    op->KernelComputeV2 = compute_last_rows;
}
