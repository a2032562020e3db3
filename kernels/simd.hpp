// kernels/simd.hpp — which SIMD instruction set the dispatched kernels run on, and a way to pin
// it (tests run every kernel on every target this CPU supports; benches compare AVX2 with AVX-512).
//
// For: tests, benches, `scanshard calibrate` output. The hand-vectorised kernels (rglru, rwkv4,
// rwkv6) are compiled once per target (Google Highway: SSE4, AVX2, AVX3 on x86; NEON/SVE on Arm)
// and pick the best one the CPU supports at the first call — one binary runs on any x86-64.
// Not for: choosing targets in production code (the best supported target is always right).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace scanshard::kernels::simd {

struct Target {
  std::int64_t bit;  // Highway's target bit (HWY_AVX2, …)
  std::string name;  // Highway's name: "AVX3", "AVX2", "SSE4", "EMU128", …
};

// Targets compiled into the kernels AND supported by this CPU, best first (ignores a pin).
std::vector<Target> targets();
// The target the dispatched kernels use now (the best one, or the pinned one).
std::string current_target();
// Pin the dispatched kernels to one target (a bit from targets()); 0 = back to the best.
void pin_target(std::int64_t bit);
// Pin by name (case-insensitive, e.g. "avx2"); false (nothing changed) if not in targets().
bool pin_target(const std::string& name);

}  // namespace scanshard::kernels::simd
