#!/usr/bin/env node
// Makes `npx coap-edge` work from the repository root right after `npm ci`: npm links the
// bins of dependencies into node_modules/.bin but not the root package's own bin.
import { chmodSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const target = join(root, 'dist', 'src', 'cli.js');
if (!existsSync(target)) {
  console.error('link-bin: dist/src/cli.js is missing; run the build first');
  process.exit(1);
}
chmodSync(target, 0o755);
const binDir = join(root, 'node_modules', '.bin');
mkdirSync(binDir, { recursive: true });
const link = join(binDir, 'coap-edge');
rmSync(link, { force: true });
symlinkSync(relative(binDir, target), link);
