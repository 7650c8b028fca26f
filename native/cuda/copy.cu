// CUDA copy kernels: strided copy with dtype conversion (contiguous same-dtype copies go to the
// copy engine), and fill. Twins of native/cpu/copy.cc.
#include "common.cuh"
#include "copy.h"

namespace kiln::cuda {

template <typename D, typename S>
__global__ void copy_kernel(D* __restrict__ dst, const S* __restrict__ src, StridedMeta<2> m) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    m.offsets(i, off);
    dst[off[0]] = dconvert<D, S>(src[off[1]]);
  }
}

template <typename T>
__global__ void fill_kernel(T* __restrict__ dst, T v, StridedMeta<1> m) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m.numel; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    m.offsets(i, off);
    dst[off[0]] = v;
  }
}

void copy(const Tensor& src, const Tensor& dst) {
  KILN_CHECK(src.shape == dst.shape, Shape, "copy", "source shape ", shape_str(src.shape),
             " does not match destination shape ", shape_str(dst.shape));
  int64_t n = dst.numel();
  if (n == 0) return;
  Device d = dst.device();
  cudaStream_t s = stream(d);
  if (src.dtype == dst.dtype && src.is_contiguous() && dst.is_contiguous()) {
    KILN_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), size_t(n) * dst.itemsize(), cudaMemcpyDeviceToDevice, s),
                    "copy");
    return;
  }
  auto m = make_meta<2>("copy", dst.shape, {&dst.strides, &src.strides});
  KILN_CUDA_DISPATCH_ALL(dst.dtype, "copy", {
    using D = scalar_t;
    KILN_CUDA_DISPATCH_ALL(src.dtype, "copy", {
      copy_kernel<D, scalar_t><<<grid_for(n, d), kThreads, 0, s>>>(dst.data<D>(), src.data<scalar_t>(), m);
    });
  });
  KILN_CUDA_LAUNCH_CHECK("copy");
}

void fill(const Tensor& dst, double value) {
  int64_t n = dst.numel();
  if (n == 0) return;
  Device d = dst.device();
  auto m = make_meta<1>("fill", dst.shape, {&dst.strides});
  KILN_CUDA_DISPATCH_ALL(dst.dtype, "fill", {
    scalar_t v = dconvert<scalar_t, double>(value);
    fill_kernel<scalar_t><<<grid_for(n, d), kThreads, 0, stream(d)>>>(dst.data<scalar_t>(), v, m);
  });
  KILN_CUDA_LAUNCH_CHECK("fill");
}

}  // namespace kiln::cuda
