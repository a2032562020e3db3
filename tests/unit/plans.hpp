// tests/unit/plans.hpp — plans the unit tests build by hand.
#pragma once
#include <cstdint>

#include "program/plan.hpp"

namespace scanshard::test {

// One device, one micro-batch of `batch` sequences of `seq` tokens, every other choice default.
inline Plan single_device(std::int64_t batch, std::int64_t seq) {
  Plan p;
  p.global_batch = batch;
  p.micro_batch = batch;
  p.seq_len = seq;
  return p;
}

}  // namespace scanshard::test
