// jaxstats native CPU kernels, called from JAX through the XLA FFI (jax.ffi.ffi_call).
//
// Stable LSD radix sorts on order-preserving unsigned images of the keys, with an index or
// bit-pattern payload, and the tie-group bounds that rank statistics need. They run inside the
// XLA executable on the calling thread: no Python, no GIL, no host round trip, so they are safe
// in multi-device programs and under concurrent dispatch.
//
// Key images (ascending unsigned order == numpy's ascending order, NaNs last):
//   float: canonicalize -0.0 -> +0.0 and every NaN -> one positive quiet NaN (above +inf), then
//          flip all bits of negatives and set the sign bit of non-negatives;
//   signed int: flip the sign bit; unsigned int: as is.
// Every input is sorted along its last axis; leading axes are independent rows.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename U>
struct Scratch {
  std::vector<U> k0, k1;
  std::vector<U> p0, p1;  // payload: an index or the value's bit pattern (same width as U)
  void reserve(int64_t n) {
    if (static_cast<int64_t>(k0.size()) < n) {
      k0.resize(n);
      k1.resize(n);
      p0.resize(n);
      p1.resize(n);
    }
  }
};

template <typename U>
Scratch<U>& scratch() {
  // Reused across calls: fresh large allocations cost page faults on every call.
  thread_local Scratch<U> s;
  return s;
}

inline uint32_t key_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if (v != v) b = 0x7FC00000u;              // canonical NaN, above +inf
  if (b == 0x80000000u) b = 0u;             // -0.0 ties with +0.0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
