// kiln.data: datasets, the DataLoader, tokenizers (characters, GPT-2 BPE) and token files for corpora
// larger than memory.
export { TensorDataset } from './dataset';
export type { Dataset } from './dataset';
export { DataLoader, defaultCollate } from './dataloader';
export type { DataLoaderOptions, DataLoaderStateDict, Collated } from './dataloader';
export { Rng } from './rng';
export { DistributedSampler } from './sampler';
export type { Sampler, DistributedSamplerOptions } from './sampler';
export { CharTokenizer, GPT2Tokenizer } from './tokenizer';
export type { Tokenizer, CharTokenizerJSON } from './tokenizer';
export {
  TOKEN_FILE_HEADER_BYTES, TokenFile, TokenFileWriter, TokenFileDataset, writeTokenFile, tokenizeFile,
} from './token_file';
export type { TokenDType, TokenFileHeader, TokenFileWriterOptions, TokenizeFileOptions, TokenFileDatasetOptions } from './token_file';
