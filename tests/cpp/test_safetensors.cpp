// Weight files (safetensors), Sequential::state_dict / load_state_dict, and the bicubic imresize table.
// The malformed files are written byte by byte here; tests/python/test_cpp_weights.py cross-checks the reader and
// the writer with the independent `safetensors` package and the table with magmasr.image.contributions.
#include <gtest/gtest.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "magmasr/magmasr.hpp"

using namespace magmasr;

namespace {

// A fresh folder per test under GoogleTest's temporary directory.
std::string fresh_dir() {
  static int counter = 0;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string dir = ::testing::TempDir() + "magmasr_st_" + std::to_string(::getpid()) + "_" + info->name() +
                          "_" + std::to_string(counter++);
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) out.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int k = 0; k < 8; ++k) s[size_t(k)] = char((n >> (8 * k)) & 0xFF);
  return s;
}

// A safetensors file: the header length, the header, then `data`.
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

// The message of the exception of type E that f throws (a test failure when it throws nothing or another type).
template <typename E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "no exception";
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

Tensor random_tensor(const Shape& s, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-3.0f, 3.0f);
  std::vector<float> v(size_t(shape_numel(s)));
  for (float& x : v) x = d(rng);
  return Tensor::from_vector(v, s);
}

bool same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  const auto va = a.to_vector(), vb = b.to_vector();
  return std::memcmp(va.data(), vb.data(), va.size() * sizeof(float)) == 0;
}

// conv1 (1->6, 5x5) relu1 conv2 (6->1, 3x3), 'same' output with replicate borders.
std::shared_ptr<Sequential> small_srcnn(uint64_t seed) {
  auto conv = [seed](int64_t cin, int64_t cout, int64_t k, uint64_t offset) {
    return std::make_shared<Conv2d>(cin, cout, std::vector<int64_t>{k}, std::vector<int64_t>{k / 2},
                                    PadMode::Replicate, true, seed + offset);
  };
  auto m = std::make_shared<Sequential>();
  m->add(conv(1, 6, 5, 0), "conv1").add(std::make_shared<ReLU>(), "relu1").add(conv(6, 1, 3, 1), "conv2");
  return m;
}

const std::string kEntry4 = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";  // one float at 0

}  // namespace

// ------------------------------------------------------------------------------------------- round trip

TEST(Safetensors, RoundTripRandomTensorsAndMetadata) {
  const std::string dir = fresh_dir(), path = dir + "/w.safetensors";
  std::mt19937 rng(7);
  for (int trial = 0; trial < 5; ++trial) {
    std::map<std::string, Tensor> tensors;
    const int n = 1 + int(rng() % 6);
    for (int i = 0; i < n; ++i) {
      Shape s(1 + rng() % 5);
      for (auto& d : s) d = 1 + int64_t(rng() % 4);
      tensors["t" + std::to_string(rng() % 1000) + ".w"] = random_tensor(s, rng);
    }
    const std::map<std::string, std::string> meta{
        {"quote\"back\\slash", "tab\tnewline\nbell\x07"},
        {"unicode", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},  // été € 😀
        {"scale", std::to_string(trial)},
        {"empty", ""}};
    save_safetensors(path, tensors, meta);
    const TensorFile f = load_safetensors(path);
    EXPECT_EQ(f.metadata, meta);
    ASSERT_EQ(f.tensors.size(), tensors.size());
    for (const auto& [name, t] : tensors) {
      ASSERT_TRUE(f.tensors.count(name)) << name;
      EXPECT_TRUE(same_bits(f.tensors.at(name), t)) << name;
      EXPECT_TRUE(f.tensors.at(name).device().is_cpu());
    }
    // The data starts 8-byte aligned; no temporary file is left behind.
    const std::string bytes = read_bytes(path);
    uint64_t n_header = 0;
    for (int k = 7; k >= 0; --k) n_header = (n_header << 8) | static_cast<unsigned char>(bytes[size_t(k)]);
    EXPECT_EQ(n_header % 8, 0u);
    EXPECT_EQ(list_dir(dir), std::vector<std::string>{"w.safetensors"});
  }
}

