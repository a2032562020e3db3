// program/param_layout.cpp — see param_layout.hpp.
#include "program/param_layout.hpp"

#include <cmath>
#include <random>
#include <stdexcept>

namespace scanshard {

Layout::Layout(const ModelSpec& m) : tensors(parameter_tensors(m)) {
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    offset.push_back(total);
    total += tensors[i].count();
    index[tensors[i].block + "/" + tensors[i].name] = i;
  }
}

std::int64_t Layout::off(const std::string& block, const std::string& name) const {
  auto it = index.find(block + "/" + name);
  if (it == index.end()) throw std::runtime_error("no parameter " + block + "/" + name);
  return offset[it->second];
}

std::vector<float> init_params(const Layout& lay, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> nd(0, 1);
  std::uniform_real_distribution<double> ua(0.9, 0.999);
  std::vector<float> p(static_cast<std::size_t>(lay.total));
  for (std::size_t i = 0; i < lay.tensors.size(); ++i) {
    const auto& t = lay.tensors[i];
    float* d = p.data() + lay.offset[i];
    const bool lambda = t.name == "rec.lambda";
    const double sd = t.shape.size() >= 2 ? 1.0 / std::sqrt(double(t.shape[t.shape.size() - 2])) : 0.1;
    for (std::int64_t j = 0; j < t.count(); ++j)
      d[j] = lambda ? float(std::log(std::expm1(-std::log(ua(g))))) : float(sd * nd(g));
  }
  return p;
}

}  // namespace scanshard
