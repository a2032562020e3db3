// tests/common/checkpoint_edit.hpp — deliberate damage to a checkpoint file (serial HDF5 C API),
// for the tests that check what resuming from it says: /meta attributes replaced by other values
// or types, objects removed, a tensor rewritten with another dtype or shape.
//
// For: test_cli.cpp (the bad-input corpus's checkpoint fixtures), test_checkpoint.cpp and
// test_train.cpp. Not collective: one process edits, then the test shares the file. Every edit
// leaves the integrity header stale; reseal() (train::seal_checkpoint) makes the CRC match again so
// that the checks behind it are reached. Failures throw std::runtime_error naming the file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace scanshard::testing {

// /meta attribute `name` replaced by a scalar of that type and value.
void set_meta_int(const std::string& file, const std::string& name, std::int64_t value);
void set_meta_uint(const std::string& file, const std::string& name, std::uint64_t value);
void set_meta_float(const std::string& file, const std::string& name, double value);
void set_meta_string(const std::string& file, const std::string& name, const std::string& value);
void delete_meta(const std::string& file, const std::string& name);
// Removes the link `path` ("/optim/adam_v/layer.0/mlp.w1", "/meta", ...).
void delete_object(const std::string& file, const std::string& path);

// float16, float64, big-endian float32, int32: the dataset's values converted to that type.
enum class Dtype { f16, f64, f32be, i32 };
Dtype parse_dtype(const std::string& s);  // "f16", "f64", "f32be", "i32"
void retype_dataset(const std::string& file, const std::string& path, Dtype to);
// The dataset rewritten as float32 of `shape` (zeros).
void reshape_dataset(const std::string& file, const std::string& path, const std::vector<std::uint64_t>& shape);

void reseal(const std::string& file);

}  // namespace scanshard::testing