TEST(Safetensors, SavesNamesSortedAndMetadataOptional) {
  const std::string dir = fresh_dir(), path = dir + "/w.safetensors";
  std::mt19937 rng(3);
  save_safetensors(path, {{"b", random_tensor({2}, rng)}, {"a", random_tensor({3}, rng)}, {"c", random_tensor({1}, rng)}});
  const std::string bytes = read_bytes(path);
  const size_t a = bytes.find("\"a\""), b = bytes.find("\"b\""), c = bytes.find("\"c\"");
  ASSERT_NE(a, std::string::npos);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(bytes.find("__metadata__"), std::string::npos);
  uint64_t n_header = 0;
  for (int k = 7; k >= 0; --k) n_header = (n_header << 8) | static_cast<unsigned char>(bytes[size_t(k)]);
  EXPECT_EQ(bytes.size(), 8 + n_header + 6 * sizeof(float));  // the data: exactly the 6 floats
  const TensorFile f = load_safetensors(path);
  EXPECT_TRUE(f.metadata.empty());
  EXPECT_EQ(f.tensors.at("a").shape(), Shape{3});
}

TEST(Safetensors, ReadsEscapesOfOtherWriters) {
  const std::string dir = fresh_dir(), path = dir + "/w.safetensors";
  // \u escapes (a surrogate pair for U+1F600), escaped / and control characters, whitespace, trailing padding.
  const std::string header =
      "{ \"__metadata__\" : { \"k\\u00e9\" : \"a\\\"b\\\\c\\/d\\u00e9\\ud83d\\ude00\\n\\t\\b\\f\\r\" } ,\n"
      "  \"x\" : " + kEntry4 + " }   ";
  float v = 1.5f;
  write_bytes(path, st_file(header, std::string(reinterpret_cast<const char*>(&v), 4)));
  const TensorFile f = load_safetensors(path);
  EXPECT_EQ(f.metadata.at("k\xc3\xa9"), "a\"b\\c/d\xc3\xa9\xf0\x9f\x98\x80\n\t\b\f\r");
  EXPECT_EQ(f.tensors.at("x").to_vector(), std::vector<float>{1.5f});
}

TEST(Safetensors, NoTensorsIsAValidFile) {
  const std::string dir = fresh_dir(), path = dir + "/m.safetensors";
  save_safetensors(path, {}, {{"k", "v"}});
  const TensorFile f = load_safetensors(path);
  EXPECT_TRUE(f.tensors.empty());
  EXPECT_EQ(f.metadata.at("k"), "v");
}

// ------------------------------------------------------------------------------------------ bad files

struct BadFile {
  const char* what;
  std::string bytes;
  const char* message;  // a part of the ValueError's message
};

