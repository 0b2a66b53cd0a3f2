//! Test media for the server benchmarks, made once per run by Debian's ffmpeg and cached under target/bench/media.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';

const KINDS = {
  // A 2 s 1280x720 30 fps H.264 + AAC segment, constant mux rate so it is about 1 MiB (a 4 Mbit/s stream).
  hd2s: ['-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '2', '-c:v', 'libx264', '-preset', 'veryfast', '-profile:v', 'main', '-pix_fmt', 'yuv420p',
    '-g', '60', '-keyint_min', '60', '-sc_threshold', '0', '-b:v', '3400k', '-maxrate', '3400k', '-bufsize', '1700k',
    '-x264-params', 'nal-hrd=cbr', '-c:a', 'aac', '-b:a', '128k', '-f', 'mpegts', '-muxrate', '4190000'],
  // A 1 s 160x90 segment (a few KiB) for filling a stream with thousands of segments quickly.
  tiny1s: ['-f', 'lavfi', '-i', 'testsrc2=size=160x90:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '1', '-c:v', 'libx264', '-preset', 'veryfast', '-pix_fmt', 'yuv420p', '-g', '30', '-sc_threshold', '0',
    '-c:a', 'aac', '-b:a', '32k', '-f', 'mpegts'],
};

/** The bytes of test segment `kind` (`hd2s` or `tiny1s`), generated on first use. */
export function segment(root, kind) {
  const dir = join(root, 'target', 'bench', 'media');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${kind}.ts`);
  if (!existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...KINDS[kind], tmp], { stdio: 'inherit' });
    renameSync(tmp, file);
  }
  return readFileSync(file);
}
