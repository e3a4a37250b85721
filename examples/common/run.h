// What every example program does around its model: threads, the output folder, the CSV log and the data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "examples/common/cli.h"
#include "models/data.h"
#include "models/module.h"
#include "models/optim.h"
#include "models/safetensors.h"

namespace tapegrad::run {

// Declares the flags every training program shares: --data --epochs --batch --lr --seed --threads --out
// --lr-schedule --resume --binarize.
void add_common_flags(cli::CommandLine& cli, const std::string& default_out, long long default_epochs,
                      long long default_batch, double default_lr);

// Applies --threads; creates --out (FileError naming the folder when it cannot be created or written).
void prepare(const cli::CommandLine& cli);

// Loads the data named by `spec` (--data's syntax: the bundled digits, "fashion" or a folder), printing what was
// loaded. `train` passes its run's "data" setting, which on --resume is the checkpoint's (Note [resume]).
MnistSplits load(const std::string& spec);

// Note [data of a run]: the data that `eval` and `sample` read for a checkpoint. Its run's --data is stored in its
// metadata ("data"), so a model trained with --data fashion is scored on Fashion-MNIST without repeating the flag
// (scoring it on the default digits would print plausible numbers for the wrong images). --data given on the
// command line wins: scoring a model on other images of its size is a legitimate question. Checkpoints without
// the entry get --data's default.
std::string data_of_run(const cli::CommandLine& cli, const Metadata& checkpoint_metadata);

// FileError naming `checkpoint` unless its model takes the data's images (height x width) and, when `classes` > 0,
// as many classes as the data has. Called after both are loaded: a bad --checkpoint fails first, with its own line.
void check_model_fits_data(const std::string& checkpoint, int64_t height, int64_t width, const Dataset& data,
                           int64_t classes = 0);

// Appends one row to a CSV file, writing the header first when the file is new. Flushed at once, so a killed
// run keeps every finished epoch's row.
void append_csv(const std::string& path, const std::vector<std::string>& header, const std::vector<std::string>& row);

// Keeps the header and the rows whose first column (the epoch) is at most `last_epoch`, dropping the rest and any
// cut-off last line: a run resumed from its epoch-e checkpoint re-runs epoch e + 1, whose row a killed run may
// already have written. Rewrites the file atomically; does nothing when it does not exist.
void truncate_csv(const std::string& path, long long last_epoch);

// Removes `<path>.tmp.*` files that a run killed while writing `path` left behind (Note [atomic write]).
void remove_stale_temporaries(const std::string& path);

// Note [resume]: the start of `train` in every program. Removes temporaries a killed run left beside `ckpt`.
// With --resume and a checkpoint present, the run's settings come from the checkpoint (its values replace those
// of `run_meta`, --data's included, so the continuation is the run that was interrupted) and training continues
// after its epoch. Flags given on the command line that disagree with the checkpoint are therefore ignored, and
// stderr names them (note_ignored_flags), so that `--resume --lr 3e-4` does not pass for a change of learning rate.
// --resume without a checkpoint starts a fresh run and says so (a run killed before its first checkpoint, or a
// job script that always passes --resume). log.csv keeps only the rows up to the checkpoint's epoch (all rows
// of a fresh run go): a run killed after logging an epoch but before saving it re-runs that epoch.
struct RunStart {
  bool resuming = false;
  int64_t first_epoch = 1;
  Metadata checkpoint_metadata;  // when resuming
};
RunStart start_run(const cli::CommandLine& cli, const std::string& ckpt, Metadata& run_meta);

// When resuming: one line on stderr naming each flag set on the command line whose value (`from_command_line`,
// keyed like the checkpoint metadata, flag name = key with '_' -> '-') differs from the checkpoint's. start_run
// calls it for run_meta; programs call it for their model configuration.
void note_ignored_flags(const cli::CommandLine& cli, const RunStart& start, const Metadata& from_command_line);

// After start_run and the construction of model and optimizer: when resuming, restores both from `ckpt`
// (checked against `expected`, the model's metadata) and says so; then prints the model summary.
void restore_or_start(const RunStart& start, const std::string& ckpt, Module& model, Optimizer& optimizer,
                      const Metadata& expected);

// Note [lr schedule]: the learning rate of an epoch (1-based) under --lr-schedule, set before the epoch's first step.
// The cosine horizon is the command's --epochs, so a run resumed with the same --epochs continues bit for bit,
// while extending a finished run with a larger --epochs re-stretches the schedule from that epoch on.
double epoch_learning_rate(const std::string& schedule, double base_lr, int64_t epoch, int64_t epochs);

// --checkpoint when given, else <out>/checkpoint.safetensors (programs that declare a --checkpoint flag).
std::string checkpoint_path(const cli::CommandLine& cli);

// "%.17g": enough digits to read a double back exactly (the eval subcommand reproduces logged values).
std::string exact(double value);

}  // namespace tapegrad::run