TEST(Safetensors, MalformedFilesAreValueErrorsThatSayWhy) {
  const std::string f4(4, '\0'), f8(8, '\0'), f12(12, '\0');
  auto entry = [](const std::string& shape, uint64_t b, uint64_t e) {
    return "{\"dtype\":\"F32\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(b) + "," +
           std::to_string(e) + "]}";
  };
  const std::vector<BadFile> cases = {
      {"shorter than 8 bytes", std::string(5, '\0'), "fewer than the 8-byte header length"},
      {"empty file", "", "fewer than the 8-byte header length"},
      {"header length beyond the file", le64(1000) + "{}", "runs past the end of the file"},
      {"header length 2^63", le64(uint64_t(1) << 63) + "{}", "runs past the end of the file"},
      {"truncated JSON", st_file("{\"a\": ", ""), "invalid safetensors header"},
      {"not an object", st_file("[]", ""), "expected a JSON object"},
      {"data after the JSON", st_file("{} x", ""), "unexpected data after the JSON object"},
      {"a float", st_file("{\"a\":" + entry("[1.5]", 0, 4) + "}", f4), "fractional or exponent"},
      {"an exponent", st_file("{\"a\":" + entry("[1e0]", 0, 4) + "}", f4), "fractional or exponent"},
      {"a literal", st_file("{\"a\":true}", ""), "true, false and null"},
      {"null", st_file("{\"a\":null}", ""), "true, false and null"},
      {"leading zero", st_file("{\"a\":" + entry("[01]", 0, 4) + "}", f4), "leading zero"},
      {"64-bit overflow", st_file("{\"a\":" + entry("[99999999999999999999]", 0, 4) + "}", f4), "too large for 64"},
      {"unknown escape", st_file("{\"a\\q\":" + kEntry4 + "}", f4), "unknown escape"},
      {"lone low surrogate", st_file("{\"a\\udc00\":" + kEntry4 + "}", f4), "lone low surrogate"},
      {"unpaired high surrogate", st_file("{\"a\\ud83dx\":" + kEntry4 + "}", f4), "not followed by a low one"},
      {"bad hex digit", st_file("{\"a\\u00g0\":" + kEntry4 + "}", f4), "not a hexadecimal digit"},
      {"invalid UTF-8", st_file("{\"a\xff\":" + kEntry4 + "}", f4), "not valid UTF-8"},
      {"overlong UTF-8", st_file("{\"a\xc0\xaf\":" + kEntry4 + "}", f4), "not valid UTF-8"},
      {"raw control character", st_file("{\"a\nb\":" + kEntry4 + "}", f4), "control character"},
      {"unterminated string", st_file("{\"abc", ""), "unterminated string"},
      {"deep nesting", st_file(std::string(100, '['), ""), "nested deeper"},
      {"duplicate names", st_file("{\"a\":" + kEntry4 + ",\"a\":" + kEntry4 + "}", f4), "duplicate name 'a'"},
      {"entry not an object", st_file("{\"a\":[1]}", ""), "expected an object"},
      {"missing shape", st_file("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", f4), "missing field 'shape'"},
      {"missing dtype", st_file("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", f4), "missing field 'dtype'"},
      {"missing offsets", st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", f4), "missing field 'data_offsets'"},
      {"extra field", st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", f4),
       "unexpected field 'x'"},
      {"dtype not a string", st_file("{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", f4),
       "dtype must be a string"},
      {"shape not an array", st_file("{\"a\":" + entry("1", 0, 4) + "}", f4), "shape must be an array"},
      {"negative dimension", st_file("{\"a\":" + entry("[-1]", 0, 4) + "}", f4), "shape entries must be integers >= 0"},
      {"three offsets", st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", f4),
       "data_offsets must be an array [begin, end]"},
      {"negative offset", st_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", f4),
       "data_offsets must be integers >= 0"},
      {"shape product vs bytes", st_file("{\"a\":" + entry("[2]", 0, 4) + "}", f4), "needs 8 bytes"},
      {"shape product overflow", st_file("{\"a\":" + entry("[4294967296,4294967296,16]", 0, 4) + "}", f4),
       "more than 2^64"},
      {"offsets past the data", st_file("{\"a\":" + entry("[2]", 0, 8) + "}", f4), "run past the data section"},
      {"offsets reversed", st_file("{\"a\":" + entry("[1]", 4, 0) + "}", f4), "end before they begin"},
      {"overlap", st_file("{\"a\":" + entry("[2]", 0, 8) + ",\"b\":" + entry("[2]", 4, 12) + "}", f12), "overlap"},
      {"same range twice", st_file("{\"a\":" + entry("[1]", 0, 4) + ",\"b\":" + entry("[1]", 0, 4) + "}", f4),
       "overlap"},
      {"gap", st_file("{\"a\":" + entry("[1]", 0, 4) + ",\"b\":" + entry("[1]", 8, 12) + "}", f12),
       "bytes [4, 8) of the data section belong to no tensor"},
      {"gap at the start", st_file("{\"a\":" + entry("[1]", 4, 8) + "}", f8), "bytes [0, 4) of the data section"},
      {"data beyond the tensors", st_file("{\"a\":" + kEntry4 + "}", f8), "at the end of the data section"},
      {"data without tensors", st_file("{}", f4), "at the end of the data section"},
      {"rank 6", st_file("{\"a\":" + entry("[1,1,1,1,1,1]", 0, 4) + "}", f4), "rank 6 cannot be held"},
      {"scalar", st_file("{\"a\":" + entry("[]", 0, 4) + "}", f4), "a scalar (shape []) cannot be held"},
      {"zero-size dimension", st_file("{\"a\":" + entry("[0,3]", 0, 0) + "}", ""), "zero-size dimension"},
      {"metadata not an object", st_file("{\"__metadata__\":[]}", ""), "__metadata__ must be an object"},
      {"metadata value not a string", st_file("{\"__metadata__\":{\"k\":1}}", ""), "'k' must be a string"},
  };
  const std::string dir = fresh_dir();
  int i = 0;
  for (const BadFile& c : cases) {
    const std::string path = dir + "/bad" + std::to_string(i++) + ".safetensors";
    write_bytes(path, c.bytes);
    const std::string msg = error_of<ValueError>([&] { load_safetensors(path); });
    EXPECT_TRUE(contains(msg, path)) << c.what << ": the message does not name the file: " << msg;
    EXPECT_TRUE(contains(msg, c.message)) << c.what << ": expected '" << c.message << "' in: " << msg;
  }
}

TEST(Safetensors, OtherDtypesAreTypeErrorsNamingTensorAndDtype) {
  const std::string dir = fresh_dir(), path = dir + "/h.safetensors";
  write_bytes(path, st_file(R"({"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')));
  const std::string msg = error_of<TypeError>([&] { load_safetensors(path); });
  EXPECT_TRUE(contains(msg, "'w'") && contains(msg, "F16") && contains(msg, path)) << msg;
}

TEST(Safetensors, MissingFileIsAFileErrorWithErrno) {
  const std::string path = fresh_dir() + "/none.safetensors";
  try {
    load_safetensors(path);
    ADD_FAILURE() << "no exception";
  } catch (const FileError& e) {
    EXPECT_EQ(e.code(), ENOENT);
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
}

// ------------------------------------------------------------------------------------- atomic writes

TEST(Safetensors, SaveReplacesAtomicallyAndCleansUpOnFailure) {
  const std::string dir = fresh_dir(), path = dir + "/w.safetensors";
  std::mt19937 rng(5);
  const Tensor t1 = random_tensor({2, 3}, rng);
  save_safetensors(path, {{"a", t1}});
  const std::string before = read_bytes(path);

  // Refused before anything is written: the old file stays, no temporary file appears.
  EXPECT_TRUE(contains(error_of<ValueError>([&] { save_safetensors(path, {{"", t1}}); }), "invalid tensor name"));
  EXPECT_TRUE(contains(error_of<ValueError>([&] { save_safetensors(path, {{"__metadata__", t1}}); }),
                       "invalid tensor name"));
  EXPECT_TRUE(contains(error_of<ValueError>([&] { save_safetensors(path, {{"u", Tensor()}}); }), "undefined"));
  EXPECT_TRUE(contains(error_of<ValueError>([&] { save_safetensors(path, {{"a", t1}}, {{"k", "\xff"}}); }),
                       "not valid UTF-8"));
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"w.safetensors"});

  // A failure after the temporary file was written (the rename onto a folder): the temporary file is removed.
  const std::string folder = dir + "/sub";
  ::mkdir(folder.c_str(), 0755);
  EXPECT_THROW(save_safetensors(folder, {{"a", t1}}), FileError);
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"sub", "w.safetensors"}));
  EXPECT_TRUE(list_dir(folder).empty());
  // No such folder.
  EXPECT_THROW(save_safetensors(dir + "/nope/w.safetensors", {{"a", t1}}), FileError);

  // Replacing the file.
  const Tensor t2 = random_tensor({4}, rng);
  save_safetensors(path, {{"b", t2}});
  const TensorFile f = load_safetensors(path);
  EXPECT_EQ(f.tensors.size(), 1u);
  EXPECT_TRUE(same_bits(f.tensors.at("b"), t2));
}

