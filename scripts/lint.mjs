#!/usr/bin/env node
// `npm run lint`: eslint and prettier --check side by side, each on a core of its own (both are
// single-threaded; one after the other, the second core sat idle for the whole of prettier's
// run). Each tool's output is printed whole when it ends, eslint's first; the exit code is 1
// when either failed. Two commands and their exit codes need no task-runner dependency.
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);

function run(cmd, args) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const out = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => out.push(d));
    child.on('error', (err) =>
      resolve({ code: 1, out: [Buffer.from(`${cmd}: ${err.message}\n`)] }),
    );
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 1 : 0), out }));
  });
}

const results = await Promise.all([
  run(bin('eslint'), ['.']),
  run(bin('prettier'), ['--check', '.']),
]);
for (const [name, r] of [
  ['eslint .', results[0]],
  ['prettier --check .', results[1]],
]) {
  process.stdout.write(`> ${name}\n`);
  for (const chunk of r.out) process.stdout.write(chunk);
  if (r.code !== 0) process.stdout.write(`lint: ${name} failed (exit ${r.code})\n`);
}
process.exitCode = results.some((r) => r.code !== 0) ? 1 : 0;
