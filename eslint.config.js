// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';
import globals from 'globals';

/** Layers may import only downward; see DESIGN.md "One datagram's way through". */
const layerRules = [
  { layer: 'transport', forbid: ['dtls', 'coap', 'bridge', 'auth', 'enos', 'gateway'] },
  {
    layer: 'dtls',
    forbid: ['coap', 'bridge', 'auth', 'enos', 'gateway', 'config', 'telemetry/setup'],
  },
  { layer: 'coap', forbid: ['dtls', 'bridge', 'auth', 'enos', 'gateway', 'config'] },
  { layer: 'enos', forbid: ['dtls', 'coap', 'bridge', 'auth', 'gateway', 'config', 'transport'] },
  { layer: 'auth', forbid: ['dtls', 'coap', 'bridge', 'gateway', 'transport'] },
  { layer: 'bridge', forbid: ['dtls', 'coap', 'gateway', 'transport'] },
];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/results/**', 'helm/**', 'test/.cache/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: {
        projectService: { allowDefaultProject: ['*.js', '*.mjs', 'scripts/*.mjs'] },
      },
    },
    rules: {
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/ban-ts-comment': ['error', { 'ts-nocheck': true, 'ts-ignore': true }],
      '@typescript-eslint/no-floating-promises': [
        'error',
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      'no-restricted-syntax': [
        'error',
        {
          selector: "MemberExpression[object.name='process'][property.name='exit']",
          message: 'Only the CLI may exit the process.',
        },
      ],
    },
  },
  ...layerRules.map(({ layer, forbid }) => ({
    files: [`src/${layer}/**/*.ts`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: forbid.map((f) => ({
            group: [`**/${f}/**`, `**/${f}.js`, `../${f}/*`],
            message: `src/${layer} must not import from src/${f} (layering, docs/design.md).`,
          })),
        },
      ],
    },
  })),
  {
    files: ['src/cli.ts', 'scripts/**', 'test/**', 'bench/**'],
    rules: { 'no-restricted-syntax': 'off' },
  },
  {
    files: ['test/**', 'bench/**'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
    },
  },
  { files: ['**/*.js', '**/*.mjs'], ...tseslint.configs.disableTypeChecked },
  prettier,
);