TEST(AtomicFile, CommitReplacesTheFileWithWhatWasWritten) {
  const std::string dir = fresh_dir(), path = dir + "/out.bin";
  write_bytes(path, "old contents");
  std::mt19937 rng(11);
  std::string payload(100000 + rng() % 1000, '\0');
  for (char& c : payload) c = char(rng());
  {
    AtomicFile f(path);
    EXPECT_EQ(f.temp_path().find(dir + "/.out.bin."), 0u);
    f.write(payload.data(), 7);
    f.write(payload.substr(7));
    // Until commit() a reader still sees the old file; the new bytes are in the temporary file beside it.
    EXPECT_EQ(read_bytes(path), "old contents");
    EXPECT_EQ(list_dir(dir).size(), 2u);
    f.commit();
    EXPECT_THROW(f.write("x"), ValueError);
    EXPECT_THROW(f.commit(), ValueError);
  }
  EXPECT_EQ(read_bytes(path), payload);
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFile, WithoutCommitNothingChangesAndTwoWritersNeverShareATemporaryFile) {
  const std::string dir = fresh_dir(), path = dir + "/out.bin";
  write_bytes(path, "kept");
  try {
    AtomicFile a(path), b(path);
    EXPECT_NE(a.temp_path(), b.temp_path());
    a.write("half a file");
    b.write("another");
    throw std::runtime_error("failure while writing");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(read_bytes(path), "kept");
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out.bin"});
  // A new file that is never committed leaves nothing behind.
  { AtomicFile c(dir + "/new.bin"); c.write("x"); }
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out.bin"});
}

TEST(AtomicFile, FailuresAreFileErrorsNamingThePath) {
  const std::string dir = fresh_dir();
  try {
    AtomicFile f(dir + "/no/such/folder/out.bin");
    ADD_FAILURE() << "no error for a missing folder";
  } catch (const FileError& e) {
    EXPECT_TRUE(contains(e.what(), dir + "/no/such/folder/")) << e.what();
    EXPECT_EQ(e.code(), ENOENT);
  }
  const std::string folder = dir + "/sub";  // renaming a file onto a folder fails at commit()
  ::mkdir(folder.c_str(), 0755);
  {
    AtomicFile f(folder);
    f.write("x");
    EXPECT_THROW(f.commit(), FileError);
  }
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"sub"});
  EXPECT_THROW(AtomicFile(""), ValueError);
}

