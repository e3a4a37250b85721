#include "examples/common/cli.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "ops/error.h"

namespace tapegrad::cli {

CommandLine::CommandLine(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

void CommandLine::add_subcommand(const std::string& name, const std::string& help) { subcommands_.emplace_back(name, help); }

void CommandLine::add_int(const std::string& name, long long default_value, const std::string& help, long long min,
                          long long max) {
  options_[name] = {Kind::integer, std::to_string(default_value), help, {}, static_cast<double>(min),
                    static_cast<double>(max)};
  order_.push_back(name);
}

void CommandLine::add_double(const std::string& name, double default_value, const std::string& help, double min,
                             double max) {
  std::ostringstream v;
  v << default_value;
  options_[name] = {Kind::real, v.str(), help, {}, min, max};
  order_.push_back(name);
}

void CommandLine::add_string(const std::string& name, const std::string& default_value, const std::string& help,
                             std::vector<std::string> choices) {
  options_[name] = {Kind::text, default_value, help, std::move(choices)};
  order_.push_back(name);
}

void CommandLine::add_flag(const std::string& name, const std::string& help) {
  options_[name] = {Kind::flag, "false", help, {}};
  order_.push_back(name);
}

bool CommandLine::parse(int argc, char** argv) {
  int i = 1;
  if (i < argc && (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h")) {
    std::fputs(help().c_str(), stdout);
    return false;
  }
  if (i >= argc) throw UsageError("missing subcommand (try --help)");
  subcommand_ = argv[i++];
  bool known = false;
  for (auto& [name, text] : subcommands_) known = known || name == subcommand_;
  if (!known) throw UsageError("unknown subcommand '" + subcommand_ + "' (try --help)");
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (arg.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + arg + "' (flags start with --)");
    std::string name = arg.substr(2), value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = options_.find(name);
    if (it == options_.end()) throw UsageError("unknown flag --" + name + " (try --help)");
    Option& opt = it->second;
    if (opt.kind == Kind::flag) {
      opt.value = "true";
      opt.set = true;
      continue;
    }
    if (value.empty()) {
      if (i + 1 >= argc) throw UsageError("flag --" + name + " needs a value");
      value = argv[++i];
    }
    if (opt.kind == Kind::integer || opt.kind == Kind::real) {
      char* end = nullptr;
      errno = 0;
      const double number = opt.kind == Kind::integer ? static_cast<double>(std::strtoll(value.c_str(), &end, 10))
                                                      : std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || errno == ERANGE || number != number)
        throw UsageError("--" + name + " must be a " + (opt.kind == Kind::integer ? "whole number" : "number") +
                         ", got '" + value + "'");
      if (number < opt.min || number > opt.max) {
        std::ostringstream msg;
        msg << "--" << name << " must be in [";
        if (opt.kind == Kind::integer)  // as whole numbers: "[1, 1048576]", not "[1, 1.04858e+06]"
          msg << static_cast<long long>(opt.min) << ", " << static_cast<long long>(opt.max);
        else
          msg << opt.min << ", " << opt.max;
        msg << "], got " << value;
        throw UsageError(msg.str());
      }
    }
    if (!opt.choices.empty()) {
      bool ok = false;
      std::string list;
      for (auto& c : opt.choices) {
        ok = ok || c == value;
        list += (list.empty() ? "" : ", ") + c;
      }
      if (!ok) throw UsageError("--" + name + " must be one of " + list + ", got '" + value + "'");
    }
    opt.value = value;
    opt.set = true;
  }
  return true;
}

const CommandLine::Option& CommandLine::option(const std::string& name) const {
  auto it = options_.find(name);
  if (it == options_.end()) throw std::logic_error("CommandLine: flag --" + name + " was never declared");
  return it->second;
}

long long CommandLine::get_int(const std::string& name) const { return std::stoll(option(name).value); }
double CommandLine::get_double(const std::string& name) const { return std::stod(option(name).value); }
const std::string& CommandLine::get_string(const std::string& name) const { return option(name).value; }
bool CommandLine::get_flag(const std::string& name) const { return option(name).value == "true"; }
bool CommandLine::was_set(const std::string& name) const { return option(name).set; }

std::string CommandLine::help() const {
  std::ostringstream out;
  out << "usage: " << program_ << " SUBCOMMAND [flags]\n\n" << summary_ << "\n\nsubcommands:\n";
  for (auto& [name, text] : subcommands_) out << "  " << name << std::string(name.size() < 14 ? 14 - name.size() : 1, ' ') << text << "\n";
  out << "\nflags:\n";
  for (const std::string& name : order_) {
    const Option& opt = options_.at(name);
    std::string left = "--" + name + (opt.kind == Kind::flag ? "" : " V");
    out << "  " << left << std::string(left.size() < 20 ? 20 - left.size() : 1, ' ') << opt.help;
    if (opt.kind != Kind::flag) out << " (default: " << (opt.value.empty() ? "none" : opt.value) << ")";
    out << "\n";
  }
  return out.str();
}

std::string CommandLine::describe_values() const {
  std::string out;
  for (const std::string& name : order_) out += (out.empty() ? "--" : " --") + name + " " + options_.at(name).value;
  return out;
}

int run_main(const char* program, int (*body)(int, char**), int argc, char** argv) {
  try {
    return body(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  } catch (const tapegrad::Error& e) {  // bad files, bad shapes, bad values: the input's fault
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: internal error: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace tapegrad::cli
