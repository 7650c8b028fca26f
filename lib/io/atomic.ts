// Atomic file replacement: write a temporary file in the destination's folder, fsync it, rename it
// over the destination and fsync the folder, so that a crash leaves either the old file or the new
// one, never a partly written one.
import * as fs from 'fs';
import * as path from 'path';

/**
 * Calls write(fd) on a new temporary file next to `dest`, then moves it into place atomically.
 * On failure the temporary file is removed and dest is left as it was.
 */
export function writeAtomic(dest: string, write: (fd: number) => void): void {
  const dir = path.dirname(path.resolve(dest));
  const tmp = path.join(dir, `.${path.basename(dest)}.${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`);
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
