// tests/kernels/test_rwkv_model.cpp — whole tiny RWKV-4 and RWKV-6 models (presets rwkv4-tiny,
// rwkv6-tiny; shapes from program/'s parameter_tensors()), composed in rwkv_tiny_model.hpp:
//  1. gradient check: for sampled entries of EVERY parameter tensor, the double reference model's
//     backward == central finite differences of its loss; the float fast model's loss and whole
//     gradient == the double reference's;
//  2. training: AdamW (fast kernels) on a small repeated corpus drives the loss from ≈ ln 256
//     to well below 1.
#include "helpers.hpp"
#include "kernels/adamw.hpp"
#include "program/presets.hpp"
#include "rwkv_tiny_model.hpp"

namespace k = scanshard::kernels;
using kt::i64;

namespace {

void gradient_check(const std::string& preset) {
  const auto spec = scanshard::load_model(preset);
  const kt::Layout lay(spec);
  const i64 B = 2, T = 7;
  const auto pf = kt::init_rwkv_params(lay, 7);
  auto pd = kt::to_d(pf);
  std::mt19937 g(8);
  std::vector<std::int32_t> tok(B * T), tgt(B * T);
  for (auto& t : tok) t = std::int32_t(g() % spec.vocab);
  for (auto& t : tgt) t = std::int32_t(g() % spec.vocab);

  kt::RwkvModel<double, kt::RwkvRefOps> ref(spec, lay, B, T);
  kt::RwkvModel<float, kt::RwkvFastOps> fast(spec, lay, B, T);
  const double loss_ref = ref.forward(pd.data(), tok, tgt);
  const float loss_fast = fast.forward(pf.data(), tok, tgt);
  CHECK(std::fabs(loss_fast - loss_ref) < 1e-4 * loss_ref);
  CHECK(std::fabs(loss_ref - std::log(double(spec.vocab))) < 2.0);  // untrained: near ln V

  std::vector<double> gd(lay.total, 0.0);
  std::vector<float> gf(lay.total, 0.0f);
  ref.backward(gd.data());
  fast.backward(gf.data());

  kt::RwkvModel<double, kt::RwkvRefOps> probe(spec, lay, B, T);
  auto loss = [&] { return probe.forward(pd.data(), tok, tgt); };
  for (size_t i = 0; i < lay.tensors.size(); ++i) {
    const auto& t = lay.tensors[i];
    const i64 off = lay.offset[i], n = t.count();
    INFO(preset << " " << t.block << "/" << t.name);
    double gmax = 0;
    i64 jmax = 0;
    for (i64 j = 0; j < n; ++j)
      if (std::fabs(gd[off + j]) > gmax) { gmax = std::fabs(gd[off + j]); jmax = j; }
    REQUIRE(gmax > 0);  // every tensor receives a gradient
    // sampled entries: first, last, 2 random, and the largest-gradient entry
    std::vector<i64> idx = kt::sample_indices(n, 4, unsigned(100 + i));
    idx.push_back(jmax);
    for (i64 j : idx) {
      const double x0 = pd[off + j], h = 1e-5;
      pd[off + j] = x0 + h;
      const double lp = loss();
      pd[off + j] = x0 - h;
      const double lm = loss();
      pd[off + j] = x0;
      const double fd = (lp - lm) / (2 * h);
      INFO("entry " << j << " fd " << fd << " ref " << gd[off + j] << " fast " << gf[off + j]);
      CHECK(std::fabs(gd[off + j] - fd) <= 1e-7 + 1e-5 * std::fabs(fd) + 1e-6 * gmax);
    }
    // fast float gradient == double reference gradient over the whole tensor
    std::vector<double> a(gf.begin() + off, gf.begin() + off + n), e(gd.begin() + off, gd.begin() + off + n);
    KT_CHECK_CLOSE(a, e, 1e-3 * gmax + 1e-9, 1e-2);
  }
}

void train(const std::string& preset) {
  const auto spec = scanshard::load_model(preset);
  const kt::Layout lay(spec);
  const i64 B = 2, T = 24;
  const std::string text = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs. ";
  std::string corpus;
  while (corpus.size() < 4000) corpus += text;
  auto p = kt::init_rwkv_params(lay, 11);
  std::vector<float> grad(lay.total), m(lay.total, 0.0f), v(lay.total, 0.0f);
  k::AdamW opt;
  opt.lr = 3e-3f; opt.beta1 = 0.9f; opt.beta2 = 0.99f; opt.weight_decay = 0.01f; opt.max_grad_norm = 1.0f;
  kt::RwkvModel<float, kt::RwkvFastOps> model(spec, lay, B, T);
  std::mt19937 g(12);
  std::vector<std::int32_t> tok(B * T), tgt(B * T);
  double first = 0, last = 0;
  for (i64 step = 1; step <= 200; ++step) {
    for (i64 b = 0; b < B; ++b) {
      const size_t s = g() % (corpus.size() - T - 1);
      for (i64 t = 0; t < T; ++t) {
        tok[b * T + t] = static_cast<unsigned char>(corpus[s + t]);
        tgt[b * T + t] = static_cast<unsigned char>(corpus[s + t + 1]);
      }
    }
    const float loss = model.forward(p.data(), tok, tgt);
    REQUIRE(std::isfinite(loss));
    if (step == 1) first = loss;
    if (step > 190) last += loss / 10.0;
    std::fill(grad.begin(), grad.end(), 0.0f);
    model.backward(grad.data());
    const float cs = k::clip_scale(k::sum_squares(grad.data(), lay.total), opt.max_grad_norm);
    for (size_t i = 0; i < lay.tensors.size(); ++i) {
      const i64 off = lay.offset[i], n = lay.tensors[i].count();
      const float wd = lay.tensors[i].shape.size() >= 2 ? opt.weight_decay : 0.0f;  // no decay on vectors
      k::fast::adamw_update(p.data() + off, m.data() + off, v.data() + off, grad.data() + off, n, step, opt, wd, cs);
    }
  }
  INFO(preset << ": loss at step 1 " << first << ", mean of steps 191-200 " << last);
  CHECK(first > 4.0);  // ≈ ln 256 = 5.55 at init
  CHECK(last < 1.0);   // the repeated corpus is learned
  CHECK(last < 0.2 * first);
}

}  // namespace

TEST_CASE("tiny RWKV4 gradients of every parameter tensor match finite differences", "[model][rwkv4]") {
  gradient_check("rwkv4-tiny");
}
TEST_CASE("tiny RWKV6 gradients of every parameter tensor match finite differences", "[model][rwkv6]") {
  gradient_check("rwkv6-tiny");
}
TEST_CASE("tiny RWKV4 trains with AdamW on a repeated corpus", "[model][train][rwkv4]") { train("rwkv4-tiny"); }
TEST_CASE("tiny RWKV6 trains with AdamW on a repeated corpus", "[model][train][rwkv6]") { train("rwkv6-tiny"); }
