// planner/search.cpp — see search.hpp.
#include "planner/search.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>

#include "program/yaml_reader.hpp"

namespace scanshard {

std::vector<std::array<Axis, kAxisCount>> placements() {
  // Which axis sits innermost (on neighbouring chips / inside an island); the rest keep the
  // default order. Five orders: each axis gets the fastest links once.
  const std::array<Axis, kAxisCount> base = Plan{}.placement;
  std::vector<std::array<Axis, kAxisCount>> out;
  for (Axis inner : base) {
    std::array<Axis, kAxisCount> order{};
    order[0] = inner;
    std::size_t i = 1;
    for (Axis a : base) if (a != inner) order[i++] = a;
    out.push_back(order);
  }
  return out;
}

namespace {

std::vector<std::int64_t> divisors(std::int64_t n) {
  std::vector<std::int64_t> d;
  for (std::int64_t i = 1; i <= n; ++i) if (n % i == 0) d.push_back(i);
  return d;
}

// All ordered factorisations of n into the five axes, honouring fixed sizes.
void meshes(std::int64_t n, int axis, Mesh& cur, const std::array<std::int64_t, kAxisCount>& fixed, std::vector<Mesh>& out) {
  if (axis == kAxisCount - 1) {
    if (fixed[static_cast<std::size_t>(axis)] && fixed[static_cast<std::size_t>(axis)] != n) return;
    cur.size[static_cast<std::size_t>(axis)] = n;
    out.push_back(cur);
    return;
  }
  for (auto d : divisors(n)) {
    if (fixed[static_cast<std::size_t>(axis)] && fixed[static_cast<std::size_t>(axis)] != d) continue;
    cur.size[static_cast<std::size_t>(axis)] = d;
    meshes(n / d, axis + 1, cur, fixed, out);
  }
}

// The placement restricted to axes of size > 1 decides the network; skip orders equal on those.
bool same_effective_order(const Mesh& mesh, const std::array<Axis, kAxisCount>& a, const std::array<Axis, kAxisCount>& b) {
  std::vector<Axis> x, y;
  for (Axis v : a) if (mesh[v] > 1) x.push_back(v);
  for (Axis v : b) if (mesh[v] > 1) y.push_back(v);
  return x == y;
}

bool has_scan(const ModelSpec& m) { return m.family != Family::mqa; }

// A family: a category (0-4 the mesh axes, 5 remat, 6 scan, 7 ZeRO stage) at one value.
using FamilyKey = std::pair<int, std::int64_t>;

std::string family_name(const FamilyKey& k) {
  if (k.first < kAxisCount) return std::string(to_string(static_cast<Axis>(k.first))) + "=" + std::to_string(k.second);
  if (k.first == 5) return std::string("remat=") + to_string(static_cast<Remat>(k.second));
  if (k.first == 6) return std::string("scan=") + to_string(static_cast<ScanAlgo>(k.second));
  return "zero=" + std::to_string(k.second);
}

// Best plan and reasons per family, for the "why not" lines.
struct FamilyBest {
  bool have = false;
  Candidate best;
  std::string rejected_reason;  // if nothing in the family survived
  double rejected_memory = 0;
};

int family_keys(const Plan& p, std::array<FamilyKey, 8>& out, bool with_choices) {
  int n = 0;
  for (int a = 0; a < kAxisCount; ++a) out[static_cast<std::size_t>(n++)] = {a, p.mesh.size[static_cast<std::size_t>(a)]};
  if (!with_choices) return n;
  out[static_cast<std::size_t>(n++)] = {5, static_cast<std::int64_t>(p.remat)};
  out[static_cast<std::size_t>(n++)] = {6, static_cast<std::int64_t>(p.scan)};
  if (p.mesh[Axis::fsdp] > 1) out[static_cast<std::size_t>(n++)] = {7, p.zero_stage};
  return n;
}

void note_rejection(std::map<FamilyKey, FamilyBest>& fams, const Plan& p, bool with_choices, const std::string& reason, double memory = 0) {
  std::array<FamilyKey, 8> keys;
  const int n = family_keys(p, keys, with_choices);
  for (int i = 0; i < n; ++i) {
    FamilyBest& f = fams[keys[static_cast<std::size_t>(i)]];
    if (f.rejected_reason.empty() || (memory > 0 && memory < f.rejected_memory)) {
      f.rejected_reason = reason;
      f.rejected_memory = memory;
    }
  }
}

std::string gib(double b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GB", b / 1e9);
  return buf;
}

}  // namespace

SearchResult search(const ModelSpec& m, const ClusterSpec& c, const SearchOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::int64_t N = c.devices();
  std::int64_t fixed_product = 1;
  for (int a = 0; a < kAxisCount; ++a) {
    const auto f = o.fixed[static_cast<std::size_t>(a)];
    if (f == 0) continue;
    if (N % f != 0)
      throw ConfigError("--fix " + family_name({a, f}) + ": " + std::to_string(f) + " does not divide the " +
                        std::to_string(N) + " devices of " + c.name);
    fixed_product *= f;
  }
  if (N % fixed_product != 0)
    throw ConfigError("--fix: the fixed axes multiply to " + std::to_string(fixed_product) + ", which does not divide the " +
                      std::to_string(N) + " devices");
  if (o.global_batch < 1 || o.seq_len < 1) throw ConfigError("--global-batch and --seq-len must be positive");

  std::vector<Mesh> all;
  Mesh cur;
  meshes(N, 0, cur, o.fixed, all);
  const Topology topo(c);
  LowerCache cache;
  PriceCache prices;  // compute time per layer lowering; only communication is re-priced per mesh
  const double capacity = c.chip.memory_bytes * o.max_memory_fraction;
  const double total_params = static_cast<double>(count_parameters(m).total);
  SearchResult r;
  std::map<FamilyKey, FamilyBest> fams;
  std::vector<Candidate> priced_ok;

  // Keeps a priced plan where it matters: top k, Pareto front, best of each of its families.
  // The candidate (with its text) is only built when one of them wants it.
  auto keep = [&](const Plan& q, const Estimate& e) {
    std::optional<Candidate> cand;
    auto make = [&]() -> const Candidate& {
      if (!cand) cand = Candidate{q, e.step_seconds, e.tokens_per_s, e.mfu, e.memory.total_bytes, bottleneck_text(e.seconds), e.seconds};
      return *cand;
    };
    std::array<FamilyKey, 8> keys;
    const int n = family_keys(q, keys, true);
    for (int i = 0; i < n; ++i) {
      FamilyBest& f = fams[keys[static_cast<std::size_t>(i)]];
      if (!f.have || e.step_seconds < f.best.step_seconds) { f.best = make(); f.have = true; }
    }
    if (r.top.size() < o.top || e.step_seconds < r.top.back().step_seconds) {
      r.top.push_back(make());
      std::sort(r.top.begin(), r.top.end(), [](const Candidate& a, const Candidate& b) { return a.step_seconds < b.step_seconds; });
      if (r.top.size() > o.top) r.top.pop_back();
    }
    for (const auto& p : r.pareto)
      if (p.step_seconds <= e.step_seconds && p.memory_bytes <= e.memory.total_bytes) return;
    std::erase_if(r.pareto, [&](const Candidate& p) { return e.step_seconds <= p.step_seconds && e.memory.total_bytes <= p.memory_bytes; });
    r.pareto.push_back(make());
  };

  std::size_t done = 0;
  auto last_report = t0;
  for (const Mesh& mesh : all) {
    ++done;
    if (o.progress && std::chrono::steady_clock::now() - last_report > std::chrono::milliseconds(500)) {
      o.progress(static_cast<double>(done) / static_cast<double>(all.size()));
      last_report = std::chrono::steady_clock::now();
    }
    Plan p;
    p.mesh = mesh;
    p.global_batch = o.global_batch;
    p.seq_len = o.seq_len;
    p.micro_batch = 1;
    p.param_dtype = p.act_dtype = o.dtype;
    if (const char* rule = plan_violation(m, p, N)) {
      ++r.illegal;
      ++r.considered;
      note_rejection(fams, p, false, std::string("illegal: ") + rule);
      continue;
    }
    const std::int64_t t = mesh[Axis::tensor], pp = mesh[Axis::pipeline], fs = mesh[Axis::fsdp];
    // Cheap lower bound on per-device state: parameters, gradients and AdamW state of 1/(t·pp)
    // of the model under each ZeRO stage (activations come on top).
    const double share = total_params / static_cast<double>(t * pp);
    std::vector<int> zeros = fs > 1 ? std::vector<int>{1, 2, 3} : std::vector<int>{0};
    std::vector<std::array<Axis, kAxisCount>> orders;
    for (const auto& ord : placements())
      if (std::none_of(orders.begin(), orders.end(), [&](const auto& q) { return same_effective_order(mesh, q, ord); })) orders.push_back(ord);
    std::vector<Network> nets;  // one per distinct placement; the lowering does not depend on it
    for (const auto& ord : orders) nets.emplace_back(topo, c, mesh, ord);
    for (int zero : zeros) {
      const double states = state_bytes(share, o.dtype, zero, static_cast<double>(fs)).total();
      for (auto mb : divisors(p.local_batch())) {
        for (Remat remat : {Remat::none, Remat::selective, Remat::block}) {
          for (ScanAlgo scan : {ScanAlgo::sequential, ScanAlgo::chunked, ScanAlgo::associative, ScanAlgo::naive}) {
            if (!has_scan(m) && scan != ScanAlgo::sequential) continue;
            for (CarryScheme carry : {CarryScheme::ring, CarryScheme::allgather}) {
              if (mesh[Axis::sequence] == 1 && carry != CarryScheme::ring) continue;
              Plan q = p;
              q.zero_stage = zero;
              q.micro_batch = mb;
              q.remat = remat;
              q.scan = scan;
              q.carry = carry;
              const int variants = (pp > 1 ? 2 : 1) * (p.replicas() > 1 ? 2 : 1) * static_cast<int>(nets.size());
              r.considered += variants;
              if (states > capacity) {
                r.pruned += variants;
                note_rejection(fams, q, true, "parameters, gradients and optimizer state need " + gib(states) + " > " + gib(capacity), states);
                continue;
              }
              const auto stages = stage_summaries(m, q, &cache);
              for (std::size_t k = 0; k < nets.size(); ++k) {
                const Network& net = nets[k];
                q.placement = orders[k];
                const auto passes = price_passes(stages, c, net, q.act_dtype, &prices);
                for (Schedule sched : {Schedule::one_f_one_b, Schedule::gpipe}) {
                  if (pp == 1 && sched != Schedule::one_f_one_b) continue;
                  for (bool overlap : {true, false}) {
                    if (p.replicas() == 1 && !overlap) continue;
                    q.schedule = sched;
                    q.overlap = overlap;
                    const Estimate e = finish_estimate(passes, stages, q, c, net);
                    ++r.priced;
                    if (e.memory.total_bytes > capacity) {
                      ++r.over_memory;
                      note_rejection(fams, q, true,
                                     "needs " + gib(e.memory.total_bytes) + " per device (activations " + gib(e.memory.activations_bytes) +
                                         ") > " + gib(capacity),
                                     e.memory.total_bytes);
                      continue;
                    }
                    keep(q, e);
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  std::sort(r.pareto.begin(), r.pareto.end(), [](const Candidate& a, const Candidate& b) { return a.memory_bytes < b.memory_bytes; });

  // Why not: every family whose best plan is not the winner (map order: by category, then value).
  const Candidate* best = r.top.empty() ? nullptr : &r.top.front();
  for (const auto& [key, f] : fams) {
    const std::string name = family_name(key);
    if (!f.have) {
      r.why_not.push_back(name + ": no plan survived: " + f.rejected_reason);
      continue;
    }
    if (!best || f.best.step_seconds <= best->step_seconds) continue;  // the winner's own families
    const double ratio = f.best.step_seconds / best->step_seconds;
    int grew = 0;  // the bucket that grew the most against the winner
    double most = -1;
    for (int b = 0; b < kBucketCount; ++b) {
      const double d = f.best.seconds[b] - best->seconds[b];
      if (d > most) { most = d; grew = b; }
    }
    char line[256];
    if (ratio < 1.01)
      std::snprintf(line, sizeof line, "%s: within 1 %% of the best (%.3fx)", name.c_str(), ratio);
    else
      std::snprintf(line, sizeof line, "%s: best is %.2fx slower; %s is %.0f %% of its step", name.c_str(), ratio,
                    to_string(static_cast<Bucket>(grew)), 100 * f.best.seconds[grew] / f.best.step_seconds);
    r.why_not.push_back(line);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace scanshard
