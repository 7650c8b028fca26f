// Imported first by the learning tests, before kiln's native addon loads: OpenMP's default
// spin-waiting makes kiln's threads contend with OpenBLAS's and with the other test processes tap
// runs in parallel (training steps ran up to 20 times slower); passive waiting avoids that. The CLI
// sets the same default (lib/cli/main.ts).
process.env.OMP_WAIT_POLICY ??= 'passive';