// ---------------------------------------------------------------------------------------- state dicts

TEST(StateDict, NamesShapesAndSharing) {
  auto m = small_srcnn(1);
  const auto sd = m->state_dict();
  std::vector<std::string> names;
  for (const auto& kv : sd) names.push_back(kv.first);
  EXPECT_EQ(names, (std::vector<std::string>{"conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"}));
  EXPECT_EQ(sd.at("conv1.weight").shape(), (Shape{6, 1, 5, 5}));
  for (const auto& [name, p] : m->named_parameters())
    EXPECT_EQ(sd.at(name).data(), p->value.data()) << name;  // the parameter itself, not a copy
}

TEST(StateDict, LoadedModelComputesWhatTheOriginalDid) {
  const std::string path = fresh_dir() + "/m.safetensors";
  auto a = small_srcnn(11), b = small_srcnn(99);
  std::mt19937 rng(2);
  const Tensor x = random_tensor({2, 1, 13, 17}, rng);
  const Tensor ya = a->forward(x, false);
  EXPECT_FALSE(same_bits(ya, b->forward(x, false)));
  save_safetensors(path, a->state_dict(), {{"architecture", "test"}});
  b->load_state_dict(load_safetensors(path).tensors);
  EXPECT_TRUE(same_bits(b->forward(x, false), ya));
  for (const auto& [name, t] : a->state_dict()) EXPECT_TRUE(same_bits(b->state_dict().at(name), t)) << name;
}

