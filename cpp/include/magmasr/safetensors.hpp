// Weight files in the safetensors format (https://github.com/huggingface/safetensors), the format the Python
// package writes (magmasr.weights.save) and ships (python/magmasr/weights_data/*.safetensors).
//
// Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v", ..}}
// (possibly padded with trailing spaces), then the raw little-endian data; offsets count from the end of the
// header and the tensors must cover the data section exactly (no gaps, no overlaps).
//
// magmasr reads and writes F32 tensors of rank 1 to 5 with every dimension >= 1 (what a Tensor holds). Valid
// files magmasr cannot hold are refused with a message: another dtype is a TypeError; a scalar (shape []), a
// rank above 5 or a zero-size dimension is a ValueError. A malformed file is a ValueError that names the file
// and what is wrong; a file that cannot be opened, read or written is a FileError (Python: OSError).
#pragma once

#include <map>
#include <string>

#include "magmasr/tensor.hpp"

namespace magmasr {

struct TensorFile {
  std::map<std::string, Tensor> tensors;        // on the host
  std::map<std::string, std::string> metadata;  // "__metadata__" (empty when the file has none)
};

/// Reads a whole safetensors file; every tensor is a new CPU tensor.
TensorFile load_safetensors(const std::string& path);

/// Writes `tensors` (names sorted, CUDA tensors copied to the host) and `metadata` atomically: a temporary file in
/// the same folder is written, flushed to disk and renamed over `path`, so a reader never sees a half-written
/// file; on failure the temporary file is removed and an existing `path` is left as it was. The header is padded
/// with spaces to a multiple of 8 bytes, so the data starts 8-byte aligned (each F32 tensor 4-byte aligned).
/// ValueError for an empty name, the name "__metadata__", an undefined tensor or a string that is not UTF-8.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace magmasr
