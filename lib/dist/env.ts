// Where this process sits in a distributed job, read from the environment the common launchers set:
// torchrun and `kiln launch` (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT), Slurm's srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE,
// SLURM_JOB_NODELIST) and Open MPI's mpirun (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE).
// torchrun's variables win when several launchers' are present (torchrun inside an srun allocation).
// torchrun's agent already serves MASTER_PORT with torch's own store (TORCHELASTIC_USE_AGENT_STORE),
// whose protocol kiln does not speak: kiln's rank 0 then hosts its store on MASTER_PORT + 1.
import { ValueError } from '../errors';

/** A process's place in the job, as initProcessGroup uses it. */
export interface DistEnv {
  /** This process's rank in [0, worldSize). */
  rank: number;
  /** Processes in the job. */
  worldSize: number;
  /** This process's rank on its machine (which GPU it takes). */
  localRank: number;
  /** Processes on this machine. */
  localWorldSize: number;
  /** The address of rank 0's machine, where the rendezvous store listens. */
  masterAddr: string;
  /** The store's port. */
  masterPort: number;
  /** Which variables these came from. */
  source: 'torchrun' | 'slurm' | 'mpi' | 'single';
}

/** torch's default MASTER_PORT. */
export const DEFAULT_MASTER_PORT = 29500;

function int(op: string, env: Record<string, string | undefined>, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v.trim())) throw new ValueError(op, `${name}=${JSON.stringify(v)} is not a non-negative integer`);
  return Number(v.trim());
}

/**
 * The first host of a Slurm node list: "node[01-04,07],gpu5" gives "node01"; a plain "a,b" gives
 * "a" (what `scontrol show hostnames | head -1` prints, without scontrol).
 */
export function firstSlurmHost(nodelist: string): string {
  const m = /^([^,[]+)(\[([^\]]+)\])?/.exec(nodelist.trim());
  if (!m) return '';
  if (!m[3]) return m[1];
  const first = m[3].split(',')[0].split('-')[0];
  return m[1] + first;
}

/**
 * Reads the job's layout from env (default process.env). Returns a single-process layout (rank 0 of
 * 1 on 127.0.0.1) when no launcher's variables are set. A ValueError names the variable when one is
 * malformed or the set is inconsistent (a rank outside the world, a master address missing across
 * several machines).
 */
export function readDistEnv(env: Record<string, string | undefined> = process.env): DistEnv {
  const op = 'initProcessGroup';
  let layout: Omit<DistEnv, 'masterAddr' | 'masterPort'> & { defaultAddr?: string };
  const rank = int(op, env, 'RANK');
  const ompiRank = int(op, env, 'OMPI_COMM_WORLD_RANK');
  const slurmRank = int(op, env, 'SLURM_PROCID');
  if (rank !== undefined) {
    const worldSize = int(op, env, 'WORLD_SIZE');
    if (worldSize === undefined) throw new ValueError(op, 'RANK is set but WORLD_SIZE is not');
    const localWorldSize = int(op, env, 'LOCAL_WORLD_SIZE') ?? worldSize;
    layout = { rank, worldSize, localRank: int(op, env, 'LOCAL_RANK') ?? rank % localWorldSize, localWorldSize, source: 'torchrun' };
  } else if (slurmRank !== undefined) {
    // srun sets the step's task count; SLURM_NTASKS alone is also set in salloc and sbatch shells.
    const worldSize = int(op, env, 'SLURM_STEP_NUM_TASKS') ?? int(op, env, 'SLURM_NTASKS');
    if (worldSize === undefined) throw new ValueError(op, 'SLURM_PROCID is set but SLURM_NTASKS is not');
    // "4" or "4(x2)": tasks per node (the first node's count).
    const perNode = /^(\d+)/.exec(env.SLURM_NTASKS_PER_NODE ?? env.SLURM_TASKS_PER_NODE ?? '');
    const nodes = int(op, env, 'SLURM_NNODES') ?? 1;
    const localWorldSize = perNode ? Number(perNode[1]) : Math.ceil(worldSize / nodes);
    const host = firstSlurmHost(env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST ?? '');
    layout = {
      rank: slurmRank, worldSize, localRank: int(op, env, 'SLURM_LOCALID') ?? slurmRank % localWorldSize, localWorldSize,
      source: 'slurm', defaultAddr: nodes === 1 ? '127.0.0.1' : host || undefined,
    };
  } else if (ompiRank !== undefined) {
    const worldSize = int(op, env, 'OMPI_COMM_WORLD_SIZE');
    if (worldSize === undefined) throw new ValueError(op, 'OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not');
    const localWorldSize = int(op, env, 'OMPI_COMM_WORLD_LOCAL_SIZE') ?? worldSize;
    layout = {
      rank: ompiRank, worldSize, localRank: int(op, env, 'OMPI_COMM_WORLD_LOCAL_RANK') ?? ompiRank % localWorldSize,
      localWorldSize, source: 'mpi', defaultAddr: localWorldSize === worldSize ? '127.0.0.1' : undefined,
    };
  } else {
    layout = { rank: 0, worldSize: 1, localRank: 0, localWorldSize: 1, source: 'single', defaultAddr: '127.0.0.1' };
  }
  const { defaultAddr, ...where } = layout;
  if (where.worldSize < 1) throw new ValueError(op, `the world size is ${where.worldSize} (from ${where.source}'s variables)`);
  if (where.rank >= where.worldSize) {
    throw new ValueError(op, `rank ${where.rank} is not below the world size ${where.worldSize} (from ${where.source}'s variables)`);
  }
  if (where.localRank >= where.localWorldSize) {
    throw new ValueError(op, `local rank ${where.localRank} is not below the local world size ${where.localWorldSize}`);
  }
  const masterAddr = env.MASTER_ADDR || (where.source === 'torchrun' && where.localWorldSize === where.worldSize ? '127.0.0.1' : defaultAddr);
  if (!masterAddr) {
    throw new ValueError(op, `MASTER_ADDR is not set: with ${where.worldSize} processes on several machines, set it to rank 0's address`);
  }
  let masterPort = int(op, env, 'MASTER_PORT') ?? DEFAULT_MASTER_PORT;
  if (where.source === 'torchrun' && env.TORCHELASTIC_USE_AGENT_STORE === 'True') masterPort += 1;
  if (masterPort < 1 || masterPort > 65535) throw new ValueError(op, `MASTER_PORT=${masterPort} is not a port (1..65535)`);
  return { ...where, masterAddr, masterPort };
}
