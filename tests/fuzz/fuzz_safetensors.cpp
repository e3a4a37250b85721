// libFuzzer target for the checkpoint (safetensors) reader. Built by -Dfuzz=true with clang; run by scripts/fuzz.sh.
#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tapegrad::fuzz::safetensors_one_input({data, size});
  return 0;
}
