#ifndef FUZZ_DRIVER_H
#define FUZZ_DRIVER_H
/// Runs libFuzzer (LLVMFuzzerRunDriver) on the target's LLVMFuzzerTestOneInput, which
/// each fuzz target defines with @_cdecl. Returns libFuzzer's exit status.
int fuzz_driver_run(int argc, char **argv);
#endif
