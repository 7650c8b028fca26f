// Lists the CPU backend's C++ sources for binding.gyp (node-gyp has no globbing).
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const dirs = ['native/core', 'native/ops', 'native/cpu', 'native/dist', 'native/binding'];
const files = [];
for (const d of dirs) {
  for (const f of fs.readdirSync(path.join(root, d)).sort()) if (f.endsWith('.cc')) files.push(`${d}/${f}`);
}
console.log(files.join(' '));
