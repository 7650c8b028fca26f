// Prints the folder holding OpenBLAS's cblas.h (for binding.gyp), or nothing when not installed.
const fs = require('fs');
const candidates = [
  '/usr/include/x86_64-linux-gnu/openblas-pthread', '/usr/include/x86_64-linux-gnu/openblas-openmp',
  '/usr/include/aarch64-linux-gnu/openblas-pthread', '/usr/include/openblas', '/usr/local/include/openblas',
  '/usr/include',
];
const found = candidates.find((d) => fs.existsSync(`${d}/cblas.h`) && fs.existsSync(`${d}/openblas_config.h`));
if (!/^(0|off|false|no)$/i.test(process.env.KILN_OPENBLAS ?? '') && found) process.stdout.write(found);
