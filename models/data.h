// Datasets of u8 images with int labels, where to find them (--data), and a deterministic DataLoader.
//
// Shape letters: N examples, B batch, H x W pixels, D = H * W.
//
// Note [loader determinism]: the shuffle and the dynamic binarisation use only splitmix64 (Steele, Lea and
// Flood 2014, with the constants of Vigna's reference code), never std::shuffle or std:: distributions, whose
// outputs differ between standard libraries. The epoch order is a Fisher-Yates shuffle driven by the stream
// seeded with hash64(seed, epoch). For example i in epoch e, key = hash64(hash64(seed, e), i), and output k of the
// stream seeded with key gives the uniforms u of pixels 2k and 2k + 1 (its high and low 32 bits); pixel v becomes
// 1 iff u / 2^32 < v / 255 (an exact integer comparison). Both depend on the dataset index, not the batch
// position, so a run is reproducible on any machine, batch size and thread count.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ops/tensor.h"

namespace tapegrad {

struct Dataset {
  std::vector<uint8_t> images;  // (N, H, W) row-major, 0..255
  std::vector<int32_t> labels;  // (N,), 0..num_classes-1
  int64_t rows = 0, cols = 0;
  int num_classes = 10;
  std::string source;  // the images file, for messages

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t pixels() const { return rows * cols; }  // D
  const uint8_t* image(int64_t i) const { return images.data() + i * pixels(); }
  // All images as (N, 1, H, W) float32 in [0, 1]; `.reshaped({N, D})` for an MLP.
  Tensor to_tensor() const;
  std::vector<int64_t> class_counts() const;
};

struct MnistSplits {
  Dataset train, test;
};

// Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte
// (each raw or with .gz) from `dir`, checking label counts and ranges. FileError names the missing file.
MnistSplits load_mnist_dir(const std::string& dir);

// The folder that the --data flag names:
//   "" or "digits" -> the bundled data/digits: $TAPEGRAD_DATA/digits if TAPEGRAD_DATA is set, else
//                     <source dir>/data/digits (TAPEGRAD_SOURCE_DIR, set by meson);
//   "fashion"      -> /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist); FileError with the
//                     apt-get hint when it is not installed;
//   anything else  -> that folder.
std::string resolve_data(const std::string& spec);
// load_mnist_dir(resolve_data(spec)).
MnistSplits load_data(const std::string& spec);

// splitmix64: the one generator of the loader (Note [loader determinism]).
uint64_t splitmix64(uint64_t& state);
uint64_t hash64(uint64_t a, uint64_t b);  // splitmix64 finaliser of a combined with b

// Semi-supervised split: `per_class` labelled examples of every class drawn with `seed`, the rest unlabelled.
// Both lists are sorted. Throws ValueError when a class has fewer than `per_class` examples.
std::pair<std::vector<int64_t>, std::vector<int64_t>> labelled_split(const Dataset& data, int64_t per_class,
                                                                     uint64_t seed);

struct DataLoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  uint64_t seed = 0;
  bool drop_last = false;  // skip a final batch smaller than batch_size
  bool binarize = false;   // dynamic binarisation: pixel p -> Bernoulli(p), new draw every epoch
  std::vector<int64_t> indices = {};  // the subset to iterate over; empty = every example
};

// One batch. `x` is a view of `buffer` (allocated once at the full batch size), so it is overwritten by the
// next call to DataLoader::next; clone() it to keep it.
struct Batch {
  Tensor x;                    // (B, D) float32; x.reshaped({B, 1, H, W}) for a conv layer
  std::vector<int32_t> y;      // (B,)
  std::vector<int64_t> index;  // (B,) dataset indices
  int64_t size = 0;            // B (the last batch may be smaller unless drop_last)
  Tensor buffer;               // (batch_size, D) storage behind x
};

class DataLoader {
 public:
  // Keeps a reference to `data`, which must outlive the loader (a temporary is refused at compile time).
  DataLoader(const Dataset& data, DataLoaderOptions options);
  DataLoader(Dataset&&, DataLoaderOptions) = delete;

  // Sets the epoch (its shuffle and binarisation) and rewinds. Epoch 0 is started by the constructor.
  void start_epoch(int64_t epoch);
  // Fills `batch` with the next batch of the current epoch; false once the epoch is exhausted.
  bool next(Batch& batch);

  int64_t size() const { return static_cast<int64_t>(order_.size()); }  // examples per epoch (before drop_last)
  int64_t batches_per_epoch() const;
  int64_t epoch() const { return epoch_; }
  const std::vector<int64_t>& order() const { return order_; }  // this epoch's dataset indices, in visit order
  const Dataset& dataset() const { return data_; }

 private:
  const Dataset& data_;
  DataLoaderOptions options_;
  std::vector<int64_t> order_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
};

}  // namespace tapegrad
