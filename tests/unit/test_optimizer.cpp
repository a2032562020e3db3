// tests/unit/test_optimizer.cpp — the optimizer section (train/optimizer.hpp): the learning-rate
// schedule against its formula at the points where its pieces meet, the YAML record's round trip,
// the refusals of bad values, and what a changed optimizer is reported as.
#include <catch2/catch.hpp>

#include <cmath>

#include "program/yaml_reader.hpp"
#include "train/optimizer.hpp"

using namespace scanshard;
using train::LrSchedule;

TEST_CASE("optimizer: warm-up then cosine decay, at the points where the pieces meet", "[optimizer]") {
  const LrSchedule constant{};
  for (std::int64_t s : {1, 2, 1000}) CHECK(constant.factor(s) == 1.0);  // exactly: the default changes nothing
  const LrSchedule s{10, 110, 0.1};  // w = 10, D = 110, r = 0.1
  CHECK(s.factor(1) == Approx(1.0 / 10));   // s / w
  CHECK(s.factor(5) == Approx(5.0 / 10));
  CHECK(s.factor(10) == Approx(1.0));       // the end of the warm-up is the peak
  CHECK(s.factor(11) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 1 / 100))));
  CHECK(s.factor(60) == Approx(0.1 + 0.9 * 0.5));  // half-way through the decay: cos(π/2) = 0
  CHECK(s.factor(110) == Approx(0.1));      // the end of the decay: r
  CHECK(s.factor(500) == Approx(0.1));      // and constant after
  const LrSchedule decay_only{0, 100, 0};
  CHECK(decay_only.factor(1) == Approx(0.5 * (1 + std::cos(M_PI * 1 / 100))));
  CHECK(decay_only.factor(100) == 0.0);
}

TEST_CASE("optimizer: the /meta record reads back as the same optimizer, defaults sourced", "[optimizer]") {
  const auto d = train::parse_optimizer("{}", "t.yaml");  // no section: the defaults
  CHECK(d.adamw.beta1 == 0.9f);   // GPT-3 appendix B
  CHECK(d.adamw.beta2 == 0.95f);
  CHECK(d.adamw.eps == 1e-8f);
  CHECK(d.adamw.weight_decay == 0.1f);
  CHECK(d.adamw.max_grad_norm == 1.0f);
  CHECK(d.schedule.factor(7) == 1.0);
  const auto c = train::parse_optimizer(
      "optimizer:\n  lr: 3.0e-4\n  beta2: 0.999\n  eps: 1.0e-6\n  warmup_steps: 20\n  decay_steps: 200\n  min_lr_ratio: 0.05\n",
      "t.yaml");
  CHECK(c.adamw.lr == 3.0e-4f);
  CHECK(c.schedule.warmup_steps == 20);
  const auto back = train::parse_optimizer(c.to_yaml(), "record");
  CHECK(train::optimizer_changes(c, back).empty());
  CHECK(train::optimizer_changes(d, c) ==
        "lr 0.001 → 0.0003, beta2 0.95 → 0.999, eps 1e-08 → 1e-06, warmup_steps 0 → 20, decay_steps 0 → 200, "
        "min_lr_ratio 0.1 → 0.05");
  CHECK_THAT(c.describe(), Catch::Contains("linear warm-up over 20 step(s), then cosine decay to 0.05 x lr at step 200"));
}

TEST_CASE("optimizer: bad values are refused with the key and the allowed range", "[optimizer]") {
  struct Bad {
    const char* yaml;
    const char* says;
  };
  for (const Bad& b : {Bad{"optimizer:\n  lr: 0\n", "lr: 0 is outside (0, inf)"},
                       Bad{"optimizer:\n  beta1: 1\n", "beta1: 1 is outside [0, 1)"},
                       Bad{"optimizer:\n  weight_decay: -0.1\n", "weight_decay: -0.1 is outside [0, inf)"},
                       Bad{"optimizer:\n  warmup_steps: 10\n  decay_steps: 10\n", "decay_steps: 10 must be after warmup_steps (10)"},
                       Bad{"optimizer:\n  min_lr_ratio: 2\n", "min_lr_ratio: 2 is outside [0, 1]"},
                       Bad{"optimizer:\n  learning_rate: 0.1\n", "learning_rate"}}) {
    INFO(b.yaml);
    CHECK_THROWS_WITH(train::parse_optimizer(b.yaml, "t.yaml"), Catch::Contains(b.says));
  }
}
