// planner/search.cpp — see search.hpp.
//
// Two paths, one answer. The exhaustive path (SearchOptions::prune = false) prices every plan in
// enumeration order. The pruned path (the default):
//  1. walks the same enumeration — illegal meshes and the cheap state-memory bound as before — and
//     gives every other configuration (mesh, ZeRO stage, micro-batch, remat, scan, carry) lower
//     bounds on step time and memory per device without lowering it, from Records (one lowering per
//     tensor × sequence × micro-batch × remat × scan × carry: compute of each layer kind, the
//     embedding, head and pipeline sends, their collectives as lines in the bytes moved, cost.hpp)
//     and Anchors (one lowering per mesh and ZeRO stage: gradient sync, optimizer, ZeRO-3 gathers,
//     parameters per stage), priced on each placement's network;
//  2. visits configurations cheapest bound first and skips every plan whose bounds prove that it
//     can enter neither the top k, nor the best of any of its families (the why-not lines), nor
//     the Pareto front; lowers and prices the rest with exactly the exhaustive path's calls;
//  3. breaks every tie by enumeration order (Collector), so the visiting order does not matter.
// The bounds rely on what lower.cpp emits: a layer's steps depend on its layer_key only, and the
// ZeRO-3 gathers and the ZeRO-2/3 gradient reduce-scatters are its only collectives on the fsdp axis; the embedding, head and pipeline
// send/receive steps depend on neither the pipeline size nor remat, scan or carry; a stage's
// step-end work (but the gradient accumulation, bounded per micro-batch) and parameters depend on
// neither micro-batch, remat, scan nor carry. A bound found
// above an exact price makes the search fall back to the exhaustive path, and
// tests/unit/test_planner.cpp holds the two paths equal on random cases.
#include "planner/search.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <deque>
#include <map>
#include <new>
#include <numeric>
#include <optional>
#include <span>
#include <string_view>
#include <tuple>
#include <unordered_map>

#include <sys/mman.h>

#include "program/yaml_reader.hpp"
#include "program/inference.hpp"
#include "sim/cost.hpp"
#include "sim/inference.hpp"

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

constexpr double kInf = std::numeric_limits<double>::infinity();
// Bounds add the same terms in another order (and the collectives as lines): allow for rounding.
constexpr double kBoundSlack = 1 - 1e-9;

