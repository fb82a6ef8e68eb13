#!/usr/bin/env node
// CPU of starting `coap-edge serve`, from spawn to its "coap-edge listening" log line (utime +
// stime of /proc/<pid>/stat, 10 ms ticks; Linux only), for builds in rotation.
// With `import` instead of a configuration: the CPU of `await import()` of the checkout's
// dist/src/gateway/index.js in a fresh process (process.cpuUsage() around it), no serve.
// With `device`, `bench` or `help`: the whole CPU (user + sys, /usr/bin/time) of a command
// that ends by itself: `device post` to a port where nothing listens (it gives up after
// 0.3 s), `bench --generate --count 2`, `--help`.
// Usage: node scripts/serve-start-cpu.mjs <rounds> <embedded|redis|import|device|bench|help> <label>=<checkout> ...
// e.g. node scripts/serve-start-cpu.mjs 8 embedded base=/work/wt/base new=. control=/work/wt/base
// Each checkout needs a build (`npm run build`); `redis` needs Redis on 127.0.0.1:6379 and an
// MQTT broker on 127.0.0.1:1883 (it only connects). Prints medians and each build's ratio to
// the first (docs/testing.md, "Suite time").
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const [rounds, config, ...specs] = process.argv.slice(2);
const common = ['--dtls-port', '0', '--bind', '127.0.0.1'];
const args = {
  embedded: ['--config', 'deploy/examples/embedded.yaml', '--embedded-broker', '0', ...common],
  redis: [
    '--devices',
    'deploy/examples/devices.json',
    '--redis-url',
    'redis://127.0.0.1:6379',
    '--redis-prefix',
    'serve-start-cpu:',
    '--mqtt-url',
    'mqtt://127.0.0.1:1883',
    ...common,
  ],
  import: [],
}[config ?? ''];
const commands = {
  device: [
    ...['device', 'post', 'thing/measurepoint/post', '--port', '1', '--timeout', '0.3'],
    ...['--product-key', 'pk', '--device-key', 'dk', '--secret', 'secret'],
  ],
  bench: ['bench', '--generate', '--count', '2'],
  help: ['--help'],
};
const command = commands[config ?? ''];
if (!(Number(rounds) > 0) || (args ?? command) === undefined || specs.length === 0) {
  console.error(
    'usage: serve-start-cpu.mjs <rounds> <embedded|redis|import|device|bench|help> <label>=<checkout> ...',
  );
  process.exit(2);
}
const builds = specs.map((s) => {
  const [label = '', dir = ''] = s.split('=');
  return { label, dir: resolve(dir), cpu: [], wall: [] };
});
const TICK_MS = 10;

const IMPORT = `const c0 = process.cpuUsage();
await import(process.argv[1]);
const c = process.cpuUsage(c0);
console.log((c.user + c.system) / 1000);`;

function importOnce(b) {
  const t0 = performance.now();
  const out = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', IMPORT, `${b.dir}/dist/src/gateway/index.js`],
    { encoding: 'utf8' },
  );
  b.cpu.push(Math.round(Number(out)));
  b.wall.push(performance.now() - t0);
}

const timeFile = join(mkdtempSync(join(tmpdir(), 'serve-start-cpu-')), 'time');
function commandOnce(b) {
  const t0 = performance.now();
  spawnSync(
    '/usr/bin/time',
    ['-f', '%U %S', '-o', timeFile, process.execPath, `${b.dir}/dist/src/cli.js`, ...command],
    { cwd: b.dir, stdio: 'ignore' },
  );
  b.wall.push(performance.now() - t0);
  const [user = '', sys = ''] = readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(' ');
  b.cpu.push(Math.round((Number(user) + Number(sys)) * 1000));
}

function startOnce(b) {
  return new Promise((done, fail) => {
    const env = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith('COAP_EDGE_') && !k.startsWith('OTEL_')) env[k] = v;
    }
    const t0 = performance.now();
    const child = spawn(process.execPath, [`${b.dir}/dist/src/cli.js`, 'serve', ...args], {
      cwd: b.dir,
      env,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    let seen = false;
    child.stdout.setEncoding('utf8').on('data', (s) => {
      out += s;
      if (seen || !out.includes('coap-edge listening')) return;
      seen = true;
      const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      b.cpu.push((Number(f[11]) + Number(f[12])) * TICK_MS);
      b.wall.push(performance.now() - t0);
      child.kill('SIGKILL');
    });
    child.on('exit', () =>
      seen ? done() : fail(new Error(`${b.label}: no listening line\n${out}`)),
    );
  });
}

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const load0 = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
for (let r = 0; r < Number(rounds); r++) {
  for (const b of r % 2 === 0 ? builds : [...builds].reverse()) {
    if (config === 'import') importOnce(b);
    else if (command !== undefined) commandOnce(b);
    else await startOnce(b);
  }
}
const load1 = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
const first = median(builds[0].cpu);
for (const b of builds) {
  const c = median(b.cpu);
  console.log(
    `${config} ${b.label}: CPU median ${c} ms (${Math.min(...b.cpu)}–${Math.max(...b.cpu)}, ` +
      `n=${b.cpu.length}), wall median ${median(b.wall).toFixed(0)} ms, ` +
      `CPU / ${builds[0].label} ${(c / first).toFixed(3)}`,
  );
}
console.log(`load average (1 min) ${load0} -> ${load1}`);
