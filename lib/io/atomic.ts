// Atomic file replacement: write a temporary file in the destination's folder, fsync it, rename it
// over the destination and fsync the folder, so that a crash leaves either the old file or the new
// one, never a partly written one. A writer killed mid-write leaves its temporary file behind; the
// next atomic write into that folder, and the next checkpoint read from it, remove such orphans.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { crcHex } from './checksum';

// Temporary files are named .<dest>.<host>-<pid>.<random>.tmp: the pid tells whether the writer still
// runs, and the host tag keeps a process from judging (and deleting) the files of writers on other
// machines that share the folder (NFS), whose pids mean nothing here. Older kiln wrote
// .<dest>.<pid>.<random>.tmp, without the host.
const HOST = crcHex(Buffer.from(os.hostname(), 'utf8'));
const TEMP_NAME = /^\..+\.(?:([0-9a-f]{8})-)?([1-9][0-9]{0,9})\.[0-9a-z]+\.tmp$/;

/** @internal The path of a temporary file for dest written by process pid (pid: for tests). */
export function tempPath(dest: string, pid = process.pid): string {
  const rand = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  return path.join(path.dirname(path.resolve(dest)), `.${path.basename(dest)}.${HOST}-${pid}.${rand}.tmp`);
}

/** False only when no process pid exists (EPERM means it exists under another user). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Removes the temporary files that atomic writes of processes no longer running on this machine left
 * in dir. Files that only look alike, those of live writers and those of other machines are kept;
 * anything that cannot be read or removed is left for the next call (cleaning never fails a save).
 */
export function removeOrphanedTemps(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = TEMP_NAME.exec(name);
    const pid = m ? Number(m[2]) : 0;
    if (!m || (m[1] !== undefined && m[1] !== HOST) || pid > 0x7fffffff || isAlive(pid)) continue;
    const file = path.join(dir, name);
    try {
      if (fs.lstatSync(file).isFile()) fs.unlinkSync(file);
    } catch {
      // Removed meanwhile by another cleaner, or not ours to remove.
    }
  }
}

/**
 * Calls write(fd) on a new temporary file next to `dest`, then moves it into place atomically.
 * On failure the temporary file is removed and dest is left as it was. Orphaned temporary files of
 * killed writers in the folder are removed first.
 */
export function writeAtomic(dest: string, write: (fd: number) => void): void {
  const dir = path.dirname(path.resolve(dest));
  removeOrphanedTemps(dir);
  const tmp = tempPath(dest);
  const fd = fs.openSync(tmp, 'wx');
  let moved = false;
  try {
    try {
      write(fd);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, dest);
    moved = true;
  } finally {
    if (!moved) fs.rmSync(tmp, { force: true });
  }
  syncDir(dir);
}

/** Writes all of data at `position`, or at the file's current position when none is given. */
export function writeAll(fd: number, data: Uint8Array, position?: number): void {
  let done = 0;
  while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, position === undefined ? null : position + done);
}

/** writeAtomic for a string or bytes. */
export function writeFileAtomic(dest: string, data: string | Uint8Array): void {
  writeAtomic(dest, (fd) => writeAll(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data));
}

/** Makes a rename in dir durable (the folder's entry is flushed); a no-op where folders cannot be opened. */
function syncDir(dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, 'r');
  } catch {
    return;
  }
  try {
    fs.fsyncSync(fd);
  } catch {
    // Some platforms (Windows, some network filesystems) do not fsync folders.
  } finally {
    fs.closeSync(fd);
  }
}
