// kiln.io: safetensors files (interoperable with PyTorch and Hugging Face), training checkpoints in
// the same layout, and atomic file writes.
export { loadSafetensors, saveSafetensors, readSafetensorsHeader, MAX_HEADER_BYTES } from './safetensors';
export type { SafetensorsEntry, SafetensorsHeader, LoadSafetensorsOptions, LoadedSafetensors } from './safetensors';
export { saveCheckpoint, readCheckpoint, loadCheckpoint, disposeCheckpoint } from './checkpoint';
export type { Checkpoint, CheckpointContents } from './checkpoint';
export type { Checksums } from './checksum';
export { writeAtomic, writeFileAtomic } from './atomic';
