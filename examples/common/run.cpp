#include "examples/common/run.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "models/checkpoint.h"
#include "models/fileio.h"
#include "ops/error.h"
#include "ops/parallel.h"

namespace tapegrad::run {

void add_common_flags(cli::CommandLine& cli, const std::string& default_out, long long default_epochs,
                      long long default_batch, double default_lr) {
  cli.add_string("data", "digits", "training data: digits (bundled), fashion (Debian's dataset-fashion-mnist), or a "
                 "folder of MNIST-style IDX files");
  cli.add_int("epochs", default_epochs, "number of training epochs", 1, 100000);
  cli.add_int("batch", default_batch, "minibatch size", 1, 1 << 20);
  cli.add_double("lr", default_lr, "Adam learning rate", 1e-12, 10);
  cli.add_string("lr-schedule", "constant", "learning rate over the epochs: constant, or cosine (annealed from --lr "
                 "towards 0 over --epochs; Loshchilov & Hutter 2017, without restarts)", {"constant", "cosine"});
  cli.add_int("seed", 1, "random seed (initialisation, data order, noise)", 0, (1LL << 62));
  cli.add_int("threads", 0, "worker threads (0: all cores); results are identical for any value", 0, 1024);
  cli.add_string("out", default_out, "output folder for the log, checkpoints and pictures");
  cli.add_flag("resume", "continue training from <out>/checkpoint.safetensors (starts fresh if there is none yet)");
  cli.add_flag("binarize", "dynamic binarisation: resample pixels as Bernoulli(p) every epoch");
}

void prepare(const cli::CommandLine& cli) {
  set_num_threads(static_cast<int>(cli.get_int("threads")));
  const std::string out = cli.get_string("out");
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec || !std::filesystem::is_directory(out))
    fail<FileError>(out, ": cannot create the output folder, expected a writable path, found: ",
                    ec ? ec.message() : "not a folder");
  const std::string probe = out + "/.write-test";
  std::ofstream test(probe);
  if (!test) fail<FileError>(out, ": output folder is not writable, expected write permission, found none");
  test.close();
  std::filesystem::remove(probe, ec);
}

MnistSplits load(const std::string& spec) {
  MnistSplits data = load_data(spec);
  // What was loaded is a result, not progress: stdout, so that stderr carries at most the one error line.
  std::fprintf(stdout, "data: %s (%lld train, %lld test, %lldx%lld)\n", resolve_data(spec).c_str(),
               static_cast<long long>(data.train.size()), static_cast<long long>(data.test.size()),
               static_cast<long long>(data.train.rows), static_cast<long long>(data.train.cols));
  return data;
}

std::string data_of_run(const cli::CommandLine& cli, const Metadata& checkpoint_metadata) {
  const auto stored = checkpoint_metadata.find("data");
  if (cli.was_set("data") || stored == checkpoint_metadata.end()) return cli.get_string("data");
  return stored->second;
}

void check_model_fits_data(const std::string& checkpoint, int64_t height, int64_t width, const Dataset& data,
                           int64_t classes) {
  if (height != data.rows || width != data.cols)
    fail<FileError>(checkpoint, ": image size, expected ", data.rows, "x", data.cols, " (the data), found ", height, "x",
                    width);
  if (classes > 0 && classes != data.num_classes)
    fail<FileError>(checkpoint, ": classes, expected ", data.num_classes, " (the data), found ", classes);
}

void append_csv(const std::string& path, const std::vector<std::string>& header, const std::vector<std::string>& row) {
  const bool fresh = !std::filesystem::exists(path);
  std::ofstream out(path, std::ios::app);
  if (!out) fail<FileError>(path, ": cannot append to the log, expected a writable file, found none");
  auto write = [&](const std::vector<std::string>& cells) {
    for (size_t i = 0; i < cells.size(); ++i) out << (i ? "," : "") << cells[i];
    out << "\n";
  };
  if (fresh) write(header);
  write(row);
  out.flush();
}

