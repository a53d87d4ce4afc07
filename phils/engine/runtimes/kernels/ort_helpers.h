// What both operators need from ONNX Runtime's C API: status checks, an input's shape and its data.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "onnxruntime/onnxruntime_c_api.h"

#define CHECK(expr)                  \
    do {                             \
        OrtStatus* status_ = (expr); \
        if (status_) return status_; \
    } while (0)

// The dimensions of `value` into `dims` (room for `max_rank`); more dimensions than that is an error.
static inline OrtStatus* shape_of(const OrtApi* api, const OrtValue* value, int64_t* dims, size_t max_rank,
                                  size_t* rank) {
    OrtTensorTypeAndShapeInfo* info;
    CHECK(api->GetTensorTypeAndShape(value, &info));
    OrtStatus* status = api->GetDimensionsCount(info, rank);
    if (!status && (*rank < 1 || *rank > max_rank))
        status = api->CreateStatus(ORT_INVALID_ARGUMENT, "phils: an input has an unexpected number of dimensions");
    if (!status) status = api->GetDimensions(info, dims, *rank);
    api->ReleaseTensorTypeAndShapeInfo(info);
    return status;
}

// The data of input `index`, which must be present.
static inline OrtStatus* input_data(const OrtApi* api, OrtKernelContext* context, size_t index, const void** data) {
    const OrtValue* value;
    CHECK(api->KernelContext_GetInput(context, index, &value));
    if (!value) return api->CreateStatus(ORT_INVALID_ARGUMENT, "phils: a required input is missing");
    return api->GetTensorMutableData((OrtValue*)value, (void**)data);
}
