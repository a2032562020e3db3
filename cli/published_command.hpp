// cli/published_command.hpp — `scanshard validate --published`: the published-measurement suite
// (reports/published.hpp) priced and printed. For: validate_command.cpp.
#pragma once
#include <string>
#include <vector>

namespace scanshard {
// `suites` empty: the built-in suite (configs/published/). `out_dir` empty: print only.
// `fit_chip` non-empty: also fit that chip's `fit_keys` (reports/chip_fit.hpp; empty: all of
// them) to the suite's rows on it and report the in-sample and leave-one-source-out errors.
void run_published(const std::vector<std::string>& suites, const std::string& out_dir, const std::string& fit_chip = "",
                   const std::vector<std::string>& fit_keys = {});
}  // namespace scanshard