inline uint64_t key_of(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  if (v != v) b = 0x7FF8000000000000ull;
  if (b == 0x8000000000000000ull) b = 0ull;
  return (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
}
inline uint32_t key_of(int32_t v) { return static_cast<uint32_t>(v) ^ 0x80000000u; }
inline uint64_t key_of(int64_t v) { return static_cast<uint64_t>(v) ^ 0x8000000000000000ull; }
inline uint32_t key_of(uint32_t v) { return v; }
inline uint64_t key_of(uint64_t v) { return v; }

template <typename T>
struct KeyType;
template <> struct KeyType<float> { using U = uint32_t; };
template <> struct KeyType<int32_t> { using U = uint32_t; };
template <> struct KeyType<uint32_t> { using U = uint32_t; };
template <> struct KeyType<double> { using U = uint64_t; };
template <> struct KeyType<int64_t> { using U = uint64_t; };
template <> struct KeyType<uint64_t> { using U = uint64_t; };

#ifndef JAXSTATS_RADIX_BITS
#define JAXSTATS_RADIX_BITS 8
#endif
constexpr int kBits = JAXSTATS_RADIX_BITS;
constexpr int kRadix = 1 << kBits;

// Stable sort of (keys, payload) of length n; the result ends in (k0, p0) of `s`.
template <typename U>
void radix_sort_pairs(Scratch<U>& s, int64_t n) {
  constexpr int kPasses = (8 * sizeof(U) + kBits - 1) / kBits;
  if (n < 48) {  // insertion sort: stable, cheap for tiny rows
    for (int64_t i = 1; i < n; ++i) {
      U k = s.k0[i];
      U p = s.p0[i];
      int64_t j = i - 1;
      while (j >= 0 && s.k0[j] > k) {
        s.k0[j + 1] = s.k0[j];
        s.p0[j + 1] = s.p0[j];
        --j;
      }
      s.k0[j + 1] = k;
      s.p0[j + 1] = p;
    }
    return;
  }
  static thread_local std::vector<int64_t> hist;
  hist.assign(static_cast<size_t>(kPasses) * kRadix, 0);
  for (int64_t i = 0; i < n; ++i) {
    U k = s.k0[i];
    for (int p = 0; p < kPasses; ++p) hist[p * kRadix + ((k >> (p * kBits)) & (kRadix - 1))]++;
  }
  U* ka = s.k0.data();
  U* kb = s.k1.data();
  U* pa = s.p0.data();
  U* pb = s.p1.data();
  bool in_zero = true;
  for (int p = 0; p < kPasses; ++p) {
    int64_t* h = &hist[p * kRadix];
    // Skip a pass whose digit is the same for every key.
    U d0 = (ka[0] >> (p * kBits)) & (kRadix - 1);
    if (h[d0] == n) continue;
    int64_t sum = 0;
    for (int b = 0; b < kRadix; ++b) {
      int64_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      U k = ka[i];
      int64_t pos = h[(k >> (p * kBits)) & (kRadix - 1)]++;
      kb[pos] = k;
      pb[pos] = pa[i];
    }
    std::swap(ka, kb);
    std::swap(pa, pb);
    in_zero = !in_zero;
  }
  if (!in_zero) {
    std::memcpy(s.k0.data(), ka, n * sizeof(U));
    std::memcpy(s.p0.data(), pa, n * sizeof(U));
  }
}

template <typename T>
void load_row(const T* x, int64_t n, Scratch<typename KeyType<T>::U>& s, bool payload_bits) {
  for (int64_t i = 0; i < n; ++i) {
    s.k0[i] = key_of(x[i]);
    if (payload_bits) {
      typename KeyType<T>::U b;
      std::memcpy(&b, &x[i], sizeof(T));
      s.p0[i] = b;
    } else {
      s.p0[i] = static_cast<typename KeyType<T>::U>(i);
    }
  }
}

template <typename T>
void argsort_rows(const T* x, int32_t* out, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  auto& s = scratch<U>();
  s.reserve(n);
  for (int64_t r = 0; r < rows; ++r) {
    load_row(x + r * n, n, s, false);
    radix_sort_pairs(s, n);
    int32_t* o = out + r * n;
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<int32_t>(s.p0[i]);
  }
}

template <typename T>
void sort_rows(const T* x, T* out, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  auto& s = scratch<U>();
  s.reserve(n);
  for (int64_t r = 0; r < rows; ++r) {
    load_row(x + r * n, n, s, true);  // payload = original bits: a stable sort of the values
    radix_sort_pairs(s, n);
    T* o = out + r * n;
    for (int64_t i = 0; i < n; ++i) {
      typename KeyType<T>::U b = s.p0[i];
      std::memcpy(&o[i], &b, sizeof(T));
    }
  }
}

// Sorted values (stable) and, for each element in input order, the 1-based first and last
// rank of its tie group.
template <typename T>
void tie_bounds_rows(const T* x, T* sorted, int32_t* lo, int32_t* hi, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  auto& s = scratch<U>();
  s.reserve(n);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * n;
    load_row(xr, n, s, false);
    radix_sort_pairs(s, n);
    T* so = sorted + r * n;
    int32_t* l = lo + r * n;
    int32_t* h = hi + r * n;
    int64_t start = 0;
    for (int64_t i = 0; i < n; ++i) {
      so[i] = xr[s.p0[i]];
      if (i + 1 == n || s.k0[i + 1] != s.k0[i]) {
        for (int64_t j = start; j <= i; ++j) {
          int64_t src = static_cast<int64_t>(s.p0[j]);
          l[src] = static_cast<int32_t>(start + 1);
          h[src] = static_cast<int32_t>(i + 1);
        }
        start = i + 1;
      }
    }
  }
}

// Dense ranks (tie groups numbered 1, 2, ... in ascending order), input order.
template <typename T>
void dense_rank_rows(const T* x, int32_t* dense, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  auto& s = scratch<U>();
  s.reserve(n);
  for (int64_t r = 0; r < rows; ++r) {
    load_row(x + r * n, n, s, false);
    radix_sort_pairs(s, n);
    int32_t* d = dense + r * n;
    int32_t group = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (i == 0 || s.k0[i] != s.k0[i - 1]) ++group;
      d[s.p0[i]] = group;
    }
  }
}

