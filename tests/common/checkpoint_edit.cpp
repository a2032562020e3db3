// tests/common/checkpoint_edit.cpp — see checkpoint_edit.hpp.
#include "tests/common/checkpoint_edit.hpp"

#include <functional>
#include <stdexcept>

#include <hdf5.h>

#include "train/checkpoint.hpp"

namespace scanshard::testing {
namespace {

// An HDF5 identifier closed at scope exit; a negative one throws naming the file and the step.
struct Id {
  hid_t id;
  herr_t (*close)(hid_t);
  Id(hid_t i, herr_t (*c)(hid_t), const std::string& file, const std::string& what) : id(i), close(c) {
    if (id < 0) throw std::runtime_error(file + ": checkpoint edit: " + what + " failed");
  }
  ~Id() {
    if (id >= 0) close(id);
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
};

void check(herr_t rc, const std::string& file, const std::string& what) {
  if (rc < 0) throw std::runtime_error(file + ": checkpoint edit: " + what + " failed");
}

// Runs f on the open file (read-write), with HDF5's error printing off.
void with_file(const std::string& file, const std::function<void(hid_t)>& f) {
  H5E_auto2_t func = nullptr;
  void* data = nullptr;
  H5Eget_auto2(H5E_DEFAULT, &func, &data);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  try {
    const Id h(H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose, file, "open");
    f(h.id);
  } catch (...) {
    H5Eset_auto2(H5E_DEFAULT, func, data);
    throw;
  }
  H5Eset_auto2(H5E_DEFAULT, func, data);
}

// /meta attribute `name` (removed first if present) as a scalar of file type `type`.
void set_meta(const std::string& file, const std::string& name, hid_t type, hid_t mem_type, const void* value) {
  with_file(file, [&](hid_t h) {
    const Id meta(H5Gopen2(h, "/meta", H5P_DEFAULT), H5Gclose, file, "open /meta");
    if (H5Aexists(meta.id, name.c_str()) > 0) check(H5Adelete(meta.id, name.c_str()), file, "delete /meta " + name);
    const Id space(H5Screate(H5S_SCALAR), H5Sclose, file, "scalar space");
    const Id attr(H5Acreate2(meta.id, name.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, file,
                  "create /meta " + name);
    check(H5Awrite(attr.id, mem_type, value), file, "write /meta " + name);
  });
}

// A float16 type (IEEE binary16), which HDF5 1.10 has no predefined name for.
hid_t float16_type() {
  const hid_t t = H5Tcopy(H5T_IEEE_F32LE);
  H5Tset_fields(t, 15, 10, 5, 0, 10);
  H5Tset_precision(t, 16);
  H5Tset_size(t, 2);
  H5Tset_ebias(t, 15);
  return t;
}

// Replaces dataset `path` by one of file type `type` and dimensions `dims` holding `values`
// (float, converted by HDF5).
void rewrite(hid_t h, const std::string& file, const std::string& path, hid_t type, const std::vector<hsize_t>& dims,
             const std::vector<float>& values) {
  check(H5Ldelete(h, path.c_str(), H5P_DEFAULT), file, "delete " + path);
  const Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, file, "space");
  const Id d(H5Dcreate2(h, path.c_str(), type, space.id, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose, file,
             "create " + path);
  check(H5Dwrite(d.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), file, "write " + path);
}

std::vector<hsize_t> dims_of(hid_t d, const std::string& file) {
  const Id space(H5Dget_space(d), H5Sclose, file, "dataspace");
  std::vector<hsize_t> dims(static_cast<std::size_t>(H5Sget_simple_extent_ndims(space.id)));
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  return dims;
}

}  // namespace

void set_meta_int(const std::string& file, const std::string& name, std::int64_t value) {
  set_meta(file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}
void set_meta_uint(const std::string& file, const std::string& name, std::uint64_t value) {
  set_meta(file, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}
void set_meta_float(const std::string& file, const std::string& name, double value) {
  set_meta(file, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}
void set_meta_string(const std::string& file, const std::string& name, const std::string& value) {
  const Id type(H5Tcopy(H5T_C_S1), H5Tclose, file, "string type");
  check(H5Tset_size(type.id, value.empty() ? 1 : value.size()), file, "string size");
  const std::string buf = value.empty() ? std::string(1, '\0') : value;
  set_meta(file, name, type.id, type.id, buf.data());
}

void delete_meta(const std::string& file, const std::string& name) {
  with_file(file, [&](hid_t h) {
    const Id meta(H5Gopen2(h, "/meta", H5P_DEFAULT), H5Gclose, file, "open /meta");
    check(H5Adelete(meta.id, name.c_str()), file, "delete /meta " + name);
  });
}

void delete_object(const std::string& file, const std::string& path) {
  with_file(file, [&](hid_t h) { check(H5Ldelete(h, path.c_str(), H5P_DEFAULT), file, "delete " + path); });
}

Dtype parse_dtype(const std::string& s) {
  if (s == "f16") return Dtype::f16;
  if (s == "f64") return Dtype::f64;
  if (s == "f32be") return Dtype::f32be;
  if (s == "i32") return Dtype::i32;
  throw std::invalid_argument("checkpoint edit: unknown dtype '" + s + "' (f16, f64, f32be, i32)");
}

void retype_dataset(const std::string& file, const std::string& path, Dtype to) {
  with_file(file, [&](hid_t h) {
    std::vector<hsize_t> dims;
    std::vector<float> values;
    {
      const Id d(H5Dopen2(h, path.c_str(), H5P_DEFAULT), H5Dclose, file, "open " + path);
      dims = dims_of(d.id, file);
      hsize_t n = 1;
      for (hsize_t x : dims) n *= x;
      values.resize(n);
      check(H5Dread(d.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), file, "read " + path);
    }
    const Id type(to == Dtype::f16 ? float16_type()
                  : to == Dtype::f64 ? H5Tcopy(H5T_IEEE_F64LE)
                  : to == Dtype::f32be ? H5Tcopy(H5T_IEEE_F32BE)
                                       : H5Tcopy(H5T_STD_I32LE),
                  H5Tclose, file, "type");
    rewrite(h, file, path, type.id, dims, values);
  });
}

void reshape_dataset(const std::string& file, const std::string& path, const std::vector<std::uint64_t>& shape) {
  with_file(file, [&](hid_t h) {
    const std::vector<hsize_t> dims(shape.begin(), shape.end());
    hsize_t n = 1;
    for (hsize_t x : dims) n *= x;
    rewrite(h, file, path, H5T_IEEE_F32LE, dims, std::vector<float>(n, 0.0f));
  });
}

void reseal(const std::string& file) { train::seal_checkpoint(file); }

}  // namespace scanshard::testing
