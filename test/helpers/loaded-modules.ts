/**
 * Preloaded into a child process (`node --import <this file's URL> ...`): when the process
 * exits, it writes the path of every CommonJS module it loaded to the file named by
 * `LOADED_MODULES_FILE`, one a line. That is `require.cache`, which also holds the CommonJS
 * packages ES modules imported (the OpenTelemetry SDK and exporters, ioredis, undici, aedes's
 * persistence and emitter); ES modules themselves are not listed.
 */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const out = process.env.LOADED_MODULES_FILE;
if (out !== undefined) {
  const cache = createRequire(import.meta.url).cache;
  process.on('exit', () => writeFileSync(out, Object.keys(cache).join('\n') + '\n'));
}

/** The URL to pass to `--import`. */
export const LOADED_MODULES_HOOK = import.meta.url;