TEST(StateDict, StrictListsEveryMissingAndUnexpectedKey) {
  auto a = small_srcnn(1), b = small_srcnn(2);
  auto state = a->state_dict();
  state.erase("conv1.bias");
  state.erase("conv2.weight");
  state["conv9.weight"] = state.at("conv1.weight");
  state["extra"] = Tensor::zeros({1});
  const Tensor before = b->state_dict().at("conv1.weight").clone();
  const std::string msg = error_of<ValueError>([&] { b->load_state_dict(state); });
  for (const char* part : {"'conv1.bias'", "'conv2.weight'", "'conv9.weight'", "'extra'", "missing", "unexpected"})
    EXPECT_TRUE(contains(msg, part)) << part << " not in: " << msg;
  EXPECT_TRUE(same_bits(b->state_dict().at("conv1.weight"), before));  // nothing copied

  // Not strict: the present keys are loaded, the rest is left as it was.
  const Tensor bias_before = b->state_dict().at("conv1.bias").clone();
  b->load_state_dict(state, /*strict=*/false);
  EXPECT_TRUE(same_bits(b->state_dict().at("conv1.weight"), a->state_dict().at("conv1.weight")));
  EXPECT_TRUE(same_bits(b->state_dict().at("conv2.bias"), a->state_dict().at("conv2.bias")));
  EXPECT_TRUE(same_bits(b->state_dict().at("conv1.bias"), bias_before));
}

TEST(StateDict, MisShapedKeysAreAlwaysErrorsListingEach) {
  auto a = small_srcnn(1), b = small_srcnn(2);
  auto state = a->state_dict();
  state["conv1.weight"] = Tensor::zeros({6, 1, 3, 3});
  state["conv2.bias"] = Tensor::zeros({2});
  const Tensor before = b->state_dict().at("conv1.bias").clone();
  for (bool strict : {true, false}) {
    const std::string msg = error_of<ValueError>([&] { b->load_state_dict(state, strict); });
    EXPECT_TRUE(contains(msg, "(conv1.weight, expected [6, 1, 5, 5], got [6, 1, 3, 3])")) << msg;
    EXPECT_TRUE(contains(msg, "(conv2.bias, expected [1], got [2])")) << msg;
  }
  EXPECT_TRUE(same_bits(b->state_dict().at("conv1.bias"), before));
}

// ------------------------------------------------------------------------------------- bicubic tables

TEST(BicubicTable, UpscaleByTwoHasTheKnownWeights) {
  // MATLAB's x2 bicubic: output 1 sits at input 0.75 (1-based); its taps are cubic(1.75), cubic(0.75),
  // cubic(0.25), cubic(1.25), with the indices -2..1 clamped into the input.
  const auto t = ops::bicubic_contributions(4, 8, 2.0);
  ASSERT_EQ(t.taps, 4);
  EXPECT_EQ(std::vector<double>(t.weights.begin(), t.weights.begin() + 4),
            (std::vector<double>{-0.0234375, 0.2265625, 0.8671875, -0.0703125}));
  EXPECT_EQ(std::vector<int32_t>(t.indices.begin(), t.indices.begin() + 4), (std::vector<int32_t>{0, 0, 0, 1}));
  // The last output mirrors the first: weights reversed, indices clamped at the other end.
  EXPECT_EQ(std::vector<double>(t.weights.end() - 4, t.weights.end()),
            (std::vector<double>{-0.0703125, 0.8671875, 0.2265625, -0.0234375}));
  EXPECT_EQ(std::vector<int32_t>(t.indices.end() - 4, t.indices.end()), (std::vector<int32_t>{2, 3, 3, 3}));
}

TEST(BicubicTable, ShrinkingStretchesTheKernel) {
  // Halving: the kernel is 8 input samples wide, so each output reads 8 distinct neighbours away from the borders.
  const auto t = ops::bicubic_contributions(40, 20, 0.5);
  ASSERT_EQ(t.taps, 8);
  const int64_t j = 10;
  double sum = 0;
  for (int64_t k = 0; k < 8; ++k) {
    EXPECT_EQ(t.indices[size_t(j * 8 + k)], 2 * j - 3 + k);
    sum += t.weights[size_t(j * 8 + k)];
  }
  EXPECT_NEAR(sum, 1.0, 1e-15);
}

TEST(BicubicTable, TableOnDeviceResamplesLikeTheHostTable) {
  std::mt19937 rng(4);
  const Tensor x = random_tensor({1, 1, 7, 9}, rng);
  const auto host = ops::bicubic_contributions(9, 27, 3.0);
  const ops::ResampleTable table = ops::bicubic_table(9, 27, 3.0);
  EXPECT_EQ(table.weights_host(), host.weights);
  EXPECT_EQ(table.indices_host(), host.indices);
  EXPECT_TRUE(same_bits(ops::resample_axis(x, -1, table),
                        ops::resample_axis(x, -1, host.weights, host.indices, host.taps)));
}

