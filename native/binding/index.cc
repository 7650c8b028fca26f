// Binding for the index family (native/ops/index.h): gather, indexSelect and embedding (forward), and
// the in-place accumulations behind their gradients and scatterAdd (indexAdd, embeddingBackward,
// scatterAdd). Outputs are allocated by lib/ops/indexing.ts and passed in; the kernels check every
// index value.
#include "../ops/index.h"
#include "op_table.h"

namespace kiln::binding {

void register_index(Napi::Env env, Napi::Object exports) {
  using namespace ops;
  KILN_KERNEL(env, exports, "gather", "gather", Gather, gather, "x dim index out", kIndexCopyDTypes, kIndexCopyDTypes);
  KILN_KERNEL(env, exports, "indexSelect", "indexSelect", IndexSelect, index_select, "x dim index out",
              kIndexCopyDTypes, kIndexCopyDTypes);
  KILN_KERNEL(env, exports, "embedding", "embedding", Embedding, embedding, "weight indices out", kIndexCopyDTypes,
              kIndexCopyDTypes);
  KILN_KERNEL(env, exports, "indexAdd", "indexAdd", IndexAdd, index_add, "out dim index src", kIndexAddDTypes,
              kIndexAddDTypes);
  KILN_KERNEL(env, exports, "embeddingBackward", "embedding_backward", EmbeddingBackward, embedding_backward,
              "gradWeight indices grad", kIndexAddDTypes, kIndexAddDTypes);
  KILN_KERNEL(env, exports, "scatterAdd", "scatterAdd", ScatterAdd, scatter_add, "out dim index src",
              kIndexAddDTypes, kIndexAddDTypes);
}

}  // namespace kiln::binding
