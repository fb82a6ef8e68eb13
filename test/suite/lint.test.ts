/**
 * `npm run lint` still fails on what it is there for: a layering violation
 * (no-restricted-imports, eslint.config.js) and a type-aware rule (no-floating-promises needs
 * the TypeScript program). eslint.config.js, as the repository has it, with the program cut
 * down to the two files linted here (the whole tsconfig.json's program takes half a minute of
 * CPU to build; `npm run lint` builds it once).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ESLint } from 'eslint';
import { REPO_ROOT } from '../helpers/processes.js';

const FILES = ['src/time/clock.ts', 'src/coap/codec.ts'];

const dir = mkdtempSync(join(tmpdir(), 'coap-edge-lint-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const program = join(dir, 'tsconfig.json');
writeFileSync(
  program,
  JSON.stringify({
    extends: join(REPO_ROOT, 'tsconfig.json'),
    compilerOptions: { typeRoots: [join(REPO_ROOT, 'node_modules', '@types')] },
    include: [],
    files: FILES.map((f) => join(REPO_ROOT, f)),
  }),
);

const eslint = new ESLint({ cwd: REPO_ROOT });
const small = new ESLint({
  cwd: REPO_ROOT,
  overrideConfig: {
    languageOptions: { parserOptions: { project: program, projectService: false } },
  },
});

async function lint(file: string, text: string) {
  const [result] = await small.lintText(text, { filePath: file });
  assert.ok(result);
  return result.messages.map((m) => ({ rule: m.ruleId, line: m.line, message: m.message }));
}

const source = (f: string) => readFileSync(join(REPO_ROOT, f), 'utf8');

void describe('npm run lint', () => {
  void it('lints every TypeScript file with type information, the typed rules on', async () => {
    for (const file of [
      'src/coap/codec.ts',
      'test/unit/coap/codec.test.ts',
      'bench/coap-codec.ts',
    ]) {
      const cfg = (await eslint.calculateConfigForFile(file)) as {
        languageOptions: { parserOptions: { projectService?: unknown } };
        rules: Record<string, unknown[]>;
      };
      assert.ok(cfg.languageOptions.parserOptions.projectService, `${file}: no type information`);
      for (const rule of ['no-floating-promises', 'no-misused-promises', 'await-thenable'])
        assert.equal(cfg.rules[`@typescript-eslint/${rule}`]?.[0], 2, `${file}: ${rule}`);
    }
  });

  void it('passes the files as they are', async () => {
    for (const file of FILES) assert.deepEqual(await lint(file, source(file)), [], file);
  });

  void it('fails on a floating promise (a rule that needs the types)', async () => {
    const text = source('src/time/clock.ts');
    // the line of `probe();`, the third one appended
    const line = text.split('\n').length + 1;
    const messages = await lint(
      'src/time/clock.ts',
      `${text}async function probe(): Promise<void> {}\nexport function run(): void {\n  probe();\n}\n`,
    );
    assert.deepEqual(
      messages.map((m) => [m.rule, m.line]),
      [['@typescript-eslint/no-floating-promises', line + 1]],
    );
  });

  void it('fails on an import against the layers', async () => {
    const messages = await lint(
      'src/coap/codec.ts',
      `import { type Gateway } from '../gateway/index.js';\nexport type G = Gateway;\n${source('src/coap/codec.ts')}`,
    );
    assert.deepEqual(
      messages.map((m) => [m.rule, m.line]),
      [['no-restricted-imports', 1]],
    );
    assert.match(messages[0]!.message, /src\/coap must not import from src\/gateway/);
  });
});
