// Devices: 'cpu' or 'cuda:N', and their native codes (-1 for the CPU, N for cuda:N).
import { DeviceError } from './errors';

/** Where a tensor lives: 'cpu', or 'cuda:N' for GPU N (options also accept 'cuda', meaning cuda:0). */
export type Device = 'cpu' | `cuda:${number}`;

export function deviceCode(op: string, d: string): number {
  if (d === 'cpu') return -1;
  if (d === 'cuda') return 0;
  const m = /^cuda:(\d+)$/.exec(d);
  if (!m) throw new DeviceError(op, `unknown device '${d}'; expected 'cpu', 'cuda' or 'cuda:N'`);
  return Number(m[1]);
}

export function deviceName(code: number): Device {
  return code < 0 ? 'cpu' : `cuda:${code}`;
}