TEST(BicubicTable, BadArgumentsAreValueErrors) {
  EXPECT_THROW(ops::bicubic_contributions(0, 3, 1.0), ValueError);
  EXPECT_THROW(ops::bicubic_contributions(3, 0, 1.0), ValueError);
  EXPECT_THROW(ops::bicubic_contributions(3, 3, 0.0), ValueError);
  EXPECT_THROW(ops::bicubic_contributions(3, 3, -2.0), ValueError);
  EXPECT_THROW(ops::bicubic_contributions(3, 3, std::nan("")), ValueError);
  EXPECT_THROW(ops::bicubic_contributions(3, 3, INFINITY), ValueError);
}

// ------------------------------------------------------------------------ overwriting: what stays the same

static mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

TEST(AtomicFile, AnExistingFileKeepsItsPermissionBits) {
  const std::string dir = fresh_dir(), path = dir + "/w.safetensors";
  std::mt19937 rng(3);
  for (mode_t mode : {mode_t(0600), mode_t(0640), mode_t(0755)}) {
    write_bytes(path, "old");
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    save_safetensors(path, {{"a", random_tensor({3}, rng)}});
    EXPECT_EQ(mode_of(path), mode);
    EXPECT_EQ(load_safetensors(path).tensors.size(), 1u);
  }
  // A new file gets what open() gives any new file: 0666 minus the umask.
  const mode_t umask = ::umask(0);
  ::umask(umask);
  const std::string fresh = dir + "/new.bin";
  AtomicFile f(fresh);
  f.write("x");
  f.commit();
  EXPECT_EQ(mode_of(fresh), mode_t(0666) & ~umask);
}

TEST(AtomicFile, FailuresNameTheTargetAndWhatFailedNotTheTemporaryFile) {
  const std::string dir = fresh_dir(), missing = dir + "/nope/x.safetensors";
  const std::string create = error_of<FileError>([&] { save_safetensors(missing, {{"a", Tensor::full({1}, 1.f)}}); });
  EXPECT_EQ(create.rfind(missing + ": cannot create a temporary file in " + dir + "/nope/: ", 0), 0u) << create;
  EXPECT_FALSE(contains(create, ".tmp")) << create;
  const std::string folder = dir + "/sub";
  ::mkdir(folder.c_str(), 0755);
  const std::string rename = error_of<FileError>([&] {
    AtomicFile f(folder);
    f.write("x");
    f.commit();
  });
  EXPECT_EQ(rename.rfind(folder + ": cannot replace it with its temporary file: ", 0), 0u) << rename;
  const std::string slash = error_of<FileError>([&] { AtomicFile f(folder + "/"); });  // no file name at all
  EXPECT_EQ(slash, folder + "/: cannot write it: the path names a folder: " + std::strerror(EISDIR));
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"sub"});
}

// The temporary name is "." + name + "." + 12 hex digits + ".tmp": 18 bytes more than the name. A name near the file
// system's limit gets a temporary name from its beginning, so every name the file system takes can be written.
TEST(AtomicFile, NamesNearTheFileSystemLimitCanBeWritten) {
  const std::string dir = fresh_dir();
  const long limit = ::pathconf(dir.c_str(), _PC_NAME_MAX);
  ASSERT_GT(limit, 20);
  for (size_t n : {size_t(245), size_t(limit) - 17, size_t(limit)}) {
    if (n > size_t(limit)) continue;
    const std::string name(n, 'a'), path = dir + "/" + name;
    {
      AtomicFile f(path);
      EXPECT_LE(f.temp_path().size() - dir.size() - 1, size_t(limit));
      f.write("payload");
      f.commit();
    }
    EXPECT_EQ(read_bytes(path), "payload") << n;
    EXPECT_EQ(list_dir(dir), std::vector<std::string>{name});
    ::unlink(path.c_str());
  }
  // A name the file system refuses is refused before anything is written, with its errno.
  const std::string too_long = dir + "/" + std::string(size_t(limit) + 1, 'b');
  try {
    AtomicFile f(too_long);
    ADD_FAILURE() << "no error";
  } catch (const FileError& e) {
    EXPECT_EQ(e.code(), ENAMETOOLONG);
    EXPECT_TRUE(contains(e.what(), too_long + ": cannot create it")) << e.what();
  }
  // Multi-byte UTF-8 names are shortened on a character boundary.
  const std::string accents = [&] {
    std::string s;
    while (s.size() + 2 <= size_t(limit)) s += "\xC3\xA9";  // 'é'
    return s;
  }();
  AtomicFile f(dir + "/" + accents);
  const std::string tmp_name = f.temp_path().substr(dir.size() + 1);
  const std::string stem = tmp_name.substr(1, tmp_name.size() - 18);
  EXPECT_EQ(stem.size() % 2, 0u) << tmp_name;
  f.write("x");
  f.commit();
  EXPECT_EQ(read_bytes(dir + "/" + accents), "x");
}

