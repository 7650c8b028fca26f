// kiln.nn: modules, layers, attention, recurrent layers, Transformer blocks, GPT, losses, initialization
// and sampling (what torch.nn offers for Transformer work).
export { Module, Parameter, Sequential, ModuleList, ModuleDict } from './module';
export type { StateDictLoadResult, LoadStateDictOptions, TensorModule } from './module';
export { Linear, Embedding, LayerNorm, RMSNorm, rmsNorm, Dropout, Identity, ReLU, GELU, Sigmoid, Tanh, SiLU } from './layers';
export type { FactoryOptions, EmbeddingOptions, NormOptions } from './layers';
export { MultiheadAttention, KVCache, scaledDotProductAttention, attention, causalMask } from './attention';
export type { MultiheadAttentionOptions, AttentionForwardOptions } from './attention';
export { RNNBase, RNN, LSTM, GRU } from './rnn';
export type { RNNBaseOptions, RNNOptions, RNNForwardOptions } from './rnn';
export {
  TransformerEncoderLayer,
  TransformerDecoderLayer,
  TransformerEncoder,
  TransformerDecoder,
  Transformer,
  SinusoidalPositionalEncoding,
  LearnedPositionalEmbedding,
} from './transformer';
export type {
  Activation,
  TransformerLayerOptions,
  EncoderLayerForwardOptions,
  DecoderLayerForwardOptions,
  TransformerOptions,
  TransformerForwardOptions,
  PositionalOptions,
} from './transformer';
export { GPT, Block as GPTBlock, MLP as GPTMLP } from './gpt';
export type { GPTConfig, GPTForwardOptions, GenerateOptions } from './gpt';
export type { FromPretrainedOptions } from './gpt_hf';
export {
  mseLoss,
  crossEntropy,
  nllLoss,
  bceLoss,
  bceWithLogits,
  MSELoss,
  CrossEntropyLoss,
  NLLLoss,
  BCELoss,
  BCEWithLogitsLoss,
} from './losses';
export type { Reduction, CrossEntropyOptions, NLLLossOptions, BCELossOptions, BCEWithLogitsOptions } from './losses';
export { sampleLogits } from './sampling';
export type { SamplingOptions } from './sampling';
export * as init from './init';
export * as lora from './lora';
export { PromptTuning } from './prompt_tuning';
export { GPTForSequenceClassification } from './gpt_classify';
export type { SequenceClassificationOptions, SequenceClassificationForwardOptions } from './gpt_classify';
export type { PromptTuningOptions, PromptTunable, PromptTuningForward } from './prompt_tuning';
export { SequenceClassifier } from './sequence_classifier';
export type {
  Pooling,
  SequenceBody,
  SequenceClassifierOptions,
  SequenceClassifierForwardOptions,
  SequenceClassifierOutput,
} from './sequence_classifier';
export type { LinearDelta } from './layers';
export type { InProjDelta } from './attention';
