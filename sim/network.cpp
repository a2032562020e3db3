// sim/network.cpp — see network.hpp.
#include "sim/network.hpp"

#include <algorithm>

#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/breadth_first_search.hpp>

namespace scanshard {

struct Topology::Graph {
  boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, boost::no_property, boost::no_property, boost::no_property, boost::vecS> g;
};

namespace {

using BoostGraph = boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, boost::no_property,
                                         boost::no_property, boost::no_property, boost::vecS>;

// Torus: one vertex per chip, an edge to the next chip along every dimension (and the wraparound
// edge where the dimension wraps). Device index = pod · (chips per pod) + mixed radix with
// dimension 0 fastest. Pods are separate components: the datacenter network between them is a
// level of its own in Network (every chip has its own DCN share), not a path of ICI hops.
void build_torus(BoostGraph& g, const TopologySpec& t) {
  const std::int64_t n = t.pod_devices();
  g = BoostGraph(static_cast<size_t>(t.devices()));
  for (std::int64_t pod = 0; pod < t.pods; ++pod) {
    const std::int64_t base = pod * n;
    std::int64_t stride = 1;
    for (size_t d = 0; d < t.dims.size(); ++d) {
      const std::int64_t size = t.dims[d];
      for (std::int64_t v = 0; v < n; ++v) {
        const std::int64_t x = (v / stride) % size;
        if (x + 1 < size) boost::add_edge(static_cast<size_t>(base + v), static_cast<size_t>(base + v + stride), g);
        else if (t.wraparound[d] && size > 2)
          boost::add_edge(static_cast<size_t>(base + v), static_cast<size_t>(base + v - x * stride), g);
      }
      stride *= size;
    }
  }
}

// An axis whose ring crosses pods: its ranks inside pod 0 (the torus levels, which run
// concurrently) as one level, then one rank per pod over DCN — in sequence, like the island levels
// (sim/cost.cpp all_gather_seconds). The inner level keeps the torus levels' time exactly: summed
// bandwidth, and the latency of all their steps spread over its P_in − 1 steps.
RingLevel dcn_level(std::int64_t members, const TopologySpec& t, double eff) {
  return {members, t.dcn_bytes_per_s * eff, t.dcn_latency_seconds};
}
void dcn_p2p(AxisNetwork& net, const TopologySpec& t, double eff) {  // neighbours in different pods
  net.p2p_bytes_per_s = t.dcn_bytes_per_s * eff;
  net.p2p_latency_seconds = t.dcn_latency_seconds;
}
void add_dcn_level(AxisNetwork& net, std::int64_t pods_spanned, const TopologySpec& t, double eff) {
  RingLevel inner;
  double latency = 0;
  for (const auto& l : net.levels) {
    inner.members *= l.members;
    inner.bytes_per_s += l.bytes_per_s;
    latency += static_cast<double>(l.members - 1) * l.step_latency_seconds;
  }
  if (inner.members > 1) inner.step_latency_seconds = latency / static_cast<double>(inner.members - 1);
  net.levels.clear();
  if (inner.members > 1) net.levels.push_back(inner);
  net.levels.push_back(dcn_level(pods_spanned, t, eff));
  net.hierarchical = true;
}

// Islands: devices 0..n−1, then one switch per island, then the fat-tree core.
void build_islands(BoostGraph& g, const TopologySpec& t) {
  const std::int64_t n = t.devices(), per = t.devices_per_island;
  for (std::int64_t v = 0; v < n + t.islands + 1; ++v) boost::add_vertex(g);
  for (std::int64_t v = 0; v < n; ++v) boost::add_edge(static_cast<size_t>(v), static_cast<size_t>(n + v / per), g);
  if (t.islands > 1)
    for (std::int64_t i = 0; i < t.islands; ++i) boost::add_edge(static_cast<size_t>(n + i), static_cast<size_t>(n + t.islands), g);
}

std::vector<int> bfs_distances(const BoostGraph& g, std::int64_t from) {
  std::vector<int> dist(boost::num_vertices(g), 0);
  boost::breadth_first_search(
      g, boost::vertex(static_cast<size_t>(from), g),
      boost::visitor(boost::make_bfs_visitor(boost::record_distances(dist.data(), boost::on_tree_edge()))));
  return dist;
}

// Stride of an axis in device numbering, axes ordered innermost first.
std::int64_t axis_stride(const Mesh& mesh, Axis a, const std::array<Axis, kAxisCount>& order) {
  std::int64_t s = 1;
  for (Axis b : order) {
    if (b == a) return s;
    s *= mesh[b];
  }
  return s;
}

// A ring through `members` (in order): load = link traversals per member per round (1 for a
// wrapped dimension, ≈2 for a line, ×stride when other axes interleave), latency of the longest
// step. `dist(a, b)` is the graph's hop distance.
template <class Dist>
RingLevel ring_level(const std::vector<std::int64_t>& members, Dist&& dist, double link_bytes_per_s,
                     double hop_latency_seconds) {
  RingLevel r;
  r.members = static_cast<std::int64_t>(members.size());
  if (r.members <= 1) return r;
  double total_hops = 0;
  int max_hops = 0;
  for (size_t i = 0; i < members.size(); ++i) {
    const int h = dist(members[i], members[(i + 1) % members.size()]);
    total_hops += h;
    max_hops = std::max(max_hops, h);
  }
  const double load = std::max(1.0, total_hops / static_cast<double>(r.members));
  r.bytes_per_s = 2 * link_bytes_per_s / load;  // both ring directions
  r.step_latency_seconds = max_hops * hop_latency_seconds;
  return r;
}

}  // namespace

Topology::~Topology() = default;
Topology::Topology(Topology&&) noexcept = default;
Topology& Topology::operator=(Topology&&) noexcept = default;

Topology::Topology(const ClusterSpec& cluster) : graph_(std::make_unique<Graph>()), devices_(cluster.devices()) {
  if (cluster.topology.kind == TopologyKind::torus) build_torus(graph_->g, cluster.topology);
  else build_islands(graph_->g, cluster.topology);
  from0_ = bfs_distances(graph_->g, 0);
}

int Topology::hops(std::int64_t from, std::int64_t to) const {
  return bfs_distances(graph_->g, from)[static_cast<size_t>(to)];
}

Network::Network(const ClusterSpec& cluster, const Mesh& mesh) : Network(Topology(cluster), cluster, mesh) {}
Network::Network(const Topology& topo, const ClusterSpec& cluster, const Mesh& mesh) : Network(topo, cluster, mesh, Plan{}.placement) {}

Network::Network(const Topology& topo, const ClusterSpec& cluster, const Mesh& mesh, const std::array<Axis, kAxisCount>& placement) {
  const TopologySpec& t = cluster.topology;
  const std::int64_t devices_ = topo.devices();
  const double eff = cluster.chip.efficiency.network;
  const std::vector<int>& from0 = topo.from_device0();  // rank 0's group is the representative
  for (int ai = 0; ai < kAxisCount; ++ai) {
    const Axis a = static_cast<Axis>(ai);
    AxisNetwork& net = axes_[ai];
    net.size = mesh[a];
    if (net.size <= 1 || mesh.devices() > devices_) continue;
    const std::int64_t stride = axis_stride(mesh, a, placement);
    std::vector<std::int64_t> members;
    for (std::int64_t i = 0; i < net.size; ++i) members.push_back(i * stride);
    const int neighbour_hops = std::max(1, from0[static_cast<size_t>(members[1])]);
    if (t.kind == TopologyKind::torus) {
      // The ranks in pod 0 ride the torus; the rest are copies of them in other pods.
      const std::int64_t pod = t.pod_devices();
      const std::int64_t spanned = std::min<std::int64_t>(net.size, (members.back() / pod) + 1);
      if (spanned > 1) {
        std::int64_t inside = 0;
        for (auto m : members) inside += m < pod ? 1 : 0;
        if (inside * spanned != net.size) {
          // Uneven over the pods (e.g. 3 pipeline stages on 2 pods): a ring runs at its slowest
          // link, so every step is priced at the DCN share. Legal, and priced so no search picks it.
          net.hierarchical = true;
          net.levels = {dcn_level(net.size, t, eff)};
          dcn_p2p(net, t, eff);
          continue;
        }
        members.resize(static_cast<std::size_t>(inside));
      }
      // One level per torus dimension the axis moves along (members differing only there). Along
      // one dimension the torus is translation-symmetric, so one BFS from device 0 gives every
      // step of such a ring: consecutive members are dist(0, m1) apart and the closing step
      // dist(m_last, 0).
      std::int64_t dim_stride = 1, covered = 1;
      for (size_t d = 0; d < t.dims.size(); ++d) {
        std::vector<std::int64_t> along;
        for (auto m : members)  // device 0's coordinates everywhere except dimension d
          if (m % dim_stride == 0 && m < dim_stride * t.dims[d]) along.push_back(m);
        if (along.size() > 1) {
          auto dist = [&](std::int64_t a, std::int64_t b) {
            return a < b ? from0[static_cast<size_t>(along[1])] : from0[static_cast<size_t>(a)];
          };
          net.levels.push_back(ring_level(along, dist, t.link_bytes_per_s * eff, t.hop_latency_seconds));
          covered *= static_cast<std::int64_t>(along.size());
        }
        dim_stride *= t.dims[d];
      }
      if (covered != static_cast<std::int64_t>(members.size())) {  // not a product of dimensions: one ring through all members
        net.levels.clear();
        auto dist = [&topo](std::int64_t a, std::int64_t b) { return topo.hops(a, b); };
        net.levels.push_back(ring_level(members, dist, t.link_bytes_per_s * eff, t.hop_latency_seconds));
      }
      net.p2p_bytes_per_s = t.link_bytes_per_s * eff;
      net.p2p_latency_seconds = neighbour_hops * t.hop_latency_seconds;
      if (spanned > 1) {
        add_dcn_level(net, spanned, t, eff);
        if (members.size() == 1) dcn_p2p(net, t, eff);
      }
    } else {
      // Hierarchical: members inside rank 0's island, then one member per island.
      const std::int64_t per = t.devices_per_island;
      std::int64_t inside = 0;
      for (auto m : members) inside += (m / per == 0) ? 1 : 0;
      net.hierarchical = true;
      const double hop2 = 2 * t.island_latency_seconds;
      // a level's collective rate: the measured bus bandwidth when the file gives one
      const double island_bw = t.island_busbw_bytes_per_s > 0 ? t.island_busbw_bytes_per_s : t.island_link_bytes_per_s * eff;
      const double nic_bw = t.network_busbw_bytes_per_s > 0 ? t.network_busbw_bytes_per_s : t.network_bytes_per_s * eff;
      if (inside > 1) net.levels.push_back({inside, island_bw, hop2});
      if (net.size / inside > 1) net.levels.push_back({net.size / inside, nic_bw, 2 * t.network_latency_seconds + hop2});
      if (net.levels.size() == 2) net.ring_bytes_per_s = std::min(island_bw, static_cast<double>(inside) * nic_bw);
      const bool same_island = members[1] / per == 0;
      net.p2p_bytes_per_s = (same_island ? t.island_link_bytes_per_s : t.network_bytes_per_s) * eff;
      net.p2p_latency_seconds = same_island ? hop2 : 2 * t.network_latency_seconds + hop2;
    }
  }
}

}  // namespace scanshard
