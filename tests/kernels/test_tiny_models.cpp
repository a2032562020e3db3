// tests/kernels/test_tiny_models.cpp — whole tiny Griffin, Hawk, MQA and transformer models (presets
// griffin-tiny, hawk-tiny, mqa-tiny, transformer-tiny, gpt-tiny; shapes from program/'s parameter_tensors()):
//  1. gradient check: for sampled entries of EVERY parameter tensor, the double reference model's
//     backward == central finite differences of its loss, and the float fast model's gradient ==
//     the double reference gradient (fast loss == reference loss too);
//  2. training: 200 AdamW steps (fast kernels) on a small repeated corpus drive the loss from
//     ≈ ln 256 to well below 1.
#include "helpers.hpp"
#include "kernels/adamw.hpp"
#include "program/presets.hpp"
#include "tiny_model.hpp"

namespace k = scanshard::kernels;
using kt::i64;

namespace {

void gradient_check(const std::string& preset) {
  const auto spec = scanshard::load_model(preset);
  const kt::Layout lay(spec);
  const i64 B = 2, T = 9;
  const auto pf = kt::init_params(lay, 7);
  auto pd = kt::to_d(pf);
  std::mt19937 g(8);
  std::vector<std::int32_t> tok(B * T), tgt(B * T);
  for (auto& t : tok) t = std::int32_t(g() % spec.vocab);
  for (auto& t : tgt) t = std::int32_t(g() % spec.vocab);
  std::vector<std::uint8_t> reset(B * T, 0);
  reset[0] = reset[T] = 1;
  reset[T + 5] = 1;  // a document starts inside the second row

  kt::Model<double, kt::RefOps> ref(spec, lay, B, T);
  kt::Model<float, kt::FastOps> fast(spec, lay, B, T);
  const double loss_ref = ref.forward(pd.data(), tok, tgt, reset);
  const float loss_fast = fast.forward(pf.data(), tok, tgt, reset);
  CHECK(std::fabs(loss_fast - loss_ref) < 1e-4 * loss_ref);
  CHECK(std::fabs(loss_ref - std::log(double(spec.vocab))) < 1.5);  // untrained: near ln V

  std::vector<double> gd(lay.total, 0.0);
  std::vector<float> gf(lay.total, 0.0f);
  ref.backward(pd.data(), gd.data());
  fast.backward(pf.data(), gf.data());

  kt::Model<double, kt::RefOps> probe(spec, lay, B, T);
  auto loss = [&] { return probe.forward(pd.data(), tok, tgt, reset); };
  for (size_t i = 0; i < lay.tensors.size(); ++i) {
    const auto& t = lay.tensors[i];
    const i64 off = lay.offset[i], n = t.count();
    INFO(preset << " " << t.block << "/" << t.name);
    // sampled entries: 4 per tensor (first, last, 2 random)
    std::vector<i64> idx = kt::sample_indices(n, 4, unsigned(100 + i));
    double gmax = 0;
    for (i64 j = 0; j < n; ++j) gmax = std::max(gmax, std::fabs(gd[off + j]));
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
  auto p = kt::init_params(lay, 11);
  std::vector<float> grad(lay.total), m(lay.total, 0.0f), v(lay.total, 0.0f);
  k::AdamW opt;
  opt.lr = 3e-3f; opt.beta1 = 0.9f; opt.beta2 = 0.99f; opt.weight_decay = 0.01f; opt.max_grad_norm = 1.0f;
  kt::Model<float, kt::FastOps> model(spec, lay, B, T);
  std::mt19937 g(12);
  std::vector<std::int32_t> tok(B * T), tgt(B * T);
  std::vector<std::uint8_t> reset(B * T, 0);
  reset[0] = reset[T] = 1;
  double first = 0, last = 0;
  for (i64 step = 1; step <= 200; ++step) {
    for (i64 b = 0; b < B; ++b) {
      const size_t s = g() % (corpus.size() - T - 1);
      for (i64 t = 0; t < T; ++t) {
        tok[b * T + t] = static_cast<unsigned char>(corpus[s + t]);
        tgt[b * T + t] = static_cast<unsigned char>(corpus[s + t + 1]);
      }
    }
    const float loss = model.forward(p.data(), tok, tgt, reset);
    REQUIRE(std::isfinite(loss));
    if (step == 1) first = loss;
    if (step > 190) last += loss / 10.0;
    std::fill(grad.begin(), grad.end(), 0.0f);
    model.backward(p.data(), grad.data());
    const float cs = k::clip_scale(k::sum_squares(grad.data(), lay.total), opt.max_grad_norm);
    for (size_t i = 0; i < lay.tensors.size(); ++i) {
      const i64 off = lay.offset[i], n = lay.tensors[i].count();
      const float wd = lay.tensors[i].shape.size() >= 2 ? opt.weight_decay : 0.0f;  // no decay on vectors
      k::fast::adamw_update(p.data() + off, m.data() + off, v.data() + off, grad.data() + off, n, step, opt, wd, cs);
    }
  }
  INFO(preset << ": loss at step 1 " << first << ", mean of steps 191-200 " << last);
  CHECK(first > 4.0);          // ≈ ln 256 = 5.55 at init
  CHECK(last < 1.0);           // the repeated corpus is learned
  CHECK(last < 0.2 * first);
}

}  // namespace

TEST_CASE("tiny Griffin gradients of every parameter tensor match finite differences", "[model]") { gradient_check("griffin-tiny"); }
TEST_CASE("tiny Hawk gradients of every parameter tensor match finite differences", "[model]") { gradient_check("hawk-tiny"); }
TEST_CASE("tiny MQA gradients of every parameter tensor match finite differences", "[model]") { gradient_check("mqa-tiny"); }
// The transformer family: rotary / RMSNorm / SwiGLU / no biases (transformer-tiny) and learned
// positions / LayerNorm / GeLU MLP / biases on every linear (gpt-tiny); both grouped-query.
TEST_CASE("tiny transformer gradients of every parameter tensor match finite differences", "[model][transformer]") {
  gradient_check("transformer-tiny");
}
TEST_CASE("tiny GPT gradients of every parameter tensor match finite differences", "[model][transformer]") {
  gradient_check("gpt-tiny");
}
// PaLM's parallel block (palm-tiny: one LayerNorm feeds attention and MLP, multi-query, no biases).
TEST_CASE("tiny PaLM-block gradients of every parameter tensor match finite differences", "[model][transformer]") {
  gradient_check("palm-tiny");
}
TEST_CASE("tiny Griffin trains with AdamW on a repeated corpus", "[model][train]") { train("griffin-tiny"); }
TEST_CASE("tiny Hawk trains with AdamW on a repeated corpus", "[model][train]") { train("hawk-tiny"); }
TEST_CASE("tiny MQA trains with AdamW on a repeated corpus", "[model][train]") { train("mqa-tiny"); }
