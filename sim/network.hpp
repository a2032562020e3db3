// sim/network.hpp — the cluster's network as a Boost.Graph and, per mesh axis, the effective
// bandwidth and latency its collectives see once ranks are placed on devices.
//
// Placement (default): rank r runs on device r; devices are numbered along the first torus
// dimension first (or island by island), and ranks put tensor innermost, so tensor groups sit on
// neighbouring chips. For every axis the graph gives hop distances between consecutive ring
// members (BFS); from them: link load (how many ring traversals share a link, which captures
// missing wraparound and axes that interleave on one dimension) and latency per ring step.
// For: sim/cost.hpp. Not for: choosing placements (planner/).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "program/cluster.hpp"
#include "program/plan.hpp"

namespace scanshard {

// One physical sub-ring an axis uses: along one torus dimension, or inside/between islands.
struct RingLevel {
  std::int64_t members = 1;          // ranks of the axis along this level
  double bytes_per_s = 0;            // effective per-rank bandwidth of a bidirectional ring
  double step_latency_seconds = 0;   // one ring step: hops × hop latency
};

struct AxisNetwork {
  std::int64_t size = 1;
  // Levels combine: torus dims run concurrently (Scaling Book: a multi-axis all-gather sees the
  // sum of the dims' bandwidths); island levels run one after the other (hierarchical).
  bool hierarchical = false;
  std::vector<RingLevel> levels;
  // > 0 on an axis that spans islands with several members in each: NCCL runs one ring through
  // all P members, pipelined over NVLink and the NICs, not level after level. Each member drives
  // its own NIC, so the ring moves at min(island level's rate, members per island × NIC rate)
  // per rank (DGX A100: min(NVLink, 8 × 24 GB/s) = the 192 GB/s busbw NVIDIA measures across
  // nodes); its latency is the ring's P − 1 steps, islands − 1 of them over the network (NCCL's
  // tuning model). Set only with exactly two levels (inside, between). 0: the levels price the axis.
  double ring_bytes_per_s = 0;
  double p2p_bytes_per_s = 0;        // one link, one direction, neighbour to neighbour
  double p2p_latency_seconds = 0;
};

// The cluster's graph: one vertex per device (plus island and core switches), built once per
// cluster and shared by every mesh priced on it.
class Topology {
 public:
  explicit Topology(const ClusterSpec& cluster);
  ~Topology();
  Topology(Topology&&) noexcept;
  Topology& operator=(Topology&&) noexcept;
  std::int64_t devices() const { return devices_; }
  // BFS hop distance between two devices.
  int hops(std::int64_t from, std::int64_t to) const;
  // BFS distances from device 0 to every vertex (cached).
  const std::vector<int>& from_device0() const { return from0_; }

 private:
  struct Graph;  // boost::adjacency_list (pimpl keeps Boost out of the header)
  std::unique_ptr<Graph> graph_;
  std::int64_t devices_ = 0;
  std::vector<int> from0_;
};

class Network {
 public:
  // `placement`: device order of the axes, innermost first (Plan::placement).
  Network(const Topology& topology, const ClusterSpec& cluster, const Mesh& mesh, const std::array<Axis, kAxisCount>& placement);
  Network(const Topology& topology, const ClusterSpec& cluster, const Mesh& mesh);  // default placement
  Network(const ClusterSpec& cluster, const Mesh& mesh);  // builds a Topology for the occasion
  const AxisNetwork& axis(Axis a) const { return axes_[static_cast<int>(a)]; }

 private:
  std::array<AxisNetwork, kAxisCount> axes_;
};

}  // namespace scanshard
