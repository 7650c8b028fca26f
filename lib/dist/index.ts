// kiln.dist: distributed training (torch.distributed's shape): process groups on Gloo and NCCL, the
// rendezvous store, the environment launchers set, `kiln launch`'s programmatic form, data parallelism
// (DDP, ZeRO) and tensor parallelism (tp).
export {
  initProcessGroup, destroyProcessGroup, isInitialized, isBackendAvailable, rank, worldSize, localRank, localWorldSize,
  worldGroup, newGroup, allReduce, broadcast, allGather, reduceScatter, barrier, send, recv, ProcessGroup, Work,
} from './process_group';
export type { Backend, CommStats, ReduceOp, ReduceOptions, P2POptions, GroupOptions, InitProcessGroupOptions } from './process_group';
export { TCPStore } from './store';
export type { TCPStoreOptions } from './store';
export { readDistEnv, firstSlurmHost, DEFAULT_MASTER_PORT } from './env';
export type { DistEnv } from './env';
export { launch, planWorkers } from './launch';
export type { LaunchOptions, WorkerPlan, WorkerExit, LaunchResult, LineSink, SignalName } from './launch';
export { DistributedDataParallel } from './ddp';
export type { DDPOptions, BucketInfo } from './ddp';
export { ZeroRedundancyOptimizer } from './zero';
export type { ZeroOptions, OptimizerClass, ZeroMemoryReport } from './zero';
export { DataParallelStrategy } from './strategy';
export { pipeline, Pipeline, pipelineSchedule, bubbleFraction } from './pipeline';
export type { PipelineOptions, PipelineSchedule, PipelineStepResult } from './pipeline';
export { ParameterServer } from './parameter_server';
export type { ParameterServerOptions, ParameterServerMode, PushResult, ParameterServerReport, ParameterServerWorkerReport } from './parameter_server';
export * as tp from './tp';
export { DistributedSampler } from '../data/sampler';
export type { Sampler, DistributedSamplerOptions } from '../data/sampler';
