// The layout DESIGN.md names, checked on the sources: one door to the addon. Only lib/ops/* and
// lib/tensor.ts import lib/native.ts (values or types); everything else reaches native code through
// them, so argument checks, the dtype policy and signature checks cannot be bypassed.
import t from 'tap';
import * as fs from 'fs';
import * as path from 'path';
import * as ts from 'typescript';

const root = path.join(__dirname, '..');
const lib = path.join(root, 'lib');
const NATIVE = path.join(lib, 'native');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

/**
 * The module specifiers that file's source imports, exports from, requires or imports dynamically
 * and that resolve to lib/native.
 */
function nativeImports(file: string, source = fs.readFileSync(file, 'utf8')): string[] {
  const info = ts.preProcessFile(source, true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((spec) => spec.startsWith('.') && path.resolve(path.dirname(file), spec).replace(/\.(js|ts)$/, '') === NATIVE);
}

function mayImportNative(rel: string): boolean {
  return rel === 'lib/native.ts' || rel === 'lib/tensor.ts' || rel.startsWith('lib/ops/');
}

t.test('only lib/ops and lib/tensor.ts import lib/native.ts', async (t) => {
  const files = sources(lib).map((f) => path.relative(root, f).split(path.sep).join('/'));
  t.ok(files.includes('lib/ops/dispatch.ts') && files.length > 30, `read the sources (${files.length} files)`);
  let doors = 0;
  for (const rel of files) {
    const found = nativeImports(path.join(root, rel));
    if (mayImportNative(rel)) {
      doors += found.length ? 1 : 0;
      continue;
    }
    t.same(found, [], `${rel} does not import the addon`);
  }
  t.ok(doors > 0, 'the check sees the imports lib/ops makes');
});

t.test('the check finds every form of import', async (t) => {
  const file = path.join(lib, 'nn', 'example.ts');
  const forms = [
    "import { native } from '../native';",
    "import type { NativeHandle } from '../native';",
    "export { native } from '../native';",
    "const n = require('../native');",
    "const n = import('../native.js');",
  ];
  for (const src of forms) t.same(nativeImports(file, src), [src.match(/'([^']+)'/)![1]], src);
  t.same(nativeImports(path.join(lib, 'example.ts'), "import { native } from './native';"), ['./native'], 'from lib/');
  const others = "import { x } from '../ops/native';\nimport { y } from './native';";
  t.same(nativeImports(file, others), [], 'other modules named native do not count');
});