std::vector<std::int64_t> divisors(std::int64_t n) {  // ascending
  std::vector<std::int64_t> d, large;
  for (std::int64_t i = 1; i <= n / i; ++i)
    if (n % i == 0) {
      d.push_back(i);
      if (i != n / i) large.push_back(n / i);
    }
  d.insert(d.end(), large.rbegin(), large.rend());
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

std::vector<std::array<Axis, kAxisCount>> distinct_orders(const Mesh& mesh) {
  std::vector<std::array<Axis, kAxisCount>> orders;
  for (const auto& ord : placements())
    if (std::none_of(orders.begin(), orders.end(), [&](const auto& q) { return same_effective_order(mesh, q, ord); })) orders.push_back(ord);
  return orders;
}

// The enumeration order of the per-plan choices (also the tie-break order).
constexpr std::array<Remat, 4> kRemats = {Remat::none, Remat::selective, Remat::block, Remat::elementwise};
constexpr std::array<ScanAlgo, 4> kScans = {ScanAlgo::sequential, ScanAlgo::chunked, ScanAlgo::associative, ScanAlgo::naive};
constexpr std::array<CarryScheme, 2> kCarries = {CarryScheme::ring, CarryScheme::allgather};
constexpr std::array<Schedule, 2> kSchedules = {Schedule::one_f_one_b, Schedule::gpipe};
constexpr std::array<bool, 2> kOverlaps = {true, false};
constexpr std::array<TensorComm, 2> kTensorComms = {TensorComm::allreduce, TensorComm::rs_ag};
constexpr std::array<std::int64_t, 3> kVirtualStages = {1, 2, 4};  // interleaved 1F1B model chunks per stage

// Tensor-parallel communication and interleaving worth enumerating: rs_ag only with tensor > 1
// (and the tokens dividing), chunks only with a pipeline they divide into the depth and that
// divides the micro-batches (check_plan).
bool tensor_comm_applies(const ModelSpec& m, const Plan& q, TensorComm tc) {
  (void)m;
  if (tc == TensorComm::allreduce) return true;
  const std::int64_t t = q.mesh[Axis::tensor];
  return t > 1 && (q.micro_batch * q.local_tokens()) % t == 0;
}
// selective recomputes attention cores only: without attention layers it is remat none.
bool remat_applies(const ModelSpec& m, Remat r) {
  if (r != Remat::selective) return true;
  for (std::int64_t l = 0; l < std::min<std::int64_t>(3, m.depth); ++l)
    if (temporal_kind(m, l) == Temporal::local_attention || temporal_kind(m, l) == Temporal::global_attention) return true;
  return false;
}
bool virtual_stages_apply(const ModelSpec& m, const Plan& q, std::int64_t v) {
  const std::int64_t pp = q.mesh[Axis::pipeline];
  return v == 1 || (pp > 1 && pp * v <= m.depth && q.micro_batches() % pp == 0);  // check_plan's interleaving rules
}
// Schedules for a chunk count: GPipe cannot interleave.
std::size_t schedules_for(std::int64_t pp, std::int64_t v) { return pp > 1 && v == 1 ? 2 : 1; }

// One per-plan choice of a mesh, as indices into the lists above (zero_i into zero_stages(fsdp),
// mb_i into the divisors of the local batch).
struct Choice {
  std::uint16_t mb_i = 0;
  std::uint8_t zero_i = 0, remat_i = 0, scan_i = 0, carry_i = 0, tc_i = 0, v_i = 0;
  // The choice without its ZeRO stage, dense in [0, mbs · 192): what a lowering depends on besides the mesh.
  std::size_t sub() const {
    return ((((std::size_t{mb_i} * kRemats.size() + remat_i) * kScans.size() + scan_i) * kCarries.size() + carry_i) *
                kTensorComms.size() + tc_i) * kVirtualStages.size() + v_i;
  }
};

// A plan's position in the exhaustive enumeration: mesh, ZeRO, micro-batch, remat, scan, carry,
// tensor communication, chunks per stage, placement, schedule, overlap — most significant first.
std::uint64_t plan_index(std::size_t mesh, const Choice& ch, std::size_t net, std::size_t sched_i, std::size_t overlap_i) {
  std::uint64_t x = mesh;
  x = (x << 2) | ch.zero_i;
  x = (x << 14) | ch.mb_i;
  x = (x << 2) | ch.remat_i;
  x = (x << 2) | ch.scan_i;
  x = (x << 1) | ch.carry_i;
  x = (x << 1) | ch.tc_i;
  x = (x << 2) | ch.v_i;
  x = (x << 3) | net;
  x = (x << 1) | sched_i;
  x = (x << 1) | overlap_i;
  return x;
}
std::uint64_t plan_index(std::size_t mesh) { return plan_index(mesh, Choice{}, 0, 0, 0); }

// Every applicable per-plan choice of a legal mesh's plan p, in enumeration order:
// fn(const Plan& q, const Choice&) with q = p plus the choice (placement, schedule, overlap left
// for the caller). Both search paths enumerate through here.
template <class Fn>
void for_each_choice(const ModelSpec& m, const Plan& p, const std::vector<int>& zeros, const std::vector<std::int64_t>& mbs, Fn&& fn) {
  const Mesh& mesh = p.mesh;
  const bool scans = m.has_scan(), carries = mesh[Axis::sequence] > 1;
  Plan q = p;
  Choice ch;
  for (std::size_t zi = 0; zi < zeros.size(); ++zi) {
    q.zero_stage = zeros[zi];
    ch.zero_i = static_cast<std::uint8_t>(zi);
    for (std::size_t bi = 0; bi < mbs.size(); ++bi) {
      q.micro_batch = mbs[bi];
      ch.mb_i = static_cast<std::uint16_t>(bi);
      for (std::size_t ri = 0; ri < kRemats.size(); ++ri) {
        if (!remat_applies(m, kRemats[ri])) continue;
        q.remat = kRemats[ri];
        ch.remat_i = static_cast<std::uint8_t>(ri);
        for (std::size_t si = 0; si < (scans ? kScans.size() : 1); ++si) {
          q.scan = kScans[si];
          ch.scan_i = static_cast<std::uint8_t>(si);
          for (std::size_t ci = 0; ci < (carries ? kCarries.size() : 1); ++ci) {
            q.carry = kCarries[ci];
            ch.carry_i = static_cast<std::uint8_t>(ci);
            for (std::size_t ti = 0; ti < kTensorComms.size(); ++ti) {
              if (!tensor_comm_applies(m, q, kTensorComms[ti])) continue;
              q.tensor_comm = kTensorComms[ti];
              ch.tc_i = static_cast<std::uint8_t>(ti);
              for (std::size_t vi = 0; vi < kVirtualStages.size(); ++vi) {
                if (!virtual_stages_apply(m, q, kVirtualStages[vi])) continue;
                q.virtual_stages = kVirtualStages[vi];
                ch.v_i = static_cast<std::uint8_t>(vi);
                fn(static_cast<const Plan&>(q), static_cast<const Choice&>(ch));
              }
            }
          }
        }
      }
    }
  }
}

// A family: a category (0-4 the mesh axes, 5 remat, 6 scan, 7 ZeRO stage, 8 the serving batch
// per replica) at one value.
using FamilyKey = std::pair<int, std::int64_t>;
constexpr int kBatchFamily = 8;

std::string family_name(const FamilyKey& k) {
  if (k.first < kAxisCount) return std::string(to_string(static_cast<Axis>(k.first))) + "=" + std::to_string(k.second);
  if (k.first == 5) return std::string("remat=") + to_string(static_cast<Remat>(k.second));
  if (k.first == 6) return std::string("scan=") + to_string(static_cast<ScanAlgo>(k.second));
  if (k.first == kBatchFamily) return "batch=" + std::to_string(k.second);
  return "zero=" + std::to_string(k.second);
}

std::string gib(double b) {  // the unit `simulate` and the plan tables print
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

struct FamIds {
  std::array<int, 8> id{};
  int n = 0;
};

// A memory rejection that explains a family if none of its plans survives. Replayed in
// enumeration order at the end; the reason text is only built if it is used.
// over_latency (serving): `memory` holds the plan's per-token latency in seconds and
// `activations` the budget — a family's reason is its smallest note, so a latency miss (seconds)
// ranks before any memory miss (bytes): the family fits but is too slow.
struct Note {
  enum Kind : std::uint8_t { states, over_memory, over_latency };
  std::uint64_t index = 0;
  FamIds fams;
  Kind kind = states;
  double memory = 0, activations = 0;
};

// What the search returns, fed plan by plan in any order: top k, Pareto front, best plan and
// rejection reasons per family. Every tie is broken by the plan's enumeration index, so the result
// equals feeding the plans in enumeration order, where ties keep the first plan (for the top list
// with k ≤ 15 exactly the order the std::sort used before gave; beyond, its order of exact ties
// was an accident of introsort).
class Collector {
 public:
  Collector(const SearchOptions& o, double capacity) : o_(o), capacity_(capacity) {}

  int family(const FamilyKey& k) {
    auto [it, fresh] = ids_.try_emplace(k, static_cast<int>(fams_.size()));
    if (fresh) {
      fams_.emplace_back();
      fams_.back().key = k;
    }
    return it->second;
  }
  FamIds families(const Plan& p, bool with_choices) {
    FamIds f;
    for (int a = 0; a < kAxisCount; ++a) f.id[static_cast<std::size_t>(f.n++)] = family({a, p.mesh.size[static_cast<std::size_t>(a)]});
    if (!with_choices) return f;
    f.id[static_cast<std::size_t>(f.n++)] = family({5, static_cast<std::int64_t>(p.remat)});
    f.id[static_cast<std::size_t>(f.n++)] = family({6, static_cast<std::int64_t>(p.scan)});
    if (p.mesh[Axis::fsdp] > 1) f.id[static_cast<std::size_t>(f.n++)] = family({7, p.zero_stage});
    return f;
  }

  // A plan of these families slower than this changes neither the top k nor any family's best.
  double threshold(const FamIds& f) const {
    double t = -kInf;
    if (o_.top > 0) {
      if (top_.size() < o_.top) return kInf;
      t = top_.back().c.step_seconds;
    }
    for (int i = 0; i < f.n; ++i) {
      const Family& F = fams_[static_cast<std::size_t>(f.id[static_cast<std::size_t>(i)])];
      if (!F.have) return kInf;
      t = std::max(t, F.best_step);
    }
    return t;
  }
  // True if no plan with step time above `step_bound` and memory at least `memory_bound` can matter.
  bool skippable(const FamIds& f, double step_bound, double memory_bound) const {
    if (!(step_bound > 0) || step_bound < threshold(f)) return false;
    for (const auto& p : pareto_)
      if (p.c.step_seconds <= step_bound && p.c.memory_bytes <= memory_bound) return true;
    return false;
  }

  // latency, ttft: a serving plan's per-token latency and time to first token (else 0).
  void keep(const Plan& q, const Estimate& e, std::uint64_t index, const FamIds& f, double latency = 0, double ttft = 0) {
    const double step = e.step_seconds, mem = e.memory.total_bytes;
    std::optional<Candidate> cand;
    auto make = [&]() -> const Candidate& {
      if (!cand) cand = Candidate{q, e.step_seconds, e.tokens_per_s, e.mfu, e.memory.total_bytes, bottleneck_text(e.seconds), e.seconds, latency, ttft};
      return *cand;
    };
    for (int i = 0; i < f.n; ++i) {
      Family& F = fams_[static_cast<std::size_t>(f.id[static_cast<std::size_t>(i)])];
      F.touched = true;
      if (!F.have || before(step, index, F.best_step, F.best_index)) {
        F.best = make();
        F.best_step = step;
        F.best_index = index;
        F.have = true;
      }
    }
    if (o_.top > 0 && (top_.size() < o_.top || before(step, index, top_.back().c.step_seconds, top_.back().index))) {
      const auto at = std::find_if(top_.begin(), top_.end(), [&](const Kept& k) { return before(step, index, k.c.step_seconds, k.index); });
      top_.insert(at, Kept{make(), index});
      if (top_.size() > o_.top) top_.pop_back();
    }
    // Pareto front: the plans no other plan beats in both step time and memory (an exact tie: the
    // first in enumeration order).
    auto beats = [](double s1, double m1, std::uint64_t i1, double s2, double m2, std::uint64_t i2) {
      return s1 <= s2 && m1 <= m2 && (s1 < s2 || m1 < m2 || i1 < i2);
    };
    for (const auto& p : pareto_)
      if (beats(p.c.step_seconds, p.c.memory_bytes, p.index, step, mem, index)) return;
    std::erase_if(pareto_, [&](const Kept& p) { return beats(step, mem, index, p.c.step_seconds, p.c.memory_bytes, p.index); });
    pareto_.push_back(Kept{make(), index});
  }

  void note(const Note& n) { notes_.push_back(n); }

  // A mesh that breaks `broken` (every failing rule, plan_violations): tallied per family and
  // overall, so that the explanation can name the rule that binds — the one that fails on every
  // mesh of the family, which changing anything else would not fix.
  void illegal(std::uint64_t index, const FamIds& f, const std::vector<RuleFailure>& broken) {
    auto tally = [&](Tally& t) {
      ++t.illegal;
      for (std::size_t i = 0; i < broken.size(); ++i) {
        auto& r = t.rules[broken[i].rule];
        if (r.count++ == 0 || index < r.first_index) {
          r.first_index = index;
          r.position = i;
          r.detail = broken[i].detail;
        }
      }
    };
    tally(all_);
    for (int i = 0; i < f.n; ++i) {
      Family& F = fams_[static_cast<std::size_t>(f.id[static_cast<std::size_t>(i)])];
      F.touched = true;
      tally(F.tally);
    }
  }
  // A mesh that passes every rule (its plans may still fail on memory).
  void legal(const FamIds& f) {
    ++all_.legal;
    for (int i = 0; i < f.n; ++i) ++fams_[static_cast<std::size_t>(f.id[static_cast<std::size_t>(i)])].tally.legal;
  }

  void finish(SearchResult& r) {
    // Memory reasons count only for families without a surviving plan: the smallest need.
    std::stable_sort(notes_.begin(), notes_.end(), [](const Note& a, const Note& b) { return a.index < b.index; });
    for (const Note& n : notes_) {
      for (int i = 0; i < n.fams.n; ++i) {
        Family& F = fams_[static_cast<std::size_t>(n.fams.id[static_cast<std::size_t>(i)])];
        F.touched = true;
        if (F.have) continue;
        if (F.reason.empty() || n.memory < F.reason_memory) {
          F.reason = reason(n);
          F.reason_memory = n.memory;
        }
      }
    }
    // A rule no mesh at all passes (the model's position table, say) is the whole answer.
    const char* blocking = all_.legal == 0 ? binding_rule(all_) : nullptr;
    if (blocking) r.blocking = "'" + std::string(blocking) + "': " + all_.rules.at(blocking).detail;
    for (auto& k : top_) r.top.push_back(std::move(k.c));
    for (auto& k : pareto_) r.pareto.push_back(std::move(k.c));
    std::sort(r.pareto.begin(), r.pareto.end(), [](const Candidate& a, const Candidate& b) { return a.memory_bytes < b.memory_bytes; });

    // Why not: every family whose best plan is not the winner (by category, then value).
    // (with top = 0 the Pareto front's fastest plan: the fastest of all)
    const Candidate* best = !r.top.empty() ? &r.top.front()
                            : r.pareto.empty() ? nullptr
                                               : &*std::min_element(r.pareto.begin(), r.pareto.end(), [](const Candidate& a, const Candidate& b) {
                                                   return a.step_seconds < b.step_seconds;
                                                 });
    for (const auto& [key, id] : ids_) {
      const Family& f = fams_[static_cast<std::size_t>(id)];
      if (!f.touched) continue;
      const std::string name = family_name(key);
      if (!f.have) {
        if (blocking) continue;  // the same rule for every family: said once
        r.why_not.push_back(name + ": no plan survived: " + family_reason(f));
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
  }

 private:
  struct Kept {
    Candidate c;
    std::uint64_t index = 0;
  };
  struct RuleTally {
    std::int64_t count = 0;
    std::uint64_t first_index = 0;
    std::size_t position = 0;  // among that mesh's broken rules (check order)
    std::string detail;        // of the first mesh (in enumeration order) it rejected
  };
  struct Tally {
    std::int64_t legal = 0, illegal = 0;  // meshes
    std::map<std::string_view, RuleTally> rules;
  };
  struct Family {
    FamilyKey key;
    Tally tally;
    bool touched = false, have = false;
    double best_step = 0;
    std::uint64_t best_index = 0;
    Candidate best;
    std::string reason;
    double reason_memory = 0;
  };
  static bool before(double s1, std::uint64_t i1, double s2, std::uint64_t i2) { return s1 < s2 || (s1 == s2 && i1 < i2); }

  // The first rule (in check order) that rejects every illegal mesh of `t`, if one does and no mesh
  // is legal; nullptr otherwise.
  static const char* binding_rule(const Tally& t) {
    if (t.illegal == 0 || t.legal > 0) return nullptr;
    const char* first = nullptr;
    const RuleTally* best = nullptr;
    for (const auto& [rule, tally] : t.rules)
      if (tally.count == t.illegal &&
          (!best || std::tie(tally.first_index, tally.position) < std::tie(best->first_index, best->position))) {
        first = rule.data();  // the rule's name literal (plan_violations)
        best = &tally;
      }
    return first;
  }

  // Why a family has no plan: memory if any of its meshes is legal (legality does not bind
  // then), else the rule that rejects all its meshes, else the rules that reject the most.
  std::string family_reason(const Family& f) const {
    const Tally& t = f.tally;
    if (t.legal > 0 || t.illegal == 0) {
      std::string s = f.reason.empty() ? "no plan of it was priced" : f.reason;
      if (t.illegal > 0) s += " (" + std::to_string(t.illegal) + " of its " + std::to_string(t.legal + t.illegal) + " meshes are also illegal)";
      return s;
    }
    if (const char* rule = binding_rule(t))
      return "illegal: " + std::string(rule) + " (" + t.rules.at(rule).detail + ")" +
             (t.illegal > 1 ? ", on all " + std::to_string(t.illegal) + " of its meshes" : "");
    std::vector<std::pair<std::int64_t, std::string_view>> by_count;
    for (const auto& [rule, tally] : t.rules) by_count.emplace_back(-tally.count, rule);
    std::sort(by_count.begin(), by_count.end());
    std::string s = "illegal: no one rule fails on all its " + std::to_string(t.illegal) + " meshes:";
    for (std::size_t i = 0; i < by_count.size() && i < 2; ++i)
      s += std::string(i ? ";" : "") + " " + std::string(by_count[i].second) + " on " + std::to_string(-by_count[i].first);
    return s;
  }

  std::string reason(const Note& n) const {
    switch (n.kind) {
      case Note::states: return "parameters, gradients and optimizer state need " + gib(n.memory) + " > " + gib(capacity_);
      case Note::over_memory:
        return "needs " + gib(n.memory) + " per device (activations " + gib(n.activations) + ") > " + gib(capacity_);
      case Note::over_latency: {
        char buf[128];
        std::snprintf(buf, sizeof buf, "its fastest per-token latency %.3f ms is over the budget %.3f ms", 1e3 * n.memory, 1e3 * n.activations);
        return buf;
      }
    }
    return {};
  }

  const SearchOptions& o_;
  double capacity_;
  std::vector<Kept> top_, pareto_;
  std::vector<Family> fams_;
  std::map<FamilyKey, int> ids_;
  std::vector<Note> notes_;
  Tally all_;
};

// Calls o.progress once a search has run for a second, then every half second.
class Progress {
 public:
  explicit Progress(const SearchOptions& o) : o_(o), next_(std::chrono::steady_clock::now() + std::chrono::seconds(1)) {}
  void operator()(double fraction) {
    if (!o_.progress) return;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return;
    o_.progress(fraction);
    next_ = now + std::chrono::milliseconds(500);
  }

 private:
  const SearchOptions& o_;
  std::chrono::steady_clock::time_point next_;
};

// The plan every search starts from: the mesh, batch, sequence and dtypes.
Plan base_plan(const Mesh& mesh, const SearchOptions& o) {
  Plan p;
  p.mesh = mesh;
  p.global_batch = o.global_batch;
  p.seq_len = o.seq_len;
  p.micro_batch = 1;
  p.param_dtype = p.act_dtype = o.dtype;
  return p;
}

std::vector<int> zero_stages(std::int64_t fsdp) { return fsdp > 1 ? std::vector<int>{1, 2, 3} : std::vector<int>{0}; }

// Cheap lower bound on per-device state: parameters, gradients and AdamW state of 1/(t·pp) of the
// model under a ZeRO stage (activations come on top).
double state_bound(double total_params, const Mesh& mesh, DType dtype, int zero) {
  const double share = total_params / static_cast<double>(mesh[Axis::tensor] * mesh[Axis::pipeline]);
  return state_bytes(share, dtype, zero, static_cast<double>(mesh[Axis::fsdp])).total();
}

// ---- exhaustive path ---------------------------------------------------------------------------

void search_exhaustive(const ModelSpec& m, const ClusterSpec& c, const SearchOptions& o, const std::vector<Mesh>& all,
                       SearchResult& r) {
  const std::int64_t N = c.devices();
  const Topology topo(c);
  LowerCache cache;
  PriceCache prices;  // compute time per layer lowering; only communication is re-priced per mesh
  const double capacity = c.chip.memory_bytes * o.max_memory_fraction;
  const double total_params = static_cast<double>(count_parameters(m).total);
  Collector col(o, capacity);
  Progress progress(o);

  for (std::size_t mi = 0; mi < all.size(); ++mi) {
    progress(static_cast<double>(mi) / static_cast<double>(all.size()));
    const Mesh& mesh = all[mi];
    const Plan p = base_plan(mesh, o);
    if (plan_violation(m, p, N)) {
      ++r.illegal;
      ++r.considered;
      col.illegal(plan_index(mi), col.families(p, false), plan_violations(m, p, N));
      continue;
    }
    col.legal(col.families(p, false));
    const std::int64_t pp = mesh[Axis::pipeline];
    const auto orders = distinct_orders(mesh);
    std::vector<Network> nets;  // one per distinct placement; the lowering does not depend on it
    for (const auto& ord : orders) nets.emplace_back(topo, c, mesh, ord);
    const auto zeros = zero_stages(mesh[Axis::fsdp]);
    std::vector<double> states;
    for (int z : zeros) states.push_back(state_bound(total_params, mesh, o.dtype, z));
    for_each_choice(m, p, zeros, divisors(p.local_batch()), [&](const Plan& q0, const Choice& ch) {
      Plan q = q0;
      const FamIds fams = col.families(q, true);
      const std::size_t scheds = schedules_for(pp, q.virtual_stages);
      const int variants = static_cast<int>(scheds) * (p.replicas() > 1 ? 2 : 1) * static_cast<int>(nets.size());
      r.considered += variants;
      if (states[ch.zero_i] > capacity) {
        r.pruned += variants;
        col.note({plan_index(mi, ch, 0, 0, 0), fams, Note::states, states[ch.zero_i]});
        return;
      }
      const auto stages = stage_summaries(m, q, &cache);
      for (std::size_t k = 0; k < nets.size(); ++k) {
        q.placement = orders[k];
        const auto passes = price_passes(stages, c, nets[k], q.act_dtype, &prices);
        for (std::size_t sc = 0; sc < scheds; ++sc) {
          for (std::size_t ov = 0; ov < kOverlaps.size(); ++ov) {
            if (p.replicas() == 1 && !kOverlaps[ov]) continue;
            q.schedule = kSchedules[sc];
            q.overlap = kOverlaps[ov];
            const Estimate e = finish_estimate(passes, stages, q, c, nets[k]);
            const std::uint64_t index = plan_index(mi, ch, k, sc, ov);
            if (e.memory.total_bytes > capacity) {
              ++r.over_memory;
              col.note({index, fams, Note::over_memory, e.memory.total_bytes, e.memory.activations_bytes});
              continue;
            }
            ++r.priced;
            col.keep(q, e, index, fams);
          }
        }
      }
    });
  }
  col.finish(r);
}

// ---- pruned path -------------------------------------------------------------------------------

// Collective totals of some steps on one mesh axis: all-gather equivalents (bytes, count; an
// all-reduce is two) and p2p hops (hops·bytes, hops).
struct CommTotal {
  Axis axis = Axis::data;
  bool overlappable = false;
  double gather_bytes = 0, gathers = 0, hop_bytes = 0, hops = 0;
};

// Every mesh axis's collective and p2p price as lines (cost.hpp) on one network.
struct NetLines {
  std::array<CommLine, kAxisCount> gather, hop;
};

// Compute seconds and collective totals of some steps, [forward, backward].
// Also the largest scan state and communication buffer (memory_of in simulate.cpp).
struct Part {
  std::array<double, 2> compute{};
  std::array<std::vector<CommTotal>, 2> comm;
  double max_state = 0, max_comm = 0;
  void add(int dir, const std::vector<Step>& steps, const ClusterSpec& c, DType dtype, bool only_fsdp = false) {
    const auto d = static_cast<std::size_t>(dir);
    for (const auto& s : steps) {
      if (s.kind == StepKind::compute) {
        if (!only_fsdp) {
          compute[d] += compute_seconds(s, c.chip, dtype);
          max_state = std::max(max_state, s.state_bytes);
        }
        continue;
      }
      if (only_fsdp && s.axis != Axis::fsdp) continue;
      max_comm = std::max(max_comm, s.comm_bytes);
      auto& list = comm[d];
      auto it = std::find_if(list.begin(), list.end(), [&](const CommTotal& t) { return t.axis == s.axis && t.overlappable == s.overlappable; });
      if (it == list.end()) it = list.insert(list.end(), CommTotal{s.axis, s.overlappable});
      if (s.kind == StepKind::p2p) {
        it->hop_bytes += s.hops * s.comm_bytes;
        it->hops += s.hops;
      } else {
        const double times = s.comm == CommKind::all_reduce ? 2 : 1;
        it->gather_bytes += times * s.comm_bytes;
        it->gathers += times;
      }
    }
  }
};
// A Part on one network: per direction compute, exposed and overlappable communication.
struct Priced {
  std::array<double, 2> compute{}, exposed{}, hidden{};
};
Priced price(const Part& p, const NetLines& l) {
  Priced out;
  out.compute = p.compute;
  for (std::size_t d = 0; d < 2; ++d)
    for (const auto& t : p.comm[d]) {
      const auto a = static_cast<std::size_t>(t.axis);
      double s = 0;
      if (t.gathers > 0) s += l.gather[a].fixed * t.gathers + l.gather[a].per_byte * t.gather_bytes;
      if (t.hops > 0) s += l.hop[a].fixed * t.hops + l.hop[a].per_byte * t.hop_bytes;
      (t.overlappable ? out.hidden : out.exposed)[d] += s;
    }
  return out;
}

constexpr int kKinds = 5;  // Temporal
constexpr std::size_t kMaxNets = 5;

// What the bounds of every configuration with one (tensor, sequence, micro-batch, remat, scan,
// carry) need, from lowerings on a tensor × sequence mesh (pp = 1, and pp = 2 for the pipeline
// sends), priced once. Layer lowerings depend on nothing else (lower.cpp's layer_key; ZeRO-3 only
// adds its gathers, taken from the Anchor); the embedding, head and pipeline sends are the same on
// every first, last and middle stage.
// Parts: the layer kinds (Temporal), then the first stage's pre (embedding), the last stage's post
// (head and loss), and the pipeline receive (pre) and send (post) of the other stages.
constexpr std::size_t kEmbed = kKinds, kHead = kKinds + 1, kReceive = kKinds + 2, kSend = kKinds + 3, kParts = kKinds + 4;
struct Record {
  std::vector<Temporal> kinds;  // present in the model
  std::array<Part, kParts> part;
  std::array<double, kKinds> saved{}, params{};
  double head_saved = 0;  // activations the last stage keeps besides its layers' (the logits)
  // Every part's collective totals in one array, for pricing on many networks.
  struct Flat {
    std::uint8_t part, dir;
    CommTotal total;
  };
  std::vector<Flat> flat;
  void flatten() {  // the per-part lists are not needed afterwards: free them
    for (std::size_t i = 0; i < kParts; ++i)
      for (std::uint8_t d = 0; d < 2; ++d)
        for (const auto& t : part[i].comm[d]) flat.push_back({static_cast<std::uint8_t>(i), d, t});
    flat.shrink_to_fit();
    for (auto& p : part)
      for (auto& l : p.comm) std::vector<CommTotal>().swap(l);
  }
};

// The pipeline sends and receives of a (tensor, sequence, micro-batch): the same for every remat,
// scan and carry (lower_stage emits them for the stage boundary, whatever the layers are).
struct PipelineKey {
  std::int64_t t, sp, mb;
  int tc;  // rs_ag sends n/t tokens between stages
  bool operator<(const PipelineKey& o) const { return std::tie(t, sp, mb, tc) < std::tie(o.t, o.sp, o.mb, o.tc); }
};

struct RecordKey {
  std::int64_t t, sp, mb;
  int remat, scan, carry, tc;
  bool operator==(const RecordKey&) const = default;
};
struct RecordKeyHash {
  std::size_t operator()(const RecordKey& k) const {
    std::uint64_t h = static_cast<std::uint64_t>(k.t) * 0x9E3779B97F4A7C15ull;
    h ^= static_cast<std::uint64_t>(k.sp) + 0x7F4A7C159E3779B9ull + (h << 6) + (h >> 2);
    h ^= static_cast<std::uint64_t>(k.mb) + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= static_cast<std::uint64_t>(k.tc * 64 + k.remat * 16 + k.scan * 2 + k.carry) + (h << 6) + (h >> 2);
    return static_cast<std::size_t>(h);
  }
};

Record make_record(const ModelSpec& m, const ClusterSpec& c, const SearchOptions& o, const RecordKey& k, LowerCache& lc,
                   std::map<PipelineKey, std::pair<Part, Part>>& pipeline) {
  Plan q = base_plan(Mesh{}, o);
  q.mesh[Axis::tensor] = k.t;
  q.mesh[Axis::sequence] = k.sp;
  q.micro_batch = k.mb;
  q.remat = static_cast<Remat>(k.remat);
  q.scan = static_cast<ScanAlgo>(k.scan);
  q.carry = static_cast<CarryScheme>(k.carry);
  q.tensor_comm = static_cast<TensorComm>(k.tc);
  const DType dtype = q.act_dtype;
  Record r;
  const StageSummary st = lower_stage(m, q, 0, k.sp - 1, &lc);
  for (const auto& g : st.groups) {
    const auto i = static_cast<std::size_t>(g.kind);
    r.kinds.push_back(g.kind);
    r.part[i].add(0, g.lowered->forward, c, dtype);
    r.part[i].add(1, g.lowered->backward, c, dtype);
    r.saved[i] = g.lowered->saved_bytes;
    r.params[i] = static_cast<double>(g.lowered->params);
  }
  r.part[kEmbed].add(0, st.pre_forward, c, dtype);
  r.part[kEmbed].add(1, st.pre_backward, c, dtype);
  r.part[kHead].add(0, st.post_forward, c, dtype);
  r.part[kHead].add(1, st.post_backward, c, dtype);
  double layers_saved = 0;
  for (const auto& g : st.groups) layers_saved += static_cast<double>(g.count) * g.lowered->saved_bytes;
  r.head_saved = std::max(0.0, st.saved_activation_bytes - layers_saved);
  if (m.depth > 1) {  // the pipeline sends (the layers these two stages hold do not matter)
    auto [it, fresh] = pipeline.try_emplace(PipelineKey{k.t, k.sp, k.mb, k.tc});
    if (fresh) {
      q.mesh[Axis::pipeline] = 2;
      const StageSummary first = lower_stage(m, q, 0, k.sp - 1, &lc), last = lower_stage(m, q, 1, k.sp - 1, &lc);
      it->second.first.add(0, last.pre_forward, c, dtype);
      it->second.first.add(1, last.pre_backward, c, dtype);
      it->second.second.add(0, first.post_forward, c, dtype);
      it->second.second.add(1, first.post_backward, c, dtype);
    }
    r.part[kReceive] = it->second.first;
    r.part[kSend] = it->second.second;
  }
  r.flatten();
  lc.layers.clear();  // keep memory flat: the record is all the bounds need
  return r;
}

// Layers of each kind on every stage of a pp-stage pipeline with v chunks per stage (stage s holds
// chunks s, s + pp, ..., as lower_stage assigns them).
// `distinct` lists one stage of each different (layer counts, first, last): pass bounds, maxima
// over stages, need only those.
struct StageCounts {
  std::vector<std::array<double, kKinds>> n;  // [stage][kind]
  std::vector<std::array<double, kKinds>> first_chunk;  // [stage][kind]: the stage's chunk 0 (model chunk s)
  std::vector<std::size_t> distinct;
  std::vector<double> copies;  // per distinct stage: how many stages are like it
  std::size_t size() const { return n.size(); }
  const std::array<double, kKinds>& operator[](std::size_t s) const { return n[s]; }
};
StageCounts stage_counts(const ModelSpec& m, std::int64_t pp, std::int64_t v) {
  StageCounts out;
  out.n.resize(static_cast<std::size_t>(pp));
  out.first_chunk.resize(static_cast<std::size_t>(pp));
  for (std::int64_t s = 0; s < pp; ++s)
    for (std::int64_t j = 0; j < v; ++j) {
      const Range r = pipeline_chunk_layers(m.depth, pp * v, j * pp + s);
      for (std::int64_t l = r.begin; l < r.end; ++l) {
        const auto k = static_cast<std::size_t>(temporal_kind(m, l));
        out.n[static_cast<std::size_t>(s)][k] += 1;
        if (j == 0) out.first_chunk[static_cast<std::size_t>(s)][k] += 1;
      }
    }
  const std::size_t last = out.n.size() - 1;
  for (std::size_t s = 0; s <= last; ++s) {
    const auto like = std::find_if(out.distinct.begin(), out.distinct.end(), [&](std::size_t d) { return d != 0 && out.n[d] == out.n[s]; });
    if (s == 0 || s == last || like == out.distinct.end()) {
      out.distinct.push_back(s);
      out.copies.push_back(1);
    } else {
      out.copies[static_cast<std::size_t>(like - out.distinct.begin())] += 1;
    }
  }
  return out;
}

// What depends on the mesh and ZeRO stage but not on micro-batch, remat, scan or carry, from one
// lowering of the mesh (micro-batch 1) priced on each network: per stage the once-per-step work
// (optimizer compute, exposed and overlappable gradient sync and parameter gathers); per layer kind
// the ZeRO-3 parameter gathers and ZeRO-2/3 gradient reduce-scatters (its collectives on the fsdp axis).
struct Anchor {
  std::size_t pp = 1;
  bool gathers = false;
  std::vector<double> params, buffer;  // per stage: local parameters, the largest step-end or gather buffer
  std::vector<double> state;           // per stage: parameter, gradient and optimizer bytes under the ZeRO stage
  std::vector<std::array<double, 3>> step_end;  // [net · pp + stage]: optimizer, exposed, overlappable
  // per stage: the gradient accumulation's add of one micro-batch (grad_accumulate_parts, less the
  // launch overhead): a plan with m micro-batches pays at least m − accum_kept times it (autograd
  // keeps the first micro-batch's gradient: m − 1 adds)
  std::vector<double> accum;
  double accum_kept = 0;
  std::vector<std::array<Priced, kKinds>> gather;  // [net][kind]
};

Anchor make_anchor(const ModelSpec& m, const ClusterSpec& c, const Plan& q0, const std::vector<NetLines>& lines, LowerCache& lc) {
  Plan q = q0;
  q.micro_batch = 1;
  q.remat = Remat::none;
  q.scan = ScanAlgo::sequential;
  q.carry = CarryScheme::ring;
  q.tensor_comm = TensorComm::allreduce;
  // Equal chunks: a stage holds the same layers whatever the interleaving (lower with v = 1).
  // Uneven chunks (pipeline_chunk_layers): which layers a stage holds depends on v, so does its state.
  if (m.depth % (q.mesh[Axis::pipeline] * q.virtual_stages) == 0) q.virtual_stages = 1;
  const auto stages = stage_summaries(m, q, &lc);
  Anchor a;
  a.pp = stages.size();
  std::array<Part, kKinds> gathers;
  std::array<bool, kKinds> seen{};
  std::vector<Part> ends(stages.size());
  for (std::size_t s = 0; s < stages.size(); ++s) {
    // The gradient accumulation grows with the micro-batches, which the anchor does not fix (it
    // lowers micro-batch 1): one micro-batch's add priced apart (accum), the rest as one Part.
    std::vector<Step> end_steps;
    double accum = 0;
    const GradAccumulateParts parts = grad_accumulate_parts(q, stages[s]);
    a.accum_kept = static_cast<double>(stages[s].micro_batches) - parts.adds;
    for (const auto& st : stages[s].step_end) {
      if (std::string_view(st.op) != ops::grad_accumulate) {
        end_steps.push_back(st);
        continue;
      }
      Step one = st;  // one add: bandwidth falls (never rises) with the bytes moved
      one.vector_flops = parts.add_flops;
      one.bytes_read = parts.add_read;
      one.bytes_written = parts.add_written;
      accum += std::max(0.0, compute_seconds(one, c.chip, q.act_dtype) - c.chip.launch_overhead_seconds);
    }
    a.accum.push_back(accum);
    ends[s].add(0, end_steps, c, q.act_dtype);
    a.params.push_back(static_cast<double>(stages[s].local_params));
    a.state.push_back(state_bytes(a.params.back(), q.param_dtype, zero_stage_during_step(q), static_cast<double>(q.mesh[Axis::fsdp])).total());
    a.buffer.push_back(stages[s].zero_comm_bytes);  // the step end's and the fsdp collectives' buffers
    for (const auto& g : stages[s].groups) {
      const auto i = static_cast<std::size_t>(g.kind);
      if (seen[i]) continue;
      seen[i] = true;
      gathers[i].add(0, g.lowered->forward, c, q.act_dtype, true);
      gathers[i].add(1, g.lowered->backward, c, q.act_dtype, true);
      a.gathers = a.gathers || !gathers[i].comm[0].empty() || !gathers[i].comm[1].empty();
    }
  }
  for (const auto& l : lines) {
    for (const auto& e : ends) {
      const Priced p = price(e, l);
      a.step_end.push_back({p.compute[0], p.exposed[0], p.hidden[0]});
    }
    std::array<Priced, kKinds> g{};
    for (std::size_t k = 0; k < static_cast<std::size_t>(kKinds); ++k) g[k] = price(gathers[k], l);
    a.gather.push_back(g);
  }
  return a;
}

// A Record priced on one network.
using PricedRecord = std::array<Priced, kParts>;
PricedRecord price(const Record& rec, const NetLines& l) {
  PricedRecord pr{};
  for (std::size_t i = 0; i < kParts; ++i) pr[i].compute = rec.part[i].compute;
  for (const auto& f : rec.flat) {
    const auto& t = f.total;
    const auto a = static_cast<std::size_t>(t.axis);
    double s = 0;
    if (t.gathers > 0) s += l.gather[a].fixed * t.gathers + l.gather[a].per_byte * t.gather_bytes;
    if (t.hops > 0) s += l.hop[a].fixed * t.hops + l.hop[a].per_byte * t.hop_bytes;
    (t.overlappable ? pr[f.part].hidden : pr[f.part].exposed)[f.dir] += s;
  }
  return pr;
}

// Lower bounds on one micro-batch of the slowest stage (a pass is at least its exposed collectives
// plus the larger of its compute and its overlappable collectives: Pass::finish in simulate.cpp)
// and an upper bound on any stage's backward compute (what can hide the gradient sync).
struct PassBound {
  double slowest = 0, backward = 0;
  double all = 0;   // Σ over stages
  double last = 0;  // the last stage (with all: the stages before it)
  double first_chunks = 0;  // Σ over the stages before the last of their chunk 0's layers (exposed comm + compute)
};
// Pass bounds on every network at once: compute does not depend on the network, so each stage's
// compute sums are formed once. ZeRO-3's parameter gathers (per layer kind and network) are added
// to the layers' communication.
void pass_bounds(const std::array<PricedRecord, kMaxNets>& on, std::size_t nets, const Record& rec, const StageCounts& counts,
                 const std::vector<std::array<Priced, kKinds>>* gathers, std::array<PassBound, kMaxNets>& out) {
  const std::size_t pp = counts.size(), nk = rec.kinds.size();
  std::array<std::size_t, kKinds> kind{};
  for (std::size_t i = 0; i < nk; ++i) kind[i] = static_cast<std::size_t>(rec.kinds[i]);
  // Per network, direction and kind: a layer's exposed and overlappable seconds.
  std::array<std::array<std::array<std::array<double, 2>, kKinds>, 2>, kMaxNets> layer{};  // [net][dir][kind]{exposed, hidden}
  for (std::size_t k = 0; k < nets; ++k)
    for (std::size_t d = 0; d < 2; ++d)
      for (std::size_t i = 0; i < nk; ++i) {
        const Priced& pr = on[k][kind[i]];
        layer[k][d][i] = {pr.exposed[d], pr.hidden[d]};
        if (gathers) {
          layer[k][d][i][0] += (*gathers)[k][kind[i]].exposed[d];
          layer[k][d][i][1] += (*gathers)[k][kind[i]].hidden[d];
        }
      }
  for (std::size_t k = 0; k < nets; ++k) out[k] = PassBound{};
  for (std::size_t di = 0; di < counts.distinct.size(); ++di) {
    const std::size_t s = counts.distinct[di];
    const std::size_t pre = s == 0 ? kEmbed : kReceive, post = s + 1 == pp ? kHead : kSend;
    std::array<double, kKinds> n{};
    for (std::size_t i = 0; i < nk; ++i) n[i] = counts[s][kind[i]];
    std::array<double, kMaxNets> t{};
    for (std::size_t d = 0; d < 2; ++d) {
      double comp = rec.part[pre].compute[d] + rec.part[post].compute[d];
      for (std::size_t i = 0; i < nk; ++i) comp += n[i] * rec.part[kind[i]].compute[d];
      for (std::size_t k = 0; k < nets; ++k) {
        const PricedRecord& pr = on[k];
        double ex = pr[pre].exposed[d] + pr[post].exposed[d], hid = pr[pre].hidden[d] + pr[post].hidden[d];
        for (std::size_t i = 0; i < nk; ++i) {
          ex += n[i] * layer[k][d][i][0];
          hid += n[i] * layer[k][d][i][1];
        }
        t[k] += ex + std::max(comp, hid);
      }
      if (d == 1)
        for (std::size_t k = 0; k < nets; ++k) out[k].backward = std::max(out[k].backward, comp);
    }
    for (std::size_t k = 0; k < nets; ++k) {
      out[k].slowest = std::max(out[k].slowest, t[k]);
      out[k].all += counts.copies[di] * t[k];
      if (s + 1 == pp) out[k].last = t[k];
    }
  }
  for (std::size_t k = 0; k < nets; ++k) out[k].backward *= 2 - kBoundSlack;  // an upper bound
  // Chunk 0 of every stage before the last: one micro-batch passes them forward before the last
  // stage starts and backward after it ends (its embedding or receive, its layers and its send:
  // each one's exposed communication plus compute, which their pass cannot undercut).
  for (std::size_t s = 0; s + 1 < pp; ++s) {
    for (const std::size_t part : {s == 0 ? kEmbed : kReceive, kSend})
      for (std::size_t k = 0; k < nets; ++k)
        for (std::size_t d = 0; d < 2; ++d) out[k].first_chunks += on[k][part].exposed[d] + on[k][part].compute[d];
    for (std::size_t i = 0; i < nk; ++i) {
      const double n = counts.first_chunk[s][kind[i]];
      if (n == 0) continue;
      const double compute = rec.part[kind[i]].compute[0] + rec.part[kind[i]].compute[1];
      for (std::size_t k = 0; k < nets; ++k) out[k].first_chunks += n * (layer[k][0][i][0] + layer[k][1][i][0] + compute);
    }
  }
}

// Lower bound on step time (finish_estimate): the pipelined part (sim/schedule.hpp) at least the
// micro-batches of the slowest stage, and at least the last stage's micro-batches plus one
// micro-batch's forward through chunk 0 of the stages before it (the last stage's first pass
// waits for that) and its backward back through them (after its last pass, chunk 0's backward of
// the last micro-batch) — with one chunk per stage the whole stages, whose lower bounds bound it
// from below; plus the once-per-step work of the stage that needs the least, its
// overlappable sync hidden behind at most the largest backward compute.
double step_bound(const PassBound& pb, double micro_batches, double v, const Anchor& an, std::size_t net, bool overlap) {
  double least_end = kInf;
  for (std::size_t s = 0; s < an.pp; ++s) {
    const auto& e = an.step_end[net * an.pp + s];
    least_end = std::min(least_end, e[0] + std::max(0.0, micro_batches - an.accum_kept) * an.accum[s] + e[1] +
                                        (overlap ? std::max(0.0, e[2] - pb.backward) : e[2]));
  }
  const double before_last = v <= 1 ? std::max(0.0, pb.all - pb.last) : pb.first_chunks;
  const double pipelined = std::max(micro_batches * pb.slowest, micro_batches * pb.last + before_last);
  return (pipelined + least_end) * kBoundSlack;
}

// Lower bound on memory per device (memory_of in simulate.cpp): per stage the parameter state of
// its parameters, the activations its layers and head keep per micro-batch in flight, the largest
// scan state and communication buffer among its steps.
double memory_bound(const Record& rec, const StageCounts& counts, const Anchor& an, const Plan& q) {
  const std::int64_t pp = static_cast<std::int64_t>(counts.size()), mb = q.micro_batches();
  double most = 0;
  for (std::int64_t s = 0; s < pp; ++s) {
    const auto si = static_cast<std::size_t>(s);
    double act = s + 1 == pp ? rec.head_saved : 0, state = 0;
    double buffer = std::max({an.buffer[si], rec.part[s == 0 ? kEmbed : kReceive].max_comm, rec.part[s + 1 == pp ? kHead : kSend].max_comm});
    for (Temporal kind : rec.kinds) {
      const auto k = static_cast<std::size_t>(kind);
      if (counts[si][k] == 0) continue;
      act += counts[si][k] * rec.saved[k];
      state = std::max(state, rec.part[k].max_state);
      buffer = std::max(buffer, rec.part[k].max_comm);
    }
    const std::int64_t in_flight = q.schedule == Schedule::gpipe ? mb : std::min(mb, pp - s);
    const double mem = an.state[si] + act * static_cast<double>(in_flight) + state + buffer;
    most = std::max(most, mem);
  }
  return most * kBoundSlack;
}

// Layer lowerings the anchors keep for reuse by later meshes (each holds ~100 steps).
constexpr std::size_t kAnchorLoweringsKept = 256;

struct MeshInfo {
  std::size_t index = 0;  // in the enumeration
  std::vector<std::array<Axis, kAxisCount>> orders;
  std::vector<Network> nets;
  std::vector<NetLines> lines;
  FamIds axis_fams;
};

// One (mesh, ZeRO stage, micro-batch, remat, scan, carry): its plans differ in placement, schedule
// and overlap only.
// An allocator for the one large array of the search (every configuration's bounds, tens of MB):
// 2 MB-aligned and marked for transparent huge pages, so filling it takes a few dozen page faults
// instead of thousands (each costly on a virtual machine). Falls back to ordinary pages silently.
template <class T>
struct HugePageAllocator {
  using value_type = T;
  static constexpr std::size_t kHuge = std::size_t{2} << 20;
  HugePageAllocator() = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = (n * sizeof(T) + kHuge - 1) / kHuge * kHuge;
    void* p = std::aligned_alloc(kHuge, bytes);
    if (!p) throw std::bad_alloc();
    ::madvise(p, bytes, MADV_HUGEPAGE);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const { return true; }
};

struct Config {
  double step_bound = 0;     // the least over placements and overlap
  double memory_bound = 0;   // the least over schedules
  std::uint32_t record = 0;  // into the Record list
  std::uint32_t anchor = 0;  // into the Anchor list (which names the mesh)
  Choice choice;
};

// Configurations in (nearly) ascending order of their step bound: a counting sort on the bound's
// leading bits (buckets 0.04 % wide), enumeration order inside a bucket. The order only decides how
// soon the thresholds tighten — the Collector's answer does not depend on it — so an O(n) pass
// replaces a full sort of every configuration.
std::vector<std::uint32_t> bound_order(std::span<const Config> configs) {
  constexpr int kMantissaBits = 11;
  auto bucket_of = [](double b) -> std::uint64_t {  // monotone in b for b ≥ 0 (IEEE 754 bit order)
    if (!(b >= 0)) b = 0;
    if (b > std::numeric_limits<double>::max()) b = std::numeric_limits<double>::max();
    return std::bit_cast<std::uint64_t>(b) >> (52 - kMantissaBits);
  };
  std::vector<std::uint32_t> order(configs.size());
  if (configs.empty()) return order;
  std::uint64_t lo = UINT64_MAX, hi = 0;
  for (const auto& c : configs) {
    const auto k = bucket_of(c.step_bound);
    lo = std::min(lo, k);
    hi = std::max(hi, k);
  }
  if (hi - lo > 64 * configs.size()) {  // bounds spread over many octaves: a comparison sort is cheaper
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) { return configs[a].step_bound < configs[b].step_bound; });
    return order;
  }
  std::vector<std::uint32_t> start(hi - lo + 2, 0);
  for (const auto& c : configs) ++start[bucket_of(c.step_bound) - lo + 1];
  for (std::size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
  for (std::uint32_t i = 0; i < configs.size(); ++i) order[start[bucket_of(configs[i].step_bound) - lo]++] = i;
  return order;
}

void search_pruned(const ModelSpec& m, const ClusterSpec& c, const SearchOptions& o, const std::vector<Mesh>& all,
                   SearchResult& r) {
  const std::int64_t N = c.devices();
  const Topology topo(c);
  const double capacity = c.chip.memory_bytes * o.max_memory_fraction;
  const double total_params = static_cast<double>(count_parameters(m).total);
  Collector col(o, capacity);
  Progress progress(o);
  LowerCache lc, anchor_lc;

  std::deque<Record> records;  // stable, never moved: a record holds many vectors
  std::unordered_map<RecordKey, std::uint32_t, RecordKeyHash> record_ids;
  std::map<PipelineKey, std::pair<Part, Part>> pipeline_parts;
  std::map<std::pair<std::int64_t, std::int64_t>, StageCounts> counts_by_pp;  // (pp, chunks per stage)
  std::vector<MeshInfo> infos;
  std::vector<Anchor> anchors;
  std::vector<std::uint32_t> anchor_mesh;  // [anchor]: into the MeshInfo list
  std::vector<Config, HugePageAllocator<Config>> configs;

  std::array<int, kRemats.size()> remat_fam{};
  std::array<int, kScans.size()> scan_fam{};
  std::array<int, 4> zero_fam{};
  for (std::size_t i = 0; i < kRemats.size(); ++i) remat_fam[i] = col.family({5, static_cast<std::int64_t>(kRemats[i])});
  for (std::size_t i = 0; i < kScans.size(); ++i) scan_fam[i] = col.family({6, static_cast<std::int64_t>(kScans[i])});
  for (int z = 0; z < 4; ++z) zero_fam[static_cast<std::size_t>(z)] = col.family({7, z});
  auto families = [&](const FamIds& axes, const Mesh& mesh, std::size_t ri, std::size_t si, int zero) {
    FamIds f = axes;  // the order of Collector::families(q, true)
    f.id[static_cast<std::size_t>(f.n++)] = remat_fam[ri];
    f.id[static_cast<std::size_t>(f.n++)] = scan_fam[si];
    if (mesh[Axis::fsdp] > 1) f.id[static_cast<std::size_t>(f.n++)] = zero_fam[static_cast<std::size_t>(zero)];
    return f;
  };

  {  // room for every configuration at once (an upper bound: pages never written cost nothing)
    std::size_t most = 0;
    for (const Mesh& mesh : all) {
      const std::int64_t replicas = mesh[Axis::data] * mesh[Axis::fsdp];
      if (o.global_batch % replicas != 0) continue;
      most += zero_stages(mesh[Axis::fsdp]).size() * divisors(o.global_batch / replicas).size() * kRemats.size() * kScans.size() *
              kCarries.size() * kTensorComms.size() * kVirtualStages.size();
    }
    configs.reserve(most);
  }

  // 1. Enumerate: legality, the state bound, and per configuration its bounds.
  struct SubBound {  // per Choice::sub() of a mesh: pass bounds per network, without/with ZeRO-3 gathers
    std::uint32_t stamp[2] = {0, 0};  // 1 + the mesh they were computed for
    std::array<std::array<PassBound, kMaxNets>, 2> pass{};  // [gathers][network]
  };
  std::vector<SubBound> subs;
  // The record of a sub's (micro-batch, remat, scan, carry, tensor comm) priced on each network of
  // the current mesh, shared by its ZeRO stages, chunk counts and ZeRO-3 gather flags.
  struct MeshPriced {
    std::uint32_t stamp = 0, record = 0;
    bool priced = false;
    std::array<PricedRecord, kMaxNets> on{};
  };
  std::vector<MeshPriced> mesh_priced;  // [sub / chunk choices]
  for (std::size_t mi = 0; mi < all.size(); ++mi) {
    progress(0.4 * static_cast<double>(mi) / static_cast<double>(all.size()));
    const Mesh& mesh = all[mi];
    const Plan p = base_plan(mesh, o);
    if (plan_violation(m, p, N)) {
      ++r.illegal;
      ++r.considered;
      col.illegal(plan_index(mi), col.families(p, false), plan_violations(m, p, N));
      continue;
    }
    col.legal(col.families(p, false));
    const std::int64_t pp = mesh[Axis::pipeline];
    const FamIds axis_fams = col.families(p, false);
    MeshInfo info;
    info.index = mi;
    info.axis_fams = axis_fams;
    info.orders = distinct_orders(mesh);
    const auto stamp = static_cast<std::uint32_t>(infos.size() + 1);
    const auto zeros = zero_stages(mesh[Axis::fsdp]);
    const auto mbs = divisors(p.local_batch());
    std::vector<double> states;
    for (int z : zeros) states.push_back(state_bound(total_params, mesh, o.dtype, z));
    // per (ZeRO stage, interleaving): uneven chunks need an anchor per v (make_anchor)
    std::vector<std::uint32_t> anchor_of(zeros.size() * kVirtualStages.size(), UINT32_MAX);
    for_each_choice(m, p, zeros, mbs, [&](const Plan& q, const Choice& ch) {
      const int variants = static_cast<int>(schedules_for(pp, q.virtual_stages)) * (p.replicas() > 1 ? 2 : 1) *
                           static_cast<int>(info.orders.size());
      r.considered += variants;
      if (states[ch.zero_i] > capacity) {
        r.pruned += variants;
        col.note({plan_index(mi, ch, 0, 0, 0), families(axis_fams, mesh, ch.remat_i, ch.scan_i, q.zero_stage), Note::states,
                  states[ch.zero_i]});
        return;
      }
      auto cit = counts_by_pp.find({pp, q.virtual_stages});
      if (cit == counts_by_pp.end()) cit = counts_by_pp.emplace(std::pair{pp, q.virtual_stages}, stage_counts(m, pp, q.virtual_stages)).first;
      const StageCounts& counts = cit->second;
      if (info.nets.empty())
        for (const auto& ord : info.orders) {
          info.nets.emplace_back(topo, c, mesh, ord);
          NetLines l;
          for (int a = 0; a < kAxisCount; ++a) {
            l.gather[static_cast<std::size_t>(a)] = all_gather_line(info.nets.back().axis(static_cast<Axis>(a)));
            l.hop[static_cast<std::size_t>(a)] = p2p_hop_line(info.nets.back().axis(static_cast<Axis>(a)));
          }
          info.lines.push_back(l);
        }
      const bool even_chunks = m.depth % (pp * q.virtual_stages) == 0;
      std::uint32_t& anchor = anchor_of[ch.zero_i * kVirtualStages.size() + (even_chunks ? 0 : ch.v_i)];
      if (anchor == UINT32_MAX) {
        anchor = static_cast<std::uint32_t>(anchors.size());
        anchors.push_back(make_anchor(m, c, q, info.lines, anchor_lc));
        if (anchor_lc.layers.size() > kAnchorLoweringsKept) anchor_lc.layers.clear();  // memory stays flat
        anchor_mesh.push_back(static_cast<std::uint32_t>(infos.size()));
      }
      const Anchor& an = anchors[anchor];
      // The record of this (micro-batch, remat, scan, carry, tensor comm): once per mesh from the map.
      const std::size_t sub = ch.sub(), local = sub / kVirtualStages.size();
      if (mesh_priced.size() <= local) mesh_priced.resize(local + 1);
      MeshPriced& mp = mesh_priced[local];
      if (mp.stamp != stamp) {
        const RecordKey key{mesh[Axis::tensor], mesh[Axis::sequence], q.micro_batch, static_cast<int>(q.remat),
                            static_cast<int>(q.scan), static_cast<int>(q.carry), static_cast<int>(q.tensor_comm)};
        auto [rit, fresh] = record_ids.try_emplace(key, static_cast<std::uint32_t>(records.size()));
        if (fresh) records.push_back(make_record(m, c, o, key, lc, pipeline_parts));
        mp.stamp = stamp;
        mp.record = rit->second;
        mp.priced = false;
      }
      const Record& rec = records[mp.record];
      if (subs.size() <= sub) subs.resize(sub + 1);
      SubBound& sb = subs[sub];
      if (sb.stamp[an.gathers] != stamp) {
        if (!mp.priced) {
          for (std::size_t k = 0; k < info.lines.size(); ++k) mp.on[k] = price(rec, info.lines[k]);
          mp.priced = true;
        }
        pass_bounds(mp.on, info.lines.size(), rec, counts, an.gathers ? &an.gather : nullptr, sb.pass[an.gathers]);
        sb.stamp[an.gathers] = stamp;
      }

      Config cfg;
      cfg.record = mp.record;
      cfg.anchor = anchor;
      cfg.choice = ch;
      const double mcount = static_cast<double>(q.micro_batches()), v = static_cast<double>(q.virtual_stages);
      cfg.step_bound = kInf;  // overlapping the gradient sync never makes the bound larger
      for (std::size_t k = 0; k < info.lines.size(); ++k)
        cfg.step_bound = std::min(cfg.step_bound, step_bound(sb.pass[an.gathers][k], mcount, v, an, k, true));
      cfg.memory_bound = memory_bound(rec, counts, an, q);  // 1F1B holds no more activations than GPipe
      configs.push_back(cfg);
    });
    infos.push_back(std::move(info));
  }

  // 2. Cheapest bound first: skip what cannot matter, price the rest exactly.
  const std::vector<std::uint32_t> order = bound_order(configs);
  PriceCache prices;
  bool bound_broken = false;
  for (std::size_t ci = 0; ci < order.size() && !bound_broken; ++ci) {
    progress(0.4 + 0.6 * static_cast<double>(ci) / static_cast<double>(order.size()));
    const Config& cfg = configs[order[ci]];
    const Choice& ch = cfg.choice;
    const MeshInfo& info = infos[anchor_mesh[cfg.anchor]];
    const Mesh& mesh = all[info.index];
    const std::int64_t pp = mesh[Axis::pipeline];
    Plan q = base_plan(mesh, o);
    const std::int64_t v = kVirtualStages[ch.v_i];
    const std::size_t scheds = schedules_for(pp, v), overlaps = q.replicas() > 1 ? 2 : 1;
    const std::int64_t per_schedule = static_cast<std::int64_t>(info.nets.size() * overlaps);
    q.zero_stage = zero_stages(mesh[Axis::fsdp])[ch.zero_i];
    const FamIds fams = families(info.axis_fams, mesh, ch.remat_i, ch.scan_i, q.zero_stage);
    if (col.skippable(fams, cfg.step_bound, cfg.memory_bound)) {
      r.bounded += per_schedule * static_cast<std::int64_t>(scheds);
      continue;
    }
    q.micro_batch = divisors(q.local_batch())[ch.mb_i];
    q.remat = kRemats[ch.remat_i];
    q.scan = kScans[ch.scan_i];
    q.carry = kCarries[ch.carry_i];
    q.tensor_comm = kTensorComms[ch.tc_i];
    q.virtual_stages = v;
    const Record& rec = records[cfg.record];
    const Anchor& an = anchors[cfg.anchor];
    const StageCounts& counts = counts_by_pp.at({pp, v});

    const auto stages = stage_summaries(m, q, &lc);
    std::array<MemoryBreakdown, 2> mem{};
    std::array<bool, 2> fits{};
    for (std::size_t sc = 0; sc < scheds; ++sc) {
      q.schedule = kSchedules[sc];
      mem[sc] = stage_memory(stages, q, c.chip);
      fits[sc] = mem[sc].total_bytes <= capacity;
      if (mem[sc].total_bytes < memory_bound(rec, counts, an, q)) bound_broken = true;
      if (!fits[sc]) {
        r.over_memory += per_schedule;
        col.note({plan_index(info.index, ch, 0, sc, 0), fams,
                  Note::over_memory, mem[sc].total_bytes, mem[sc].activations_bytes});
      }
    }
    std::array<PricedRecord, kMaxNets> on;
    for (std::size_t k = 0; k < info.nets.size(); ++k) on[k] = price(rec, info.lines[k]);
    std::array<PassBound, kMaxNets> pbs;
    pass_bounds(on, info.nets.size(), rec, counts, an.gathers ? &an.gather : nullptr, pbs);
    for (std::size_t k = 0; k < info.nets.size(); ++k) {
      q.placement = info.orders[k];
      const PassBound& pb = pbs[k];
      std::optional<PricedPasses> passes;
      for (std::size_t sc = 0; sc < scheds; ++sc) {
        if (!fits[sc]) continue;
        for (std::size_t ov = 0; ov < overlaps; ++ov) {
          const double bound = step_bound(pb, static_cast<double>(q.micro_batches()), static_cast<double>(v), an, k, kOverlaps[ov]);
          if (col.skippable(fams, bound, mem[sc].total_bytes * kBoundSlack)) {
            ++r.bounded;
            continue;
          }
          if (!passes) passes = price_passes(stages, c, info.nets[k], q.act_dtype, &prices);
          q.schedule = kSchedules[sc];
          q.overlap = kOverlaps[ov];
          const Estimate e = finish_estimate(*passes, stages, q, c, info.nets[k]);
          ++r.priced;
          if (e.step_seconds < bound) bound_broken = true;
          col.keep(q, e, plan_index(info.index, ch, k, sc, ov), fams);
        }
      }
    }
    lc.layers.clear();  // the price cache is keyed by these lowerings: drop both together
    prices.groups.clear();
  }
  if (bound_broken) {  // a bound above an exact price would make skipping unsafe: price everything
    r = SearchResult{};
    search_exhaustive(m, c, o, all, r);
    return;
  }
  col.finish(r);
}

}  // namespace

namespace {

// Every mesh of `devices` devices with the fixed axes at their sizes (illegal ones included), in
// enumeration order. ConfigError for impossible constraints; `where` names the devices in the
// message.
std::vector<Mesh> constrained_meshes(std::int64_t devices, const std::array<std::int64_t, kAxisCount>& fixed,
                                     const std::string& where) {
  const std::int64_t N = devices;
  std::int64_t fixed_product = 1;
  for (int a = 0; a < kAxisCount; ++a) {
    const auto f = fixed[static_cast<std::size_t>(a)];
    if (f == 0) continue;
    if (N % f != 0)
      throw ConfigError("--fix " + family_name({a, f}) + ": " + std::to_string(f) + " does not divide the " +
                        std::to_string(N) + " devices of " + where);
    fixed_product *= f;
  }
  if (N % fixed_product != 0)
    throw ConfigError("--fix: the fixed axes multiply to " + std::to_string(fixed_product) + ", which does not divide the " +
                      std::to_string(N) + " devices");
  std::vector<Mesh> all;
  Mesh cur;
  meshes(N, 0, cur, fixed, all);
  return all;
}

}  // namespace

SearchResult search(const ModelSpec& m, const ClusterSpec& c, const SearchOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.global_batch < 1 || o.seq_len < 1) throw ConfigError("--global-batch and --seq-len must be positive");
  const std::vector<Mesh> all = constrained_meshes(c.devices(), o.fixed, c.name);
  SearchResult r;
  if (o.prune) search_pruned(m, c, o, all, r);
  else search_exhaustive(m, c, o, all, r);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

void for_each_legal_plan(const ModelSpec& m, std::int64_t devices, const SearchOptions& o,
                         const std::function<void(const Plan&)>& fn) {
  // The exhaustive path's loops (search_exhaustive) without placements and pricing.
  // dtype is one value per search (o.dtype); were it searched, it would be one more loop here.
  if (o.global_batch < 1 || o.seq_len < 1) throw ConfigError("--global-batch and --seq-len must be positive");
  for (const Mesh& mesh : constrained_meshes(devices, o.fixed, std::to_string(devices) + " devices")) {
    const Plan p = base_plan(mesh, o);
    if (plan_violation(m, p, devices)) continue;
    for_each_choice(m, p, zero_stages(mesh[Axis::fsdp]), divisors(p.local_batch()), [&](const Plan& q0, const Choice&) {
      Plan q = q0;
      for (std::size_t sc = 0; sc < schedules_for(mesh[Axis::pipeline], q.virtual_stages); ++sc)
        for (std::size_t ov = 0; ov < kOverlaps.size(); ++ov) {
          if (p.replicas() == 1 && !kOverlaps[ov]) continue;
          q.schedule = kSchedules[sc];
          q.overlap = kOverlaps[ov];
          fn(q);
        }
    });
  }
}

// ---- serving search ----------------------------------------------------------------------------

std::vector<std::int64_t> serving_batches(std::int64_t unit, std::int64_t most) {
  std::vector<std::int64_t> out;
  for (std::int64_t b = unit; b <= most; b *= 2) out.push_back(b);
  if (most >= unit && (out.empty() || out.back() != most)) out.push_back(most);
  return out;
}

SearchResult search_serving(const ModelSpec& m, const ClusterSpec& c, const ServingSearchOptions& so) {
  const auto t0 = std::chrono::steady_clock::now();
  if (!(so.latency_budget_seconds > 0)) throw ConfigError("--latency-budget: must be a positive number of seconds");
  auto fixed = so.fixed;
  for (Axis a : {Axis::fsdp, Axis::sequence}) {
    auto& f = fixed[static_cast<std::size_t>(a)];
    if (f > 1) throw ConfigError("--fix " + family_name({static_cast<int>(a), f}) + ": a serving plan uses data, tensor and pipeline only");
    f = 1;
  }
  const std::vector<Mesh> all = constrained_meshes(c.devices(), fixed, c.name);
  const std::int64_t N = c.devices();
  SearchOptions o;
  o.top = so.top;
  const double capacity = c.chip.memory_bytes * kMaxMemoryFraction;
  Collector col(o, capacity);
  const Topology topo(c);
  SearchResult r;
  for (std::size_t mi = 0; mi < all.size(); ++mi) {
    Plan p;
    p.mesh = all[mi];
    p.param_dtype = p.act_dtype = so.dtype;
    const std::int64_t pp = p.mesh[Axis::pipeline];
    ServingShape s = so.shape;
    s.batch = pp;  // the smallest batch a pipeline of pp stages can run
    const auto broken = serving_violations(m, p, s, N);
    if (!broken.empty()) {
      ++r.illegal;
      ++r.considered;
      col.illegal(plan_index(mi), col.families(p, false), broken);
      continue;
    }
    col.legal(col.families(p, false));
    std::int64_t most = max_batch_that_fits(m, p, s, c.chip);
    if (so.max_batch > 0) most = std::min(most, so.max_batch / pp * pp);
    if (most < pp) {  // not even the smallest batch fits
      ++r.considered;
      ++r.over_memory;
      const auto mem = inference_memory_estimate(m, p, s, c.chip).memory;
      FamIds f = col.families(p, false);
      f.id[static_cast<std::size_t>(f.n++)] = col.family({kBatchFamily, pp});
      col.note({plan_index(mi), f, Note::over_memory, mem.total_bytes(), mem.activations_bytes});
      continue;
    }
    const auto orders = distinct_orders(p.mesh);
    const auto batches = serving_batches(pp, most);
    for (std::size_t k = 0; k < orders.size(); ++k) {
      p.placement = orders[k];
      const Network net(topo, c, p.mesh, p.placement);
      for (std::size_t bi = 0; bi < batches.size(); ++bi) {
        s.batch = batches[bi];
        Plan q = serving_plan(p, s);
        FamIds f = col.families(q, false);
        f.id[static_cast<std::size_t>(f.n++)] = col.family({kBatchFamily, s.batch});
        const std::uint64_t index = plan_index(mi, Choice{static_cast<std::uint16_t>(bi)}, k, 0, 0);
        ++r.considered;
        const InferenceEstimate e = simulate_inference(m, q, c, net, s);
        if (e.per_token_seconds > so.latency_budget_seconds) {
          ++r.bounded;
          col.note({index, f, Note::over_latency, e.per_token_seconds, so.latency_budget_seconds});
          continue;
        }
        ++r.priced;
        // Ranked by inverse throughput (device-seconds per sampled token over the deployment), so
        // the fastest is the highest throughput; the buckets are the decode round's, scaled to it.
        Estimate as;
        as.tokens_per_s = e.tokens_per_s(so.workload);
        as.step_seconds = 1 / as.tokens_per_s;
        for (int b = 0; b < kBucketCount; ++b) as.seconds[b] = e.decode_seconds[b] * as.step_seconds / e.per_token_seconds;
        as.memory.total_bytes = e.memory.total_bytes();
        as.memory.activations_bytes = e.memory.activations_bytes;
        col.keep(q, as, index, f, e.per_token_seconds, e.ttft_seconds);
      }
    }
  }
  col.finish(r);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace scanshard
