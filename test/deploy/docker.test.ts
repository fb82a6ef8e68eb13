/**
 * deploy/Dockerfile and .dockerignore, checked without a Docker engine (none runs on the
 * development machine; hadolint is not available): the file passes the dockerfile-utils linter
 * (the diagnostics of the Docker language server), is parsed with dockerfile-ast and
 * .dockerignore matched with @balena/dockerignore (test/deploy/dockerfile.ts), and its
 * promises are checked against the repository — base images, a
 * numeric non-root user, ports, health check, tini, production dependencies only, that every
 * COPY source exists and is in the build context, and what the runtime image will contain.
 * What can run without Docker runs: the image's ENTRYPOINT + CMD with the image's
 * environment, and its HEALTHCHECK command against it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { builtinModules } from 'node:module';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, posix } from 'node:path';
import { validate as validateDockerfile } from 'dockerfile-utils';
import ts from 'typescript';
import { loadConfig } from '../../src/config/load.js';
import { REPO_ROOT, killAll, run, startCli } from '../helpers/processes.js';
import {
  cleanPath,
  copiedFiles,
  copyArgs,
  dockerIgnore,
  healthcheckCommand,
  parseDockerfile,
  workdirAt,
  type Instruction,
  type Stage,
} from './dockerfile.js';

const DOCKERFILE = join(REPO_ROOT, 'deploy', 'Dockerfile');
const df = parseDockerfile(readFileSync(DOCKERFILE, 'utf8'));
const ignore = dockerIgnore(readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8'));
const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
};
const tsconfig = JSON.parse(readFileSync(join(REPO_ROOT, 'tsconfig.json'), 'utf8')) as {
  compilerOptions?: { outDir?: string };
};

const finalStage = (): Stage => {
  const s = df.stages[df.stages.length - 1];
  assert.ok(s !== undefined, 'the Dockerfile has a stage');
  return s;
};
const all = (stage: Stage, keyword: string): Instruction[] =>
  stage.instructions.filter((i) => i.keyword === keyword);
const lastOf = (stage: Stage, keyword: string): Instruction => {
  const list = all(stage, keyword);
  const ins = list[list.length - 1];
  assert.ok(ins !== undefined, `the ${stage.name ?? 'final'} stage has ${keyword}`);
  return ins;
};
/** ENV of a stage (later lines win), with the image's values for every instruction. */
const stageEnv = (stage: Stage): Record<string, string> =>
  Object.assign({}, ...all(stage, 'ENV').map((i) => i.env)) as Record<string, string>;

/** Every file below a repository path (the path itself for a file). */
function filesBelow(repoPath: string): string[] {
  const abs = join(REPO_ROOT, repoPath);
  if (!statSync(abs).isDirectory()) return [repoPath];
  return readdirSync(abs).flatMap((n) => filesBelow(posix.join(repoPath, n)));
}

/** What the runtime image will hold: image path → repository path. */
function runtimeImageFiles(): Map<string, string> {
  return copiedFiles(
    finalStage(),
    (ins, src) =>
      ins.flags.from === undefined
        ? cleanPath(src)
        : // the build's output, which the local build (tsc) also produces in the repository
          buildStagePathToRepo(ins.flags.from, src, ins).repoPath,
    filesBelow,
  );
}

/**
 * Maps a path of an earlier stage to the repository: it must be under that stage's WORKDIR
 * and either copied there from the context or produced by its `npm run build` (tsc's outDir).
 */
function buildStagePathToRepo(
  stageName: string,
  path: string,
  at: Instruction,
): { repoPath: string; producedByBuild: boolean } {
  const stage = df.stages.find((s) => s.name === stageName || String(s.index) === stageName);
  assert.ok(stage !== undefined, `line ${at.line}: COPY --from=${stageName}: no such stage`);
  const wd = workdirAt(stage);
  const rel = posix.relative(wd, posix.resolve(wd, path));
  assert.ok(
    !rel.startsWith('..'),
    `line ${at.line}: ${path} is outside ${wd} of stage ${stageName}`,
  );
  const outDir = cleanPath(tsconfig.compilerOptions?.outDir ?? 'dist');
  const built = all(stage, 'RUN').some((r) => /\bnpm run build\b/.test(r.rest));
  if (rel === outDir || rel.startsWith(`${outDir}/`)) {
    assert.ok(built, `line ${at.line}: ${path} would come from a build the stage does not run`);
    return { repoPath: rel, producedByBuild: true };
  }
  // otherwise it must have been copied into the stage from the context
  const copied = all(stage, 'COPY').some((c) =>
    copyArgs(c).sources.some((s) => rel === cleanPath(s) || rel.startsWith(`${cleanPath(s)}/`)),
  );
  assert.ok(copied, `line ${at.line}: ${path} is neither built nor copied in stage ${stageName}`);
  return { repoPath: rel, producedByBuild: false };
}

