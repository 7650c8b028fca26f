// The package entry exports an explicit list: this snapshot of it (values and types, namespaces
// walked) fails on an accidental new export or a lost one. Change it together with lib/index.ts (or
// a namespace index) when the public API changes on purpose. The built CommonJS and ES module
// entries must hold the same values.
import t from 'tap';
import { execFileSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..');
const { publicExports } = require('../scripts/public-api') as { publicExports(opts?: { topValuesOnly?: boolean }): string[] };

const PUBLIC_API = [
  // kiln
  'AutocastDType (type)', 'AutocastOptions (type)', 'AutogradError', 'BackwardFn (type)', 'BackwardOptions (type)', 'BuildInfo (type)', 'CrossEntropyOptions (type)', 'CudaError',
  'DType (type)', 'DTypeError', 'Device (type)', 'DeviceError', 'DimArg (type)', 'DisposedError', 'DistError', 'FlashAttentionOptions (type)', 'FormatError',
  'GradNode', 'HookHandle (type)', 'IndexError', 'KilnError', 'MemoryInfo (type)', 'NestedArray (type)', 'OutOfMemoryError',
  'RngState (type)', 'ShapeError', 'Tensor', 'TensorOptions (type)', 'TensorOrScalar (type)', 'ValueError',
  'VarianceOptions (type)', 'abs', 'add', 'add_', 'all', 'allclose', 'any', 'arange', 'argmax', 'argmin', 'autocast', 'buildInfo', 'cat',
  'ceil', 'chunk', 'clamp', 'clone', 'contiguous', 'copy_', 'cos', 'crossEntropy', 'cuda', 'data', 'dispose', 'dist', 'div', 'div_',
  'dropout', 'embedding', 'empty', 'emptyCache', 'emptyLike', 'enableGrad', 'eq', 'exp', 'expand', 'eye', 'fill_', 'flashAttention', 'flatten',
  'floor', 'full', 'fullLike', 'gather', 'ge', 'gelu', 'getRngState', 'gt', 'indexSelect', 'initialSeed', 'io', 'isAutocastEnabled', 'isGradEnabled',
  'isclose', 'keep', 'layerNorm', 'le', 'linear', 'linspace', 'log', 'log1p', 'logSoftmax', 'logicalAnd', 'logicalNot',
  'logicalOr', 'logsumexp', 'lt', 'manualSeed', 'maskedFill', 'matmul', 'max', 'maximum', 'mean', 'memory', 'min', 'minimum',
  'mul', 'mul_', 'narrow', 'ne', 'neg', 'nn', 'noGrad', 'normal', 'ones', 'onesLike', 'optim', 'permute', 'pow', 'rand',
  'randLike', 'randint', 'randintLike', 'randn', 'randnLike', 'reciprocal', 'relu', 'repeat', 'resetPeakMemory', 'reshape',
  'resultType', 'round', 'rsqrt', 'scalar', 'scatterAdd', 'select', 'setGradEnabled', 'setNumThreads', 'setRngState', 'sigmoid',
  'sign', 'silu', 'sin', 'slice', 'softmax', 'split', 'sqrt', 'square', 'squeeze', 'stack', 'std', 'sub', 'sub_', 'sum', 't',
  'tanh', 'tensor', 'tidy', 'to', 'train', 'transpose', 'unflatten', 'uniform', 'unsqueeze', 'variance', 'view', 'where', 'zeros',
  'zerosLike',
  // kiln.cuda
  'cuda.CUDAGraph', 'cuda.CudaMemoryStats (type)', 'cuda.Event', 'cuda.EventOptions (type)', 'cuda.KernelProfile (type)', 'cuda.KernelTime (type)', 'cuda.Stream', 'cuda.StreamOptions (type)',
  'cuda.allowTF32', 'cuda.currentStream', 'cuda.defaultStream', 'cuda.deviceCount', 'cuda.emptyCache', 'cuda.flashAttentionEnabled', 'cuda.getDeviceName',
  'cuda.isAvailable', 'cuda.isCapturing', 'cuda.memoryStats', 'cuda.profileKernels', 'cuda.recordStream', 'cuda.resetPeakMemoryStats', 'cuda.setAllowTF32', 'cuda.setFlashAttention',
  'cuda.syncCount', 'cuda.synchronize', 'cuda.withStream',
  // kiln.data
  'data.CharTokenizer', 'data.CharTokenizerJSON (type)', 'data.Collated (type)', 'data.DataLoader',
  'data.DataLoaderOptions (type)', 'data.DataLoaderStateDict (type)', 'data.Dataset (type)', 'data.DistributedSampler', 'data.DistributedSamplerOptions (type)', 'data.Sampler (type)', 'data.GPT2Tokenizer', 'data.Rng',
  'data.TOKEN_FILE_HEADER_BYTES', 'data.TensorDataset', 'data.TokenDType (type)', 'data.TokenFile', 'data.TokenFileDataset',
  'data.TokenFileDatasetOptions (type)', 'data.TokenFileHeader (type)', 'data.TokenFileWriter',
  'data.TokenFileWriterOptions (type)', 'data.TokenizeFileOptions (type)', 'data.Tokenizer (type)', 'data.defaultCollate',
  'data.tokenizeFile', 'data.writeTokenFile',
  // kiln.dist
  'dist.Backend (type)', 'dist.BucketInfo (type)', 'dist.DDPOptions (type)', 'dist.DEFAULT_MASTER_PORT', 'dist.DataParallelStrategy',
  'dist.DistEnv (type)', 'dist.DistributedDataParallel', 'dist.DistributedSampler',
  'dist.DistributedSamplerOptions (type)', 'dist.GroupOptions (type)', 'dist.InitProcessGroupOptions (type)',
  'dist.LaunchOptions (type)', 'dist.LaunchResult (type)', 'dist.LineSink (type)', 'dist.OptimizerClass (type)', 'dist.P2POptions (type)',
  'dist.ProcessGroup', 'dist.ReduceOp (type)', 'dist.ReduceOptions (type)', 'dist.Sampler (type)', 'dist.SignalName (type)', 'dist.TCPStore',
  'dist.TCPStoreOptions (type)', 'dist.Work', 'dist.WorkerExit (type)', 'dist.WorkerPlan (type)',
  'dist.ZeroMemoryReport (type)', 'dist.ZeroOptions (type)', 'dist.ZeroRedundancyOptimizer', 'dist.allGather', 'dist.allReduce', 'dist.barrier',
  'dist.broadcast', 'dist.destroyProcessGroup', 'dist.firstSlurmHost', 'dist.initProcessGroup',
  'dist.isBackendAvailable', 'dist.isInitialized', 'dist.launch', 'dist.localRank', 'dist.localWorldSize',
  'dist.newGroup', 'dist.planWorkers', 'dist.rank', 'dist.readDistEnv', 'dist.recv', 'dist.reduceScatter', 'dist.send',
  'dist.worldGroup', 'dist.worldSize', 'dist.CommStats (type)',
  'dist.Pipeline', 'dist.PipelineOptions (type)', 'dist.PipelineSchedule (type)', 'dist.PipelineStepResult (type)', 'dist.bubbleFraction',
  'dist.pipeline', 'dist.pipelineSchedule',
  'dist.ParameterServer', 'dist.ParameterServerMode (type)', 'dist.ParameterServerOptions (type)', 'dist.ParameterServerReport (type)',
  'dist.ParameterServerWorkerReport (type)', 'dist.PushResult (type)',
  // kiln.dist.tp
  'dist.tp', 'dist.tp.ColumnParallelLinear', 'dist.tp.ColumnParallelLinearOptions (type)', 'dist.tp.GatherStateDictOptions (type)',
  'dist.tp.ParallelBlock', 'dist.tp.ParallelGPT', 'dist.tp.ParallelGroups (type)', 'dist.tp.ParallelLinearOptions (type)', 'dist.tp.ParallelMLP',
  'dist.tp.ParallelSelfAttention', 'dist.tp.ParallelSelfAttentionOptions (type)', 'dist.tp.RowParallelLinear',
  'dist.tp.RowParallelLinearOptions (type)', 'dist.tp.VocabParallelCrossEntropyOptions (type)', 'dist.tp.VocabParallelEmbedding',
  'dist.tp.VocabParallelEmbeddingOptions (type)', 'dist.tp.clipGradNorm', 'dist.tp.copyToParallel', 'dist.tp.gatherFromParallel', 'dist.tp.gatherStateDict',
  'dist.tp.newGroups', 'dist.tp.parallelize', 'dist.tp.reduceFromParallel', 'dist.tp.scatterToParallel', 'dist.tp.shardStateDict',
  'dist.tp.vocabParallelCrossEntropy',
  // kiln.io
  'io.Checkpoint (type)', 'io.CheckpointContents (type)', 'io.Checksums (type)', 'io.LoadSafetensorsOptions (type)',
  'io.LoadedSafetensors (type)', 'io.MAX_HEADER_BYTES', 'io.SafetensorsEntry (type)', 'io.SafetensorsHeader (type)',
  'io.disposeCheckpoint', 'io.loadCheckpoint', 'io.loadSafetensors', 'io.readCheckpoint', 'io.readSafetensorsHeader',
  'io.saveCheckpoint', 'io.saveSafetensors', 'io.writeAtomic', 'io.writeFileAtomic',
  // kiln.nn
  'nn.Activation (type)', 'nn.AttentionForwardOptions (type)', 'nn.BCELoss', 'nn.BCELossOptions (type)', 'nn.BCEWithLogitsLoss',
  'nn.BCEWithLogitsOptions (type)', 'nn.CrossEntropyLoss', 'nn.CrossEntropyOptions (type)',
  'nn.DecoderLayerForwardOptions (type)', 'nn.Dropout', 'nn.Embedding', 'nn.EmbeddingOptions (type)',
  'nn.EncoderLayerForwardOptions (type)', 'nn.FactoryOptions (type)', 'nn.FromPretrainedOptions (type)', 'nn.GELU', 'nn.GPT', 'nn.GRU', 'nn.GPTBlock', 'nn.GPTForSequenceClassification', 'nn.GPTConfig (type)',
  'nn.GPTForwardOptions (type)', 'nn.GPTMLP', 'nn.GenerateOptions (type)', 'nn.Identity', 'nn.KVCache', 'nn.LSTM', 'nn.LayerNorm',
  'nn.LearnedPositionalEmbedding', 'nn.LoadStateDictOptions (type)', 'nn.Linear', 'nn.MSELoss', 'nn.Module', 'nn.ModuleDict', 'nn.ModuleList',
  'nn.MultiheadAttention', 'nn.MultiheadAttentionOptions (type)', 'nn.NLLLoss', 'nn.NLLLossOptions (type)',
  'nn.NormOptions (type)', 'nn.Parameter', 'nn.Pooling (type)', 'nn.PositionalOptions (type)', 'nn.PromptTunable (type)', 'nn.PromptTuning', 'nn.PromptTuningForward (type)', 'nn.PromptTuningOptions (type)', 'nn.RMSNorm', 'nn.RNN', 'nn.RNNBase', 'nn.RNNBaseOptions (type)',
  'nn.RNNForwardOptions (type)', 'nn.RNNOptions (type)', 'nn.ReLU', 'nn.Reduction (type)',
  'nn.SamplingOptions (type)', 'nn.SequenceBody (type)', 'nn.SequenceClassificationForwardOptions (type)', 'nn.SequenceClassificationOptions (type)',
  'nn.SequenceClassifier', 'nn.SequenceClassifierForwardOptions (type)', 'nn.SequenceClassifierOptions (type)', 'nn.SequenceClassifierOutput (type)', 'nn.Sequential', 'nn.SiLU', 'nn.Sigmoid', 'nn.SinusoidalPositionalEncoding',
  'nn.StateDictLoadResult (type)', 'nn.Tanh', 'nn.TensorModule (type)', 'nn.Transformer', 'nn.TransformerDecoder',
  'nn.TransformerDecoderLayer', 'nn.TransformerEncoder', 'nn.TransformerEncoderLayer', 'nn.TransformerForwardOptions (type)',
  'nn.TransformerLayerOptions (type)', 'nn.TransformerOptions (type)', 'nn.attention', 'nn.bceLoss', 'nn.bceWithLogits',
  'nn.causalMask', 'nn.crossEntropy', 'nn.init', 'nn.mseLoss', 'nn.nllLoss', 'nn.rmsNorm', 'nn.sampleLogits',
  'nn.scaledDotProductAttention',
  // kiln.nn.init
  'nn.init.KaimingOptions (type)', 'nn.init.Nonlinearity (type)', 'nn.init.calculateGain', 'nn.init.computeFans',
  'nn.init.constant_', 'nn.init.kaimingNormal_', 'nn.init.kaimingUniform_', 'nn.init.normal_', 'nn.init.ones_',
  'nn.init.uniform_', 'nn.init.xavierNormal_', 'nn.init.xavierUniform_', 'nn.init.zeros_',
  // kiln.nn.lora
  'nn.InProjDelta (type)', 'nn.LinearDelta (type)', 'nn.lora', 'nn.lora.InProjLoRA', 'nn.lora.LoRA', 'nn.lora.LoRAOptions (type)',
  'nn.lora.SaveAdapterOptions (type)', 'nn.lora.adapters', 'nn.lora.apply', 'nn.lora.loadAdapter', 'nn.lora.merge',
  'nn.lora.mergeAndUnload', 'nn.lora.parameters', 'nn.lora.saveAdapter', 'nn.lora.stateDict', 'nn.lora.unmerge',
  // kiln.optim
  'optim.Adam', 'optim.AdamOptions (type)', 'optim.AdamW', 'optim.BaseOptions (type)', 'optim.ClipGradNormOptions (type)',
  'optim.CosineAnnealingLR', 'optim.CosineAnnealingOptions (type)', 'optim.ExecutionOptions (type)', 'optim.ExponentialLR', 'optim.ExponentialLROptions (type)',
  'optim.FlatRange (type)', 'optim.GroupRule (type)', 'optim.FlatState (type)', 'optim.LRScheduler', 'optim.LRSchedulerStateDict (type)', 'optim.LambdaLR', 'optim.LambdaLROptions (type)', 'optim.LinearLR',
  'optim.LinearLROptions (type)', 'optim.LinearWarmupLR', 'optim.LinearWarmupOptions (type)', 'optim.MultiStepLR',
  'optim.MultiStepLROptions (type)', 'optim.Optimizer', 'optim.OptimizerStateDict (type)', 'optim.ParamGroup (type)',
  'optim.ParamGroupInput (type)', 'optim.ParamState (type)', 'optim.Params (type)', 'optim.SGD', 'optim.SGDOptions (type)',
  'optim.Schedule (type)', 'optim.SchedulerOptions (type)', 'optim.SequentialLR', 'optim.SequentialLROptions (type)',
  'optim.StateSpec (type)', 'optim.StepLR', 'optim.StepLROptions (type)', 'optim.WarmupCosineLR',
  'optim.WarmupCosineOptions (type)', 'optim.clipGradNorm', 'optim.groupsByName', 'optim.gradNormPartial', 'optim.scaleGrads_',
  // kiln.train
  'train.BatchOptions (type)', 'train.BatchSampler (type)', 'train.BatchSource (type)', 'train.BatchUnit (type)',
  'train.CHECKPOINT_FILE', 'train.Callback (type)', 'train.ChartOptions (type)', 'train.EvalInfo (type)', 'train.EvalResult (type)',
  'train.EvalOptions (type)', 'train.FitOptions (type)', 'train.FitResult (type)', 'train.MetricsRecord (type)',
  'train.MicroBatchInfo (type)', 'train.StepAgreement (type)', 'train.StepContext (type)', 'train.StepEndInfo (type)', 'train.TrainStrategy',
  'train.ProgressInfo (type)', 'train.ProgressMode (type)', 'train.ProgressReporter', 'train.ProgressStream (type)',
  'train.Series (type)', 'train.StepInfo (type)', 'train.ToyCorpusOptions (type)', 'train.ToyLineCheck (type)',
  'train.ToyScore (type)', 'train.Trainer', 'train.TrainerOptions (type)', 'train.WindowSource (type)', 'train.checkToyLine',
  'train.lineChartSVG', 'train.scoreToyText', 'train.toyCorpus', 'train.unigramEntropy', 'train.windowSampler',
];

const values = PUBLIC_API.filter((n) => !n.endsWith(' (type)'));

t.test('lib/index.ts exports exactly the public API', async (t) => {
  t.same(publicExports(), [...PUBLIC_API].sort());
});

/** Value names a built entry has (namespaces, plain objects, walked), loaded by a child process. */
function builtValues(nodeArgs: string[], load: string): string[] {
  const walk = `const walk = (o, prefix, out) => {
    for (const k of Object.keys(o)) {
      if (k === 'default') continue;
      out.push(prefix + k);
      const v = o[k];
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) walk(v, prefix + k + '.', out);
    }
    return out;
  };`;
  const script = `${walk} ${load}; console.log(JSON.stringify(walk(m, '', []).sort()));`;
  return JSON.parse(execFileSync(process.execPath, [...nodeArgs, '-e', script], { cwd: root, encoding: 'utf8' }));
}

t.test('the built CommonJS entry (dist/index.js) has exactly those values', async (t) => {
  t.same(builtValues([], "const m = require('./dist')"), [...values].sort());
});

t.test('the ES module entry (dist/index.mjs) has the same values', async (t) => {
  t.same(builtValues(['--input-type=module'], "const m = await import('kiln')"), [...values].sort());
});
