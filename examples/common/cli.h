// A small command-line parser for the example programs: `program SUBCOMMAND [--flag value ...]`.
// Every flag is declared with a type, a default, a range and a help line, so `--help` documents all of them
// and a bad value is rejected with one clear line (UsageError -> exit code 2), never a crash.
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace tapegrad::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class CommandLine {
 public:
  CommandLine(std::string program, std::string summary);

  void add_subcommand(const std::string& name, const std::string& help);
  void add_int(const std::string& name, long long default_value, const std::string& help, long long min = 1,
               long long max = 1LL << 40);
  void add_double(const std::string& name, double default_value, const std::string& help, double min, double max);
  void add_string(const std::string& name, const std::string& default_value, const std::string& help,
                  std::vector<std::string> choices = {});
  void add_flag(const std::string& name, const std::string& help);

  // Parses argv; returns false when --help was asked (help already printed). Throws UsageError.
  bool parse(int argc, char** argv);

  const std::string& subcommand() const { return subcommand_; }
  long long get_int(const std::string& name) const;
  double get_double(const std::string& name) const;
  const std::string& get_string(const std::string& name) const;
  bool get_flag(const std::string& name) const;
  bool was_set(const std::string& name) const;
  bool has(const std::string& name) const { return options_.count(name) > 0; }  // declared?
  std::string help() const;
  // The flags as "--name value" pairs, for logs and checkpoint metadata.
  std::string describe_values() const;

 private:
  enum class Kind { integer, real, text, flag };
  struct Option {
    Kind kind;
    std::string value, help;
    std::vector<std::string> choices;
    double min = 0, max = 0;
    bool set = false;
  };
  const Option& option(const std::string& name) const;

  std::string program_, summary_, subcommand_;
  std::vector<std::pair<std::string, std::string>> subcommands_;
  std::map<std::string, Option> options_;
  std::vector<std::string> order_;
};

// Runs `body` and turns exceptions into one line on stderr: usage errors and bad input exit with 2.
int run_main(const char* program, int (*body)(int, char**), int argc, char** argv);

}  // namespace tapegrad::cli
