// tests/unit/test_checkpoint_dir.cpp — `train --resume DIR`: a checkpoint directory resolves to
// the step file its `latest` pointer names; a missing, malformed or dangling pointer is an error
// naming the directory or the pointer.
#include <catch2/catch.hpp>

#include <fstream>

#include "tests/common/shell.hpp"
#include "program/yaml_reader.hpp"
#include "train/checkpoint_dir.hpp"

using namespace scanshard;

namespace {
void write(const std::filesystem::path& p, const std::string& text) { std::ofstream(p) << text; }
}  // namespace

TEST_CASE("resume from a checkpoint directory reads its latest pointer", "[train][checkpoint]") {
  testing::TempDir t("scanshard-latest-");
  const auto dir = t.path / "ck";
  std::filesystem::create_directories(dir);
  // a file is itself
  write(dir / "step-00000003.h5", "x");
  CHECK(train::resolve_resume_path((dir / "step-00000003.h5").string()) == (dir / "step-00000003.h5").string());
  // a directory without a pointer
  CHECK_THROWS_WITH(train::resolve_resume_path(dir.string()), Catch::Contains("without a `latest` pointer"));
  // the pointer the runner writes, naming step 3
  train::write_latest_pointer(dir.string(), 3);
  CHECK(train::resolve_resume_path(dir.string()) == (dir / "step-00000003.h5").string());
  // an unpadded name written by an older run is read too
  write(dir / "step-7.h5", "x");
  write(dir / "latest", "step-7.h5\n");
  CHECK(train::resolve_resume_path(dir.string()) == (dir / "step-7.h5").string());
  // malformed and dangling pointers
  write(dir / "latest", "../elsewhere/step-1.h5\n");
  CHECK_THROWS_AS(train::resolve_resume_path(dir.string()), ConfigError);
  write(dir / "latest", "notes.txt\n");
  CHECK_THROWS_WITH(train::resolve_resume_path(dir.string()), Catch::Contains("expected one step file name"));
  write(dir / "latest", "step-00000009.h5\n");
  CHECK_THROWS_WITH(train::resolve_resume_path(dir.string()), Catch::Contains("which is not in"));
}
