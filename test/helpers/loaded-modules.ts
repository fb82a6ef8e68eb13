/**
 * Preloaded into a child process (`node --import <this file's URL> ...`): when the process
 * exits, it writes the path of every module it loaded to the file named by
 * `LOADED_MODULES_FILE`, one a line. CommonJS modules are `require.cache`, which also holds the
 * CommonJS packages ES modules imported (the OpenTelemetry SDK and exporters, ioredis, undici,
 * aedes's persistence and emitter). With `LOADED_MODULES_ESM=1` ES modules too (zod,
 * coap-edge's own), reported by a `load` hook (`module.register`) that sees every file the ES
 * module loader loads; only on request, since the hook's thread costs the child about 0.2 s
 * of CPU.
 */
import { writeFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';

const out = process.env.LOADED_MODULES_FILE;
if (out !== undefined) {
  const cache = createRequire(import.meta.url).cache;
  const esModules = new Set<string>();
  if (process.env.LOADED_MODULES_ESM === '1') {
    const { port1, port2 } = new MessageChannel();
    port1.on('message', (path: string) => esModules.add(path));
    port1.unref();
    // runs on the loader's thread: passes each file it loads (a file: URL) back as a path
    const hook = `
      import { fileURLToPath } from 'node:url';
      let port;
      export function initialize(data) { port = data.port; }
      export async function load(url, context, next) {
        if (url.startsWith('file:')) port.postMessage(fileURLToPath(url));
        return next(url, context);
      }`;
    register(`data:text/javascript,${encodeURIComponent(hook)}`, {
      data: { port: port2 },
      transferList: [port2],
    });
  }
  process.on('exit', () => {
    const all = new Set([...Object.keys(cache), ...esModules]);
    writeFileSync(out, [...all].join('\n') + '\n');
  });
}

/** The URL to pass to `--import`. */
export const LOADED_MODULES_HOOK = import.meta.url;
