// cli/published_command.hpp — `scanshard validate --published`: the published-measurement suite
// (reports/published.hpp) priced and printed. For: validate_command.cpp.
#pragma once
#include <string>
#include <vector>

namespace scanshard {
// `suites` empty: the built-in suite (configs/published/). `out_dir` empty: print only.
void run_published(const std::vector<std::string>& suites, const std::string& out_dir);
}  // namespace scanshard
