// The names lib/index.ts exports, read from the TypeScript sources without loading the addon: used
// by write-esm-entry.js (the ES module's named exports) and by test/exports.test.ts (the snapshot of
// the public API).
const path = require('path');
const ts = require('typescript');

const ENTRY = path.join(__dirname, '..', 'lib', 'index.ts');

/**
 * Every export of the entry, sorted: 'name' for a value, 'name (type)' for a type-only export;
 * namespaces (nn, optim, ...) are listed and then walked as 'nn.Linear', 'nn.init.zeros_', ...
 * With `topValuesOnly`, only the entry's own value exports (what `require('kiln')` has as keys).
 */
function publicExports({ topValuesOnly = false } = {}) {
  const program = ts.createProgram([ENTRY], { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS, types: [] });
  const checker = program.getTypeChecker();
  const out = [];
  const walk = (moduleSymbol, prefix) => {
    for (const s of checker.getExportsOfModule(moduleSymbol)) {
      const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
      const name = prefix + s.getName();
      const isValue = (target.flags & ts.SymbolFlags.Value) !== 0;
      if (topValuesOnly) {
        if (isValue) out.push(name);
        continue;
      }
      out.push(isValue ? name : `${name} (type)`);
      if (target.flags & ts.SymbolFlags.ValueModule) walk(target, `${name}.`);
    }
  };
  walk(checker.getSymbolAtLocation(program.getSourceFile(ENTRY)), '');
  return out.sort();
}

module.exports = { publicExports };