/**
 * Module specifiers of a compiled module, by TypeScript's own scanner (`ts.preProcessFile`):
 * static imports and re-exports, dynamic imports, `require` calls.
 */
function importedSpecifiers(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

describe('deploy/Dockerfile: linter and parsers', () => {
  it('passes the dockerfile-utils linter (the Docker language server diagnostics) without a problem', () => {
    const problems = validateDockerfile(readFileSync(DOCKERFILE, 'utf8'));
    assert.deepEqual(
      problems.map((d) => `line ${d.range.start.line + 1}: ${JSON.stringify(d.message)}`),
      [],
    );
  });

  it('the linter finds the mistakes of a broken Dockerfile (self-test)', () => {
    const problems = validateDockerfile(
      [
        'FROM node:20-bookworm-slim AS build AS again',
        'EXPOSE 5684/udpp',
        'HEALTHCHECK --interval=5 CMD ["node"]',
        'COPY package.json',
        'STOPSIGNAL',
      ].join('\n'),
    ).map((d) => d.range.start.line + 1);
    assert.deepEqual([...new Set(problems)].sort(), [1, 2, 3, 4, 5]);
  });

  it('reads what the checks below rely on: options, exec form, ENV, stages, continuation lines', () => {
    const d = parseDockerfile(
      [
        '# syntax=docker/dockerfile:1',
        'ARG X=1',
        'FROM node:20-bookworm-slim AS Build',
        'RUN a \\',
        '  && b',
        'COPY --from=build --chown=1000:1000 /src/dist ./dist',
        'FROM node:20-bookworm-slim',
        'HEALTHCHECK --interval=5s CMD ["node", "-e", "x"]',
        'ENV A=1 \\',
        '    B="two words"',
        'ENTRYPOINT ["/usr/bin/tini", "--"]',
      ].join('\n'),
    );
    assert.deepEqual(
      d.preamble.map((i) => i.keyword),
      ['ARG'],
    );
    const [b, r] = d.stages;
    assert.ok(b !== undefined && r !== undefined && d.stages.length === 2);
    assert.equal(b.name, 'build');
    assert.deepEqual(b.instructions[0]?.args, ['a', '&&', 'b']);
    assert.equal(b.instructions[0]?.line, 4);
    const copy = b.instructions[1];
    assert.ok(copy !== undefined);
    assert.deepEqual(copy.flags, { from: 'build', chown: '1000:1000' });
    assert.deepEqual(copyArgs(copy), { sources: ['/src/dist'], dest: './dist' });
    assert.equal(r.name, undefined);
    const hc = r.instructions[0];
    assert.ok(hc !== undefined);
    assert.deepEqual(hc.flags, { interval: '5s' });
    assert.deepEqual(healthcheckCommand(hc), ['node', '-e', 'x']);
    assert.deepEqual(r.instructions[1]?.env, { A: '1', B: 'two words' });
    assert.deepEqual(r.instructions[2]?.exec, ['/usr/bin/tini', '--']);
  });

  it('matches .dockerignore patterns as Docker does', () => {
    const ig = dockerIgnore('# c\nnode_modules\n**/*.log\ndeploy/*\n!deploy/examples\n/dist\n');
    assert.equal(ig.ignores('node_modules/x/y.js'), true);
    assert.equal(ig.ignores('a/b.log'), true);
    assert.equal(ig.ignores('b.log'), true);
    assert.equal(ig.ignores('deploy/Dockerfile'), true);
    assert.equal(ig.ignores('deploy/examples/devices.json'), false);
    assert.equal(ig.ignores('dist/src/cli.js'), true);
    assert.equal(ig.ignores('src/dist/x.ts'), false);
    assert.equal(ig.ignores('package.json'), false);
  });
});

describe('deploy/Dockerfile', () => {
  it('is multi-stage on the official Node 20 slim image in every stage, pinned by tag', () => {
    assert.ok(df.stages.length >= 2, 'a build stage and a runtime stage');
    for (const s of df.stages) {
      assert.match(
        s.base,
        /^node:20-[a-z0-9.-]*slim[a-z0-9.-]*(@sha256:[0-9a-f]{64})?$/,
        `line ${s.from.line}: FROM ${s.base}`,
      );
    }
    assert.deepEqual(df.preamble, [], 'no ARG before FROM: the base image is spelled out');
  });

  it('builds in a stage of its own: npm ci (no scripts) then npm run build after the sources', () => {
    const build = df.stages[0]!;
    const runs = all(build, 'RUN');
    const ci = runs.find((r) => /\bnpm ci\b/.test(r.rest));
    assert.ok(ci !== undefined, 'the build stage runs npm ci');
    // `prepare` would run tsc before the sources are copied
    assert.match(ci.rest, /--ignore-scripts\b/);
    const buildRun = runs.find((r) => /\bnpm run build\b/.test(r.rest));
    assert.ok(buildRun !== undefined, 'the build stage runs npm run build');
    const srcCopy = all(build, 'COPY').find((c) =>
      copyArgs(c).sources.some((s) => cleanPath(s) === 'src'),
    );
    assert.ok(
      srcCopy !== undefined && srcCopy.line < buildRun.line,
      'src/ is copied before the build',
    );
    assert.ok(
      ci.line < srcCopy.line,
      'dependencies are installed before the sources (layer cache)',
    );
  });

  it('runs as a numeric non-root user in the final stage', () => {
    const user = lastOf(finalStage(), 'USER').rest.trim();
    const m = /^(\d+)(?::(\d+))?$/.exec(user);
    assert.ok(m !== null, `USER ${user} must be numeric (uid[:gid]) for runAsNonRoot`);
    assert.notEqual(Number(m[1]), 0, 'not root');
    if (m[2] !== undefined) assert.notEqual(Number(m[2]), 0, 'not the root group');
    // nothing is installed or built as that user after the switch
    const userLine = lastOf(finalStage(), 'USER').line;
    assert.equal(all(finalStage(), 'RUN').filter((r) => r.line > userLine).length, 0);
  });

  it('sets NODE_ENV=production and a valid COAP_EDGE_HTTP_PORT, and exposes 5684/udp and it', () => {
    const env = stageEnv(finalStage());
    assert.equal(env.NODE_ENV, 'production');
    const coapEnv = Object.fromEntries(
      Object.entries(env).filter(([k]) => k.startsWith('COAP_EDGE_')),
    );
    const config = loadConfig({ env: coapEnv }); // every COAP_EDGE_* of the image is valid
    assert.equal(config.httpPort, 9464);
    const exposed = all(finalStage(), 'EXPOSE').flatMap((e) => e.args);
    assert.ok(exposed.includes('5684/udp'), `EXPOSE ${exposed.join(' ')}`);
    assert.equal(config.dtlsPort, 5684, 'the exposed UDP port is the DTLS port');
    assert.ok(
      exposed.includes(`${config.httpPort}/tcp`) || exposed.includes(String(config.httpPort)),
      `the HTTP port ${config.httpPort} is exposed (${exposed.join(' ')})`,
    );
  });

  it('has a HEALTHCHECK calling /healthz on the HTTP port with node (no curl in slim)', () => {
    const hc = lastOf(finalStage(), 'HEALTHCHECK');
    assert.ok(hc.rest.startsWith('CMD '), 'HEALTHCHECK [options] CMD ...');
    const cmd = healthcheckCommand(hc);
    assert.ok(cmd !== undefined, 'exec form (no shell needed)');
    assert.equal(cmd[0], 'node');
    const script = cmd.join(' ');
    assert.match(script, /127\.0\.0\.1/);
    assert.match(script, /\/healthz/);
    assert.match(script, /COAP_EDGE_HTTP_PORT/, 'follows the HTTP port setting');
    assert.match(script, /'9464'|\b9464\b/, 'falls back to the image default');
    for (const f of ['interval', 'timeout', 'retries']) assert.ok(f in hc.flags, `--${f}`);
  });

  it('runs node under tini (signals reach coap-edge, zombies are reaped): ENTRYPOINT and CMD', () => {
    const stage = finalStage();
    const entry = lastOf(stage, 'ENTRYPOINT').exec;
    assert.deepEqual(entry, ['/usr/bin/tini', '--', 'node', 'dist/src/cli.js']);
    const install = all(stage, 'RUN').find((r) => /apt-get install\b.*\btini\b/s.test(r.rest));
    assert.ok(install !== undefined, "tini is installed from Debian's packages in the final stage");
    assert.match(install.rest, /--no-install-recommends/);
    assert.match(install.rest, /rm -rf \/var\/lib\/apt\/lists/);
    assert.deepEqual(lastOf(stage, 'CMD').exec, ['serve']);
    const stop = all(stage, 'STOPSIGNAL')[0];
    if (stop !== undefined) assert.equal(stop.rest.trim(), 'SIGTERM', 'SIGTERM drains');
  });

  it('makes what it copies from the checkout readable by that user, whatever the umask was', () => {
    const stage = finalStage();
    const runs = all(stage, 'RUN');
    for (const c of all(stage, 'COPY').filter((x) => x.flags.from === undefined)) {
      for (const src of copyArgs(c).sources) {
        const p = cleanPath(src);
        const fixed = runs.some(
          (r) =>
            r.line > c.line &&
            new RegExp(
              `chmod (-R )?a\\+rX? [^&]*\\b${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`,
            ).test(r.rest),
        );
        assert.ok(fixed || c.flags.chmod !== undefined, `line ${c.line}: ${src} is made readable`);
      }
    }
  });

  it('installs production dependencies only in the final stage, without running scripts', () => {
    const ci = all(finalStage(), 'RUN').filter((r) => /\bnpm ci\b/.test(r.rest));
    assert.equal(ci.length, 1);
    assert.match(ci[0]!.rest, /--omit=dev\b/);
    assert.match(ci[0]!.rest, /--ignore-scripts\b/, '`prepare` (the build) must not run');
    assert.ok(
      !all(finalStage(), 'RUN').some((r) => /\bnpm (install|i|run)\b|\btsc\b/.test(r.rest)),
      'no other install or build in the final stage',
    );
  });

  it('copies only dist/src, package.json, package-lock.json and deploy/examples into the final stage', () => {
    const copied = all(finalStage(), 'COPY').flatMap((c) =>
      copyArgs(c).sources.map(
        (s) => `${c.flags.from !== undefined ? `${c.flags.from}:` : ''}${cleanPath(s)}`,
      ),
    );
    assert.deepEqual(
      copied.sort(),
      ['build:src/dist/src', 'deploy/examples', 'package-lock.json', 'package.json'].sort(),
    );
    assert.equal(all(finalStage(), 'ADD').length, 0, 'COPY, not ADD');
  });

  it('every COPY source exists and is in the build context (or is built by the build stage)', () => {
    for (const stage of df.stages) {
      for (const c of all(stage, 'COPY')) {
        for (const src of copyArgs(c).sources) {
          if (c.flags.from !== undefined) {
            const { repoPath, producedByBuild } = buildStagePathToRepo(c.flags.from, src, c);
            assert.ok(
              existsSync(join(REPO_ROOT, repoPath)),
              `line ${c.line}: ${src} of stage ${c.flags.from} is ${repoPath} in the repository (${producedByBuild ? 'run the build' : 'missing'})`,
            );
            continue;
          }
          const p = cleanPath(src);
          assert.ok(!/[*?[]/.test(p), `line ${c.line}: no wildcards in COPY sources (${src})`);
          assert.ok(
            existsSync(join(REPO_ROOT, p)),
            `line ${c.line}: COPY ${src}: not in the repository`,
          );
          for (const f of filesBelow(p)) {
            assert.equal(
              ignore.ignores(f),
              false,
              `line ${c.line}: ${f} is excluded by .dockerignore`,
            );
          }
        }
      }
    }
  });

  it('puts what the entry point and the compose commands need where they look for it', () => {
    const files = runtimeImageFiles();
    const stage = finalStage();
    const wd = workdirAt(stage, lastOf(stage, 'ENTRYPOINT'));
    const entry = lastOf(stage, 'ENTRYPOINT').exec ?? [];
    const script = posix.resolve(wd, entry[3] ?? '');
    assert.ok(files.has(script), `${script} (the entry point) is in the image`);
    // cli.js reads ../../package.json for its version
    assert.ok(files.has(posix.resolve(posix.dirname(script), '../../package.json')));
    for (const f of ['deploy/examples/devices.json', 'deploy/examples/embedded.yaml']) {
      assert.ok(files.has(posix.resolve(wd, f)), `${f} is in the image`);
    }
    assert.ok(
      ![...files.keys()].some((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')),
      'no TypeScript sources',
    );
    assert.ok(![...files.keys()].some((f) => f.includes('/test/')), 'no tests');
  });

  it('the compiled code imports only node built-ins and production dependencies', () => {
    // what the scanner finds: statements only, not words in strings
    assert.deepEqual(
      importedSpecifiers(
        "import a from 'x';\nimport { b,\n c } from \"@s/y/z\";\nexport * from './r.js';\n" +
          "import 'side';\nconst m = await import('dyn');\nopt('secrets from')\n  .option('w');\n",
      ),
      ['x', '@s/y/z', './r.js', 'side', 'dyn'],
    );
    const deps = new Set(Object.keys(pkg.dependencies ?? {}));
    const builtins = new Set(builtinModules);
    const problems: string[] = [];
    for (const f of filesBelow('dist/src').filter((x) => x.endsWith('.js'))) {
      for (const spec of importedSpecifiers(readFileSync(join(REPO_ROOT, f), 'utf8'))) {
        if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
        const name = spec.startsWith('@')
          ? spec.split('/').slice(0, 2).join('/')
          : (spec.split('/')[0] ?? '');
        if (deps.has(name)) continue;
        const dev = pkg.devDependencies?.[name] !== undefined ? ' (a devDependency)' : '';
        problems.push(`${f}: ${spec}${dev}`);
      }
    }
    assert.deepEqual(problems, [], 'not installed by npm ci --omit=dev');
  });

  it('keeps the process off the filesystem (read-only root filesystem): no writes in src/ (workstation tools aside)', () => {
    const writers =
      /\b(writeFileSync|writeFile|appendFileSync|appendFile|createWriteStream|mkdirSync|mkdtempSync|rmSync|unlinkSync|renameSync)\s*\(/;
    // src/tools/ (device tool, load generator, stand-ins) runs on a workstation, not in the pod
    const problems = filesBelow('src')
      .filter((f) => f.endsWith('.ts') && !f.startsWith('src/tools/'))
      .filter((f) => writers.test(readFileSync(join(REPO_ROOT, f), 'utf8')));
    assert.deepEqual(problems, []);
  });
});

describe('.dockerignore', () => {
  it('keeps dependencies, build output, git data, benchmark results and test artefacts out', () => {
    for (const p of [
      'node_modules/x/index.js',
      'dist/src/cli.js',
      '.git/HEAD',
      'bench/results/r.json',
      'coverage/lcov.info',
      'test/unit/x.test.ts',
      'npm-debug.log',
      '.env',
    ]) {
      assert.equal(ignore.ignores(p), true, `${p} is excluded`);
    }
  });
});

/** A TCP port nobody listens on right now. */
async function freeTcpPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const addr = srv.address();
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  assert.ok(typeof addr === 'object' && addr !== null);
  return addr.port;
}

describe('the image command and health check, run without Docker', () => {
  after(killAll);
  let port = 0;
  let healthcheck: readonly string[] = [];
  let imageEnv: Record<string, string> = {};
  before(async () => {
    port = await freeTcpPort();
    const hc = lastOf(finalStage(), 'HEALTHCHECK');
    healthcheck = healthcheckCommand(hc) ?? [];
    imageEnv = stageEnv(finalStage());
  });

  const check = (): Promise<number | null> =>
    run(process.execPath, healthcheck.slice(1), {
      env: { PATH: process.env.PATH ?? '', ...imageEnv, COAP_EDGE_HTTP_PORT: String(port) },
      timeoutMs: 10_000,
    }).then((r) => r.code);

  it('ENTRYPOINT + CMD (node dist/src/cli.js serve) starts with the image environment; HEALTHCHECK passes, then fails once it stopped', async () => {
    const entry = lastOf(finalStage(), 'ENTRYPOINT').exec ?? [];
    const cmd = lastOf(finalStage(), 'CMD').exec ?? [];
    const argv = [...entry.slice(entry.indexOf('--') + 1), ...cmd];
    assert.equal(argv[0], 'node');
    assert.equal(argv[1], 'dist/src/cli.js');
    assert.equal(await check(), 1, 'nothing listens yet: unhealthy');
    const p = startCli(argv.slice(2), {
      // the repository root stands in for /app; loopback and a free UDP port for the test
      env: {
        ...imageEnv,
        COAP_EDGE_HTTP_PORT: String(port),
        COAP_EDGE_BIND: '127.0.0.1',
        COAP_EDGE_HTTP_BIND: '127.0.0.1',
        COAP_EDGE_DTLS_PORT: '0',
        COAP_EDGE_LOG_LEVEL: 'info',
      },
      timeoutMs: 30_000,
    });
    await p.waitFor(/admin HTTP server listening/, { timeoutMs: 15_000 });
    assert.equal(await check(), 0, `healthy while serving\n${p.describe()}`);
    p.signal('SIGTERM');
    const r = await p.done;
    assert.equal(r.code, 0, `SIGTERM drains and exits 0\n${p.describe()}`);
    assert.equal(await check(), 1, 'unhealthy once stopped');
  });
});
