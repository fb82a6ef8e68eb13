#!/usr/bin/env node
// Values exported by a module of src/ that no other file of the project (src/, test/, bench/:
// tsconfig.json's files) refers to: dead exports. Types are not checked (an options interface
// is part of a component's signature whether or not a caller names it). A value re-exported by
// an index counts for the module that declares it; the index's own export must be used too.
// `npm run lint` runs it; exit code 1 lists what to remove (or to stop exporting).
// Our own instead of knip or ts-prune: the TypeScript compiler the project already has answers
// this in a few lines, without a new dependency and its configuration.
// Usage: node scripts/unused-exports.mjs
import { relative, sep } from 'node:path';
import ts from 'typescript';

const repo = new URL('..', import.meta.url).pathname;
const parsed = ts.getParsedCommandLineOfConfigFile(
  `${repo}tsconfig.json`,
  {},
  {
    ...ts.sys,
    onUnRecoverableConfigFileDiagnostic: (d) => {
      throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    },
  },
);
if (parsed === undefined) throw new Error('tsconfig.json could not be read');
const program = ts.createProgram({ rootNames: parsed.fileNames, options: parsed.options });
const checker = program.getTypeChecker();
const ours = program
  .getSourceFiles()
  .filter((f) => !f.isDeclarationFile && !relative(repo, f.fileName).startsWith('..'));

/** Symbols referred to from a file other than the one that declares them (each alias hop). */
const used = new Set();
for (const file of ours) {
  const use = (first) => {
    let sym = first;
    while (sym !== undefined && !used.has(sym)) {
      const declaredHere = (sym.declarations ?? []).some((d) => d.getSourceFile() === file);
      if (!declaredHere) used.add(sym);
      sym = sym.flags & ts.SymbolFlags.Alias ? checker.getImmediateAliasedSymbol(sym) : undefined;
    }
  };
  const visit = (node) => {
    if (ts.isIdentifier(node)) use(checker.getSymbolAtLocation(node));
    // `const { a } = await import('./m.js')`: the names are properties of the module's type
    if (ts.isObjectBindingPattern(node)) {
      const type = checker.getTypeAtLocation(node);
      for (const e of node.elements) {
        const key = e.propertyName ?? e.name;
        if (ts.isIdentifier(key)) use(type.getProperty(key.text));
      }
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
}

/** Exports this check cannot see used, or that stay for now, each with why. */
const ALLOWED = new Set([
  // read by the child program test/unit/gateway/full-gc-deopt.test.ts writes out as text
  'src/dtls/record-cipher.ts: NATIVE_BUFFER_MAP_HOLDER',
]);

const unused = [];
for (const file of ours) {
  const path = relative(repo, file.fileName);
  if (!path.startsWith(`src${sep}`)) continue;
  const moduleSymbol = checker.getSymbolAtLocation(file);
  if (moduleSymbol === undefined) continue;
  for (const sym of checker.getExportsOfModule(moduleSymbol)) {
    const target = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym;
    if ((target.flags & ts.SymbolFlags.Value) === 0) continue;
    const name = `${path.split(sep).join('/')}: ${sym.getName()}`;
    if (!used.has(sym) && !ALLOWED.has(name)) unused.push(name);
  }
}

if (unused.length > 0) {
  console.error(`exported from src/ but used by no other file (${unused.length}):`);
  for (const line of unused.sort()) console.error(`  ${line}`);
  process.exitCode = 1;
}