void split_dims(ffi::AnyBuffer::Dimensions dims, int64_t* rows, int64_t* n) {
  *n = dims.size() == 0 ? 1 : dims[dims.size() - 1];
  int64_t total = 1;
  for (auto d : dims) total *= d;
  *rows = (*n == 0) ? 0 : total / *n;
}

ffi::Error ArgsortImpl(ffi::AnyBuffer x, ffi::Result<ffi::Buffer<ffi::S32>> out) {
  int64_t rows, n;
  split_dims(x.dimensions(), &rows, &n);
  int32_t* o = out->typed_data();
  switch (x.element_type()) {
    case ffi::F32: argsort_rows(x.typed_data<float>(), o, rows, n); break;
    case ffi::F64: argsort_rows(x.typed_data<double>(), o, rows, n); break;
    case ffi::S32: argsort_rows(x.typed_data<int32_t>(), o, rows, n); break;
    case ffi::S64: argsort_rows(x.typed_data<int64_t>(), o, rows, n); break;
    case ffi::U32: argsort_rows(x.typed_data<uint32_t>(), o, rows, n); break;
    case ffi::U64: argsort_rows(x.typed_data<uint64_t>(), o, rows, n); break;
    default: return ffi::Error::InvalidArgument("jaxstats argsort: unsupported dtype");
  }
  return ffi::Error::Success();
}

ffi::Error SortImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out) {
  int64_t rows, n;
  split_dims(x.dimensions(), &rows, &n);
  switch (x.element_type()) {
    case ffi::F32: sort_rows(x.typed_data<float>(), out->typed_data<float>(), rows, n); break;
    case ffi::F64: sort_rows(x.typed_data<double>(), out->typed_data<double>(), rows, n); break;
    case ffi::S32: sort_rows(x.typed_data<int32_t>(), out->typed_data<int32_t>(), rows, n); break;
    case ffi::S64: sort_rows(x.typed_data<int64_t>(), out->typed_data<int64_t>(), rows, n); break;
    case ffi::U32: sort_rows(x.typed_data<uint32_t>(), out->typed_data<uint32_t>(), rows, n); break;
    case ffi::U64: sort_rows(x.typed_data<uint64_t>(), out->typed_data<uint64_t>(), rows, n); break;
    default: return ffi::Error::InvalidArgument("jaxstats sort: unsupported dtype");
  }
  return ffi::Error::Success();
}

#define JAXSTATS_DISPATCH(CALL)                                          \
  switch (x.element_type()) {                                            \
    case ffi::F32: { using T = float; CALL; } break;                     \
    case ffi::F64: { using T = double; CALL; } break;                    \
    case ffi::S32: { using T = int32_t; CALL; } break;                   \
    case ffi::S64: { using T = int64_t; CALL; } break;                   \
    case ffi::U32: { using T = uint32_t; CALL; } break;                  \
    case ffi::U64: { using T = uint64_t; CALL; } break;                  \
    default: return ffi::Error::InvalidArgument("jaxstats: unsupported dtype"); \
  }

ffi::Error TieBoundsImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> sorted,
                         ffi::Result<ffi::Buffer<ffi::S32>> lo,
                         ffi::Result<ffi::Buffer<ffi::S32>> hi) {
  int64_t rows, n;
  split_dims(x.dimensions(), &rows, &n);
  JAXSTATS_DISPATCH(tie_bounds_rows(x.typed_data<T>(), sorted->typed_data<T>(),
                                    lo->typed_data(), hi->typed_data(), rows, n));
  return ffi::Error::Success();
}

ffi::Error DenseRankImpl(ffi::AnyBuffer x, ffi::Result<ffi::Buffer<ffi::S32>> dense) {
  int64_t rows, n;
  split_dims(x.dimensions(), &rows, &n);
  JAXSTATS_DISPATCH(dense_rank_rows(x.typed_data<T>(), dense->typed_data(), rows, n));
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsArgsort, ArgsortImpl,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::Buffer<ffi::S32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsSort, SortImpl,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsTieBounds, TieBoundsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsDenseRank, DenseRankImpl,
                              ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::Buffer<ffi::S32>>());
