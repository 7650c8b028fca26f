// For binding.gyp: prints the include folder of an optional library (`openblas`: the folder holding
// OpenBLAS's cblas.h; `gloo`: the one holding gloo/), or nothing when it is not installed or its
// switch (KILN_OPENBLAS, KILN_GLOO) is 0/off/false/no.
const fs = require('fs');
const what = process.argv[2];
const candidates = {
  openblas: {
    dirs: ['/usr/include/x86_64-linux-gnu/openblas-pthread', '/usr/include/x86_64-linux-gnu/openblas-openmp',
      '/usr/include/aarch64-linux-gnu/openblas-pthread', '/usr/include/openblas', '/usr/local/include/openblas',
      '/usr/include'],
    has: (d) => fs.existsSync(`${d}/cblas.h`) && fs.existsSync(`${d}/openblas_config.h`),
    env: 'KILN_OPENBLAS',
  },
  gloo: {
    dirs: ['/usr/include', '/usr/local/include'],
    has: (d) => fs.existsSync(`${d}/gloo/rendezvous/context.h`),
    env: 'KILN_GLOO',
  },
}[what];
if (!candidates) {
  console.error(`find-library: unknown library '${what}' (openblas or gloo)`);
  process.exit(2);
}
const found = candidates.dirs.find(candidates.has);
if (!/^(0|off|false|no)$/i.test(process.env[candidates.env] ?? '') && found) process.stdout.write(found);