void truncate_csv(const std::string& path, long long last_epoch) {
  if (!std::filesystem::exists(path)) return;
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  std::string kept;
  size_t begin = 0;
  for (size_t line = 0; begin < bytes.size(); ++line) {
    size_t end = begin;
    while (end < bytes.size() && bytes[end] != '\n') ++end;
    if (end == bytes.size()) break;  // no newline: a row cut off by a kill
    const std::string text(bytes.begin() + static_cast<ptrdiff_t>(begin), bytes.begin() + static_cast<ptrdiff_t>(end));
    char* stop = nullptr;
    const long long epoch = std::strtoll(text.c_str(), &stop, 10);
    if (line == 0 || (stop != text.c_str() && *stop == ',' && epoch <= last_epoch)) kept += text + "\n";
    begin = end + 1;
  }
  write_file_atomic(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(kept.data()), kept.size()));
}

void remove_stale_temporaries(const std::string& path) {
  const std::filesystem::path target(path);
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code ec;
  const std::filesystem::path dir = target.parent_path().empty() ? "." : target.parent_path();
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.path().filename().string().rfind(prefix, 0) == 0) std::filesystem::remove(entry.path(), ec);
}

RunStart start_run(const cli::CommandLine& cli, const std::string& ckpt, Metadata& run_meta) {
  remove_stale_temporaries(ckpt);
  RunStart start;
  start.resuming = cli.get_flag("resume") && std::filesystem::exists(ckpt);
  if (cli.get_flag("resume") && !start.resuming)
    std::fprintf(stderr, "no checkpoint at %s yet: starting a fresh run\n", ckpt.c_str());
  if (start.resuming) {
    start.checkpoint_metadata = load_safetensors(ckpt).metadata;
    note_ignored_flags(cli, start, run_meta);
    for (auto& [key, value] : run_meta)
      if (start.checkpoint_metadata.count(key)) value = start.checkpoint_metadata.at(key);
    auto epoch = start.checkpoint_metadata.find("epoch");
    start.first_epoch = (epoch == start.checkpoint_metadata.end() ? 0 : std::stoll(epoch->second)) + 1;
  }
  truncate_csv(std::filesystem::path(ckpt).parent_path().string() + "/log.csv", start.first_epoch - 1);
  return start;
}

namespace {
// A stored number as a person would type it ("0.00029999999999999997" -> "0.0003"); other text unchanged.
std::string readable(const std::string& stored) {
  char* end = nullptr;
  const double value = std::strtod(stored.c_str(), &end);
  if (stored.empty() || end != stored.c_str() + stored.size()) return stored;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", value);
  return buf;
}
}  // namespace

void note_ignored_flags(const cli::CommandLine& cli, const RunStart& start, const Metadata& from_command_line) {
  if (!start.resuming) return;
  std::string ignored;
  for (const auto& [key, value] : from_command_line) {
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (!cli.has(flag) || !cli.was_set(flag)) continue;
    const auto stored = start.checkpoint_metadata.find(key);
    const std::string kept = stored == start.checkpoint_metadata.end() ? "unset" : readable(stored->second);
    const std::string& given = cli.get_string(flag);  // as typed ("3e-4"); "true" for a switch
    if (kept != value)
      ignored += (ignored.empty() ? "--" : ", --") + flag + (given == "true" ? "" : " " + given) + " (checkpoint: " + kept + ")";
  }
  if (!ignored.empty())
    std::fprintf(stderr, "resuming keeps the checkpoint's settings; ignored: %s\n", ignored.c_str());
}

double epoch_learning_rate(const std::string& schedule, double base_lr, int64_t epoch, int64_t epochs) {
  if (schedule != "constant" && schedule != "cosine")
    fail<ValueError>("--lr-schedule: expected constant or cosine, found '", schedule, "'");
  const LrSchedule lr{.kind = schedule == "cosine" ? LrSchedule::Kind::cosine : LrSchedule::Kind::constant,
                      .base_lr = base_lr, .total_steps = epochs};
  return lr.at(epoch - 1);
}

std::string checkpoint_path(const cli::CommandLine& cli) {
  return cli.get_string("checkpoint").empty() ? cli.get_string("out") + "/checkpoint.safetensors"
                                              : cli.get_string("checkpoint");
}

std::string exact(double value) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  return buf;
}

void restore_or_start(const RunStart& start, const std::string& ckpt, Module& model, Optimizer& optimizer,
                      const Metadata& expected) {
  if (start.resuming) {
    load_checkpoint(ckpt, model, &optimizer, expected);
    std::fprintf(stderr, "resumed %s at epoch %lld\n", ckpt.c_str(), static_cast<long long>(start.first_epoch - 1));
  }
  std::fprintf(stderr, "%s", model.summary().c_str());
}

}  // namespace tapegrad::run
