// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import prettier from 'eslint-config-prettier';
import globals from 'globals';

/**
 * Layers may import only downward (docs/design.md, "Layers"): every folder of src/ but the
 * composition root (gateway) and the CLI has a rule. telemetry reads the stats types of the
 * layers it exports metrics for; tools drive the protocol layers as a device would.
 * src/errors (the error base, docs/errors.md) and src/time (the clock and timer queue) are not
 * in ALL: every layer may import them, and they import nothing of src/.
 */
const ALL = [
  'transport',
  'dtls',
  'coap',
  'enos',
  'auth',
  'bridge',
  'redis',
  'config',
  'telemetry',
  'tools',
  'gateway',
];
const except = (...allowed) => ALL.filter((l) => !allowed.includes(l));
const layerRules = [
  { layer: 'errors', forbid: [...ALL, 'time'] },
  { layer: 'time', forbid: [...ALL, 'errors'] },
  { layer: 'transport', forbid: except('transport') },
  {
    layer: 'dtls',
    forbid: [...except('dtls', 'transport', 'telemetry'), 'telemetry/setup'],
  },
  { layer: 'coap', forbid: except('coap', 'telemetry') },
  { layer: 'enos', forbid: except('enos') },
  { layer: 'redis', forbid: except('redis') },
  { layer: 'config', forbid: except('config') },
  { layer: 'auth', forbid: except('auth', 'enos', 'redis', 'telemetry') },
  { layer: 'bridge', forbid: except('bridge', 'enos', 'redis', 'telemetry') },
  { layer: 'telemetry', forbid: ['transport', 'enos', 'redis', 'config', 'tools', 'gateway'] },
  { layer: 'tools', forbid: ['transport', 'redis', 'config', 'telemetry', 'gateway'] },
];

/**
 * Inside the composition root, the CoAP↔bridge translation (docs/design.md, "Layout of the
 * composition root") knows the CoAP and bridge types and telemetry, nothing below CoAP, no
 * secrets or configuration, and nothing of the root around it: the root imports it, never
 * the other way.
 */
const translationRule = {
  files: ['src/gateway/translation/**/*.ts'],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          ...['transport', 'dtls', 'enos', 'auth', 'redis', 'config', 'tools'].map((f) => ({
            group: [`**/${f}/**`],
            message: `src/gateway/translation must not import from src/${f} (docs/design.md).`,
          })),
          {
            group: ['**/telemetry/setup.js'],
            message:
              'src/gateway/translation must not import src/telemetry/setup (docs/design.md).',
          },
          {
            group: ['../*.js', '../build/**', '../../*.js', '**/gateway/*.js'],
            message: 'src/gateway/translation must not import the composition root around it.',
          },
        ],
      },
    ],
  },
};

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
            // a layer is a folder; a path with a slash names one file of it
            group: f.includes('/') ? [`**/${f}.js`] : [`**/${f}/**`, `../${f}/*`],
            message: `src/${layer} must not import from src/${f} (layering, docs/design.md).`,
          })),
        },
      ],
    },
  })),
  translationRule,
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
