// Binding for the recurrent family (native/ops/rnn.h): the fused RNN, LSTM and GRU cells, forward and
// backward. Outputs are allocated by lib/ops/rnn.ts and passed in (null for gradients not wanted).
#include "../ops/rnn.h"
#include "op_table.h"

namespace kiln::binding {

void register_rnn(Napi::Env env, Napi::Object exports) {
  KILN_KERNEL(env, exports, "rnnCellForward", "rnnCell", ops::RnnCellForward, rnn_cell_forward, "xg hg relu h",
              ops::kRnnCpuDTypes, ops::kRnnCudaDTypes);
  KILN_KERNEL(env, exports, "rnnCellBackward", "rnnCell backward", ops::RnnCellBackward, rnn_cell_backward,
              "dh dy h relu dpre",
              ops::kRnnCpuDTypes, ops::kRnnCudaDTypes);
  KILN_KERNEL(env, exports, "lstmCellForward", "lstmCell", ops::LstmCellForward, lstm_cell_forward,
              "xg hg cPrev h c act",
              ops::kRnnCpuDTypes, ops::kRnnCudaDTypes);
  KILN_KERNEL(env, exports, "lstmCellBackward", "lstmCell backward", ops::LstmCellBackward, lstm_cell_backward,
              "dh dy dc act cPrev c dgates dcPrev",
              ops::kRnnCpuDTypes, ops::kRnnCudaDTypes);
  KILN_KERNEL(env, exports, "gruCellForward", "gruCell", ops::GruCellForward, gru_cell_forward, "xg hg hPrev h act",
              ops::kRnnCpuDTypes, ops::kRnnCudaDTypes);
  KILN_KERNEL(env, exports, "gruCellBackward", "gruCell backward", ops::GruCellBackward, gru_cell_backward,
              "dh dy act hPrev dxg dhg dhPrev",
              ops::kRnnCpuDTypes, ops::kRnnCudaDTypes);
}

}  // namespace kiln::binding
