// libFuzzer target for the IDX reader (raw and gzip). Built by -Dfuzz=true with clang; run by scripts/fuzz.sh.
#include "tests/fuzz/targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tapegrad::fuzz::idx_one_input({data, size});
  return 0;
}
