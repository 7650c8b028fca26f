// readDistEnv: the job layout from torchrun's, Slurm's and Open MPI's variables, and its errors.
import t from 'tap';
import { dist } from '../../lib';

const { readDistEnv, firstSlurmHost } = dist;

t.test('torchrun / kiln launch variables', async (t) => {
  t.same(readDistEnv({ RANK: '3', WORLD_SIZE: '8', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '1234' }),
    { rank: 3, worldSize: 8, localRank: 1, localWorldSize: 2, masterAddr: '10.0.0.1', masterPort: 1234, source: 'torchrun' });
  t.same(readDistEnv({ RANK: '1', WORLD_SIZE: '2' }), { rank: 1, worldSize: 2, localRank: 1, localWorldSize: 2, masterAddr: '127.0.0.1', masterPort: 29500, source: 'torchrun' },
    'one machine: the master is local, the port torch\'s default');
  t.equal(readDistEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_PORT: '29500', TORCHELASTIC_USE_AGENT_STORE: 'True' }).masterPort, 29501,
    "under torchrun's agent store, kiln's store takes the next port");
  // torchrun inside an srun allocation: torchrun's variables win.
  t.equal(readDistEnv({ RANK: '0', WORLD_SIZE: '1', SLURM_PROCID: '5', SLURM_NTASKS: '8' }).source, 'torchrun');
});

t.test('Slurm variables', async (t) => {
  t.same(readDistEnv({ SLURM_PROCID: '5', SLURM_NTASKS: '8', SLURM_LOCALID: '1', SLURM_NTASKS_PER_NODE: '4(x2)', SLURM_NNODES: '2', SLURM_JOB_NODELIST: 'gpu[07-08]' }),
    { rank: 5, worldSize: 8, localRank: 1, localWorldSize: 4, masterAddr: 'gpu07', masterPort: 29500, source: 'slurm' });
  t.equal(readDistEnv({ SLURM_PROCID: '0', SLURM_NTASKS: '2', SLURM_NNODES: '1' }).masterAddr, '127.0.0.1');
  t.equal(readDistEnv({ SLURM_PROCID: '0', SLURM_NTASKS: '2', SLURM_NNODES: '2', SLURM_NODELIST: 'a,b', MASTER_ADDR: 'head' }).masterAddr, 'head', 'MASTER_ADDR wins');
  t.equal(firstSlurmHost('node[01-04,07],gpu5'), 'node01');
  t.equal(firstSlurmHost('a,b'), 'a');
  t.equal(firstSlurmHost('solo'), 'solo');
});

t.test('Open MPI variables', async (t) => {
  t.same(readDistEnv({ OMPI_COMM_WORLD_RANK: '2', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_RANK: '0', OMPI_COMM_WORLD_LOCAL_SIZE: '2', MASTER_ADDR: 'h0' }),
    { rank: 2, worldSize: 4, localRank: 0, localWorldSize: 2, masterAddr: 'h0', masterPort: 29500, source: 'mpi' });
  t.equal(readDistEnv({ OMPI_COMM_WORLD_RANK: '1', OMPI_COMM_WORLD_SIZE: '2' }).masterAddr, '127.0.0.1', 'one machine');
});

t.test('no launcher: a single process', async (t) => {
  t.same(readDistEnv({}), { rank: 0, worldSize: 1, localRank: 0, localWorldSize: 1, masterAddr: '127.0.0.1', masterPort: 29500, source: 'single' });
});

t.test('malformed or inconsistent variables name the variable', async (t) => {
  t.throws(() => readDistEnv({ RANK: 'x', WORLD_SIZE: '2' }), { name: 'ValueError', message: /RANK="x" is not a non-negative integer/ });
  t.throws(() => readDistEnv({ RANK: '0' }), { message: /RANK is set but WORLD_SIZE is not/ });
  t.throws(() => readDistEnv({ RANK: '2', WORLD_SIZE: '2' }), { message: /rank 2 is not below the world size 2/ });
  t.throws(() => readDistEnv({ RANK: '0', WORLD_SIZE: '4', LOCAL_WORLD_SIZE: '2' }), { message: /MASTER_ADDR is not set/ });
  t.throws(() => readDistEnv({ RANK: '0', WORLD_SIZE: '1', MASTER_PORT: '70000' }), { message: /MASTER_PORT=70000 is not a port/ });
  t.throws(() => readDistEnv({ SLURM_PROCID: '0' }), { message: /SLURM_NTASKS is not/ });
  t.throws(() => readDistEnv({ OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_LOCAL_SIZE: '2' }), { message: /MASTER_ADDR is not set/ });
});
