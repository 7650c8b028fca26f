// KILN_HOST_DEVICE: marks a small function that both backends call, the CPU kernels on the host and
// the CUDA kernels on the device (philox.h's generator, the elementwise formulas of
// native/ops/elementwise.h). Outside nvcc it is plain inline.
#pragma once

#if defined(__CUDACC__)
#define KILN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define KILN_HOST_DEVICE inline
#endif