// A symbolic link is written through, as cp and editors do: the file it leads to is replaced (atomically, in its own
// folder) and keeps its permission bits, and the link stays a link.
TEST(AtomicFile, SymbolicLinksAreWrittenThrough) {
  const std::string dir = fresh_dir(), real_dir = dir + "/data";
  ::mkdir(real_dir.c_str(), 0755);
  const std::string real = real_dir + "/real.bin";
  write_bytes(real, "old");
  ASSERT_EQ(::chmod(real.c_str(), 0640), 0);
  ASSERT_EQ(::symlink("data/real.bin", (dir + "/link.bin").c_str()), 0);  // relative to the link's folder
  ASSERT_EQ(::symlink((dir + "/link.bin").c_str(), (dir + "/chain.bin").c_str()), 0);  // a link to a link
  auto is_link_to = [](const std::string& link, const std::string& to) {
    struct stat st {};
    char buf[4096];
    const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
    return ::lstat(link.c_str(), &st) == 0 && S_ISLNK(st.st_mode) && n > 0 && std::string(buf, size_t(n)) == to;
  };
  {
    AtomicFile f(dir + "/link.bin");
    EXPECT_EQ(f.target(), dir + "/data/real.bin");
    EXPECT_EQ(f.temp_path().rfind(real_dir + "/.real.bin.", 0), 0u) << f.temp_path();
    f.write("new");
    f.commit();
  }
  EXPECT_TRUE(is_link_to(dir + "/link.bin", "data/real.bin"));
  EXPECT_EQ(read_bytes(real), "new");
  EXPECT_EQ(mode_of(real), mode_t(0640));
  std::mt19937 rng(9);
  const Tensor t = random_tensor({2, 2}, rng);
  save_safetensors(dir + "/chain.bin", {{"t", t}});
  EXPECT_TRUE(is_link_to(dir + "/chain.bin", dir + "/link.bin"));
  EXPECT_TRUE(same_bits(load_safetensors(real).tensors.at("t"), t));
  EXPECT_EQ(list_dir(real_dir), std::vector<std::string>{"real.bin"});
  // A dangling link: the file is created where it points.
  ASSERT_EQ(::symlink("data/made.bin", (dir + "/dangling.bin").c_str()), 0);
  {
    AtomicFile f(dir + "/dangling.bin");
    f.write("made");
    f.commit();
  }
  EXPECT_EQ(read_bytes(real_dir + "/made.bin"), "made");
  EXPECT_TRUE(is_link_to(dir + "/dangling.bin", "data/made.bin"));
  // A loop of links is an error naming the path, with ELOOP.
  ASSERT_EQ(::symlink("b.bin", (dir + "/a.bin").c_str()), 0);
  ASSERT_EQ(::symlink("a.bin", (dir + "/b.bin").c_str()), 0);
  try {
    AtomicFile f(dir + "/a.bin");
    ADD_FAILURE() << "no error";
  } catch (const FileError& e) {
    EXPECT_EQ(e.code(), ELOOP);
    EXPECT_TRUE(contains(e.what(), dir + "/a.bin: cannot")) << e.what();
  }
}
