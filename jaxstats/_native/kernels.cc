// jaxstats native CPU kernels, called from JAX through the XLA FFI (jax.ffi.ffi_call).
//
// Stable sorts on order-preserving unsigned images of the keys, with an index or bit-pattern
// payload, and the tie-group bounds that rank statistics need. They run inside the XLA
// executable on the calling thread: no Python, no GIL, no host round trip, so they are safe in
// multi-device programs and under concurrent dispatch.
//
// Key images (ascending unsigned order == numpy's ascending order, NaNs last):
//   float: canonicalize -0.0 -> +0.0 and every NaN -> one positive quiet NaN (above +inf), then
//          flip all bits of negatives and set the sign bit of non-negatives;
//   signed int: flip the sign bit; unsigned int: as is.
// Every input is sorted along its last axis; leading axes are independent rows.
//
// Two algorithms:
//   * long rows, and rows of a batch too small to fill the SIMD lanes: a stable 8-bit LSD radix
//     sort per row (radix_sort_pairs);
//   * batches of short rows (n <= 4096 / 2048, see kSort32Rule etc.): a sorting network applied
//     to 16 rows at once, one row per SIMD lane ("Short rows" below). A network is not stable,
//     so argsort sorts the unique composite (key << 32 | index) and sort restores the input
//     order of the only keys that stand for several bit patterns (+-0.0 and NaN payloads).
// The results are the same either way, bit for bit. Single-threaded: the kernels run on the
// XLA thread that calls them (threads of our own were not needed to reach numpy's speed).

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#define JAXSTATS_AVX512 1
#else
#define JAXSTATS_AVX512 0
#endif

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

// Float keys from the bit pattern only (branch-free, so loops over them vectorize; and no
// float compare, which XLA's denormals-are-zero mode would bend).
inline uint32_t key_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  b = (b & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC00000u : b;  // NaN: canonical, above +inf
  b = b == 0x80000000u ? 0u : b;                          // -0.0 ties with +0.0
  return b ^ (static_cast<uint32_t>(static_cast<int32_t>(b) >> 31) | 0x80000000u);
}
inline uint64_t key_of(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  b = (b & 0x7FFFFFFFFFFFFFFFull) > 0x7FF0000000000000ull ? 0x7FF8000000000000ull : b;
  b = b == 0x8000000000000000ull ? 0ull : b;
  return b ^ (static_cast<uint64_t>(static_cast<int64_t>(b) >> 63) | 0x8000000000000000ull);
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

// The value whose key is k: the inverse of key_of, except that +-0.0 decode to +0.0 and every
// NaN to the canonical quiet NaN (the callers put the original bit patterns back).
template <typename T>
inline T value_of(typename KeyType<T>::U k) {
  using U = typename KeyType<T>::U;
  constexpr U sign = U(1) << (8 * sizeof(U) - 1);
  U b;
  if constexpr (std::is_floating_point_v<T>) {
    b = (k & sign) ? (k ^ sign) : ~k;
  } else if constexpr (std::is_signed_v<T>) {
    b = k ^ sign;
  } else {
    b = k;
  }
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

// Does x hold a value that value_of(key_of(x)) does not reproduce bit for bit (-0.0, or a NaN
// other than the canonical one)? Never for integers.
template <typename T>
inline bool changes_bits(T x) {
  if constexpr (std::is_floating_point_v<T>) {
    using U = typename KeyType<T>::U;
    constexpr U sign = U(1) << (8 * sizeof(U) - 1);
    constexpr U inf = sizeof(T) == 4 ? U(0x7F800000u) : U(0x7FF0000000000000ull);
    constexpr U canon = sizeof(T) == 4 ? U(0x7FC00000u) : U(0x7FF8000000000000ull);
    U b;
    std::memcpy(&b, &x, sizeof(T));
    return b == sign || ((b & ~sign) > inf && b != canon);
  } else {
    return false;
  }
}

// `out` = the row `x` sorted, but with +-0.0 decoded as +0.0 and NaNs canonical: rewrite the
// zeros and the NaNs with the input's bit patterns in input order (what a stable sort of the
// bit patterns gives: every other value class has one bit pattern only). Used for the short
// rows of the network sort that hold -0.0 or a NaN payload. Classified by key, not by float
// compares: XLA runs kernels with denormals-are-zero set, under which a subnormal == 0.
template <typename T>
void fix_tied_bits(const T* x, T* out, int64_t n) {
  if constexpr (std::is_floating_point_v<T>) {
    using U = typename KeyType<T>::U;
    constexpr U zero = U(1) << (8 * sizeof(U) - 1);  // key_of(+-0.0)
    const U nan = key_of(std::numeric_limits<T>::quiet_NaN());
    int64_t below = 0, nans = 0;
    for (int64_t i = 0; i < n; ++i) {
      U k = key_of(x[i]);
      below += k < zero;
      nans += k == nan;
    }
    int64_t pz = below, pn = n - nans;  // first zero, first NaN in the sorted row
    // Zeros and NaNs are usually few: find them 16 at a time through bit masks.
    for (int64_t i0 = 0; i0 < n; i0 += 16) {
      int m = static_cast<int>(std::min<int64_t>(16, n - i0));
      uint32_t mz = 0, mn = 0;
      for (int j = 0; j < m; ++j) {
        U k = key_of(x[i0 + j]);
        mz |= uint32_t(k == zero) << j;
        mn |= uint32_t(k == nan) << j;
      }
      for (; mz; mz &= mz - 1) out[pz++] = x[i0 + __builtin_ctz(mz)];
      for (; mn; mn &= mn - 1) out[pn++] = x[i0 + __builtin_ctz(mn)];
    }
  }
}

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

// ======================================================================================
// Short rows: a sorting network across rows
// ======================================================================================
//
// kLanes = 16 rows are sorted side by side: a row-block is transposed into a buffer `buf`
// where buf[i * 16 + l] is row l's i-th key (uint32 keys: one 512-bit vector per position;
// uint64 keys: two). A comparator of the network is then an elementwise min and max of two
// positions, for all 16 rows at once: no branches, no data-dependent memory access.
//
// The network, for P = the next power of two >= n: each aligned block of 16 positions is
// sorted by Batcher's 16-input odd-even merge sort (63 comparators), in registers right after
// the transpose (AVX-512: 16 vectors), the tail of the last block padded with the largest key.
// Then bitonic merges of sorted runs of 16, 32, ... (merge_plan): the first substage of each
// compares mirrored positions, the others are half-cleaners, so every comparator puts the
// minimum at its lower position. Hence positions >= n, holding the largest key, never receive
// a smaller one: every comparator touching a position >= n is a no-op and is dropped (no
// padding to P needed). The half-cleaners with distance < 16 stay inside 16-blocks and run in
// registers (one pass per merge; the last merge's in the output transpose); the others run
// from `buf` (16 KiB for 256 uint32 keys: L1-resident). Bitonic rather than odd-even merges
// for that: more comparators, but fewer passes over `buf` (measured 1.5x faster at n = 128).
//
// argsort sorts composites (key << 32 | index): unique, so the result is the stable order.
// sort sorts the keys and decodes them; the rows that hold -0.0 or a non-canonical NaN then
// get their zeros and NaNs back in input order (fix_tied_bits), as a stable sort would.

constexpr int kLanes = 16;

// When the network pays, per kernel: {largest n, fewest rows in a 16-row block}. A block of
// fewer rows leaves lanes idle, so the last partial block of a batch, and a batch of a few
// rows, go to the radix sort row by row unless they fill enough lanes. Measured on the
// project's AVX-512 Zen 4 (2 cores) against the radix sort, per block of rows; above the
// largest n the network's O(n log^2 n) work and buffer (n x 16 keys) stop paying.
// Build with -DJAXSTATS_NETWORK=0 to disable the network.
#ifndef JAXSTATS_NETWORK
#define JAXSTATS_NETWORK 1
#endif
struct NetRule {
  int64_t max_n;
  int min_rows;
};
#if JAXSTATS_AVX512
constexpr NetRule kSort32Rule[] = {{64, 1}, {256, 3}, {1024, 5}, {4096, 8}};
constexpr NetRule kArg32Rule[] = {{32, 1}, {64, 2}, {128, 4}, {512, 8}, {2048, 12}};
constexpr NetRule kSort64Rule[] = {{16, 2}, {128, 3}, {512, 4}, {2048, 6}};
#else  // plain loops (portable build, or no AVX-512): ~14x slower per block, measured with
       // -march=native -mno-avx512f; only full blocks of short rows still pay
constexpr NetRule kSort32Rule[] = {{128, 12}};
constexpr NetRule kArg32Rule[] = {{64, 14}};
constexpr NetRule kSort64Rule[] = {{256, 12}};
#endif

// How many leading rows the network sorts: every full 16-row block, and the last partial one
// if it holds enough rows. The rest go to the radix sort.
template <size_t K>
int64_t network_rows(const NetRule (&rule)[K], int64_t rows, int64_t n) {
  if (!JAXSTATS_NETWORK) return 0;
  for (const NetRule& r : rule)
    if (n <= r.max_n) {
      int64_t full = rows / kLanes * kLanes;
      return rows - full >= r.min_rows ? rows : full;
    }
  return 0;
}

// Batcher's odd-even merge sort of 16 elements: the first four stages of every larger one.
struct Net16 {
  uint8_t a[63] = {}, b[63] = {};
  int m = 0;
};
constexpr Net16 make_net16() {
  Net16 t{};
  for (int p = 1; p < 16; p <<= 1)
    for (int k = p; k >= 1; k >>= 1)
      for (int j = k % p; j + k < 16; j += 2 * k)
        for (int i = 0; i < k && i + j + k < 16; ++i)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p)) {
            t.a[t.m] = static_cast<uint8_t>(i + j);
            t.b[t.m] = static_cast<uint8_t>(i + j + k);
            ++t.m;
          }
  return t;
}
constexpr Net16 kNet16 = make_net16();
static_assert(kNet16.m == 63, "Batcher's 16-input network has 63 comparators");

// The half-cleaners k = 8, 4, 2, 1 of a bitonic merge: they stay inside aligned blocks of 16.
struct Clean16 {
  uint8_t a[32] = {}, b[32] = {};
};
constexpr Clean16 make_clean16() {
  Clean16 t{};
  int m = 0;
  for (int k = 8; k >= 1; k >>= 1)
    for (int a = 0; a < 16; ++a)
      if (!(a & k)) {
        t.a[m] = static_cast<uint8_t>(a);
        t.b[m] = static_cast<uint8_t>(a + k);
        ++m;
      }
  return t;
}
constexpr Clean16 kClean16 = make_clean16();

// Marks, in a merge plan, a pass of the 16-block half-cleaners over the whole buffer.
constexpr uint32_t kBlockPass = 0xFFFFFFFFu;

// The merge stages after the 16-blocks are sorted, for n keys: bitonic merges of sorted runs
// of p = 16, 32, ... into runs of 2p, with every comparator putting the minimum at its lower
// position (the first substage compares mirrored positions, the others are half-cleaners).
// Comparators packed as a | b << 16, those with b >= n dropped; the half-cleaners k < 16 of
// each stage are one kBlockPass, except the last stage's, which the output transpose runs.
const std::vector<uint32_t>& merge_plan(int64_t n) {
  thread_local int64_t cached = -1;
  thread_local std::vector<uint32_t> plan;
  if (cached == n) return plan;
  plan.clear();
  auto cx = [&](int64_t a, int64_t b) {
    if (b < n) plan.push_back(static_cast<uint32_t>(a | (b << 16)));
  };
  for (int64_t p = 16; p < n; p <<= 1) {
    for (int64_t s = 0; s < n; s += 2 * p)
      for (int64_t i = 0; i < p; ++i) cx(s + i, s + 2 * p - 1 - i);
    for (int64_t k = p / 2; k >= 16; k >>= 1)
      for (int64_t a = 0; a < n; ++a)
        if (!(a & k)) cx(a, a + k);
    if (2 * p < n) plan.push_back(kBlockPass);
  }
  cached = n;
  return plan;
}

inline int64_t round16(int64_t n) { return (n + 15) & ~int64_t(15); }

// A 64-byte aligned, reused buffer of round16(n) positions x 16 lanes.
template <typename U>
U* net_buffer(int64_t n) {
  thread_local std::vector<U> v;
  size_t need = static_cast<size_t>(round16(n)) * kLanes + 64 / sizeof(U);
  if (v.size() < need) v.resize(need);
  uintptr_t a = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<U*>((a + 63) & ~uintptr_t(63));
}

#if JAXSTATS_AVX512

inline void cx32(__m512i& a, __m512i& b) {
  __m512i t = _mm512_min_epu32(a, b);
  b = _mm512_max_epu32(a, b);
  a = t;
}
inline void cx64(__m512i& a, __m512i& b) {
  __m512i t = _mm512_min_epu64(a, b);
  b = _mm512_max_epu64(a, b);
  a = t;
}
template <bool Wide>
inline void clean16_regs(__m512i* v) {
#pragma GCC unroll 32
  for (int t = 0; t < 32; ++t) {
    if constexpr (Wide) cx64(v[kClean16.a[t]], v[kClean16.b[t]]);
    else cx32(v[kClean16.a[t]], v[kClean16.b[t]]);
  }
}
template <bool Wide>
inline void sort16_regs(__m512i* v) {
#pragma GCC unroll 64
  for (int t = 0; t < 63; ++t) {
    if constexpr (Wide) cx64(v[kNet16.a[t]], v[kNet16.b[t]]);
    else cx32(v[kNet16.a[t]], v[kNet16.b[t]]);
  }
}

// In-place transpose of a 16x16 matrix of 32-bit elements (r[i] = row i).
inline void transpose16(__m512i* r) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + m], 128-bit block q: column 4q + m of rows 4g..4g+3
  for (int g = 0; g < 4; ++g) {
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  // column 4q + m = blocks q of u[m], u[4 + m], u[8 + m], u[12 + m]
  for (int m = 0; m < 4; ++m) {
    __m512i v0 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(1, 0, 1, 0));
    __m512i v1 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(3, 2, 3, 2));
    __m512i v2 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(1, 0, 1, 0));
    __m512i v3 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(3, 2, 3, 2));
    r[m] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(2, 0, 2, 0));
    r[4 + m] = _mm512_shuffle_i32x4(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
    r[8 + m] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
    r[12 + m] = _mm512_shuffle_i32x4(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// In-place transpose of an 8x8 matrix of 64-bit elements.
inline void transpose8(__m512i* r) {
  __m512i t[8];
  for (int i = 0; i < 4; ++i) {  // t[2i + m], block q: column 2q + m of rows 2i, 2i+1
    t[2 * i] = _mm512_unpacklo_epi64(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi64(r[2 * i], r[2 * i + 1]);
  }
  for (int m = 0; m < 2; ++m) {  // column 2q + m = blocks q of t[m], t[2+m], t[4+m], t[6+m]
    __m512i v0 = _mm512_shuffle_i64x2(t[m], t[2 + m], _MM_SHUFFLE(1, 0, 1, 0));
    __m512i v1 = _mm512_shuffle_i64x2(t[m], t[2 + m], _MM_SHUFFLE(3, 2, 3, 2));
    __m512i v2 = _mm512_shuffle_i64x2(t[4 + m], t[6 + m], _MM_SHUFFLE(1, 0, 1, 0));
    __m512i v3 = _mm512_shuffle_i64x2(t[4 + m], t[6 + m], _MM_SHUFFLE(3, 2, 3, 2));
    r[m] = _mm512_shuffle_i64x2(v0, v2, _MM_SHUFFLE(2, 0, 2, 0));
    r[2 + m] = _mm512_shuffle_i64x2(v0, v2, _MM_SHUFFLE(3, 1, 3, 1));
    r[4 + m] = _mm512_shuffle_i64x2(v1, v3, _MM_SHUFFLE(2, 0, 2, 0));
    r[6 + m] = _mm512_shuffle_i64x2(v1, v3, _MM_SHUFFLE(3, 1, 3, 1));
  }
}

// Vector key images (as key_of) and their inverse (as value_of); `fix` collects the lanes
// whose bit pattern the round trip does not keep (as changes_bits).
template <typename T>
inline __m512i vkey32(__m512i v, __mmask16& fix) {
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  if constexpr (std::is_same_v<T, float>) {
    const __m512i canon = _mm512_set1_epi32(0x7FC00000);
    __mmask16 nan = _mm512_cmp_ps_mask(_mm512_castsi512_ps(v), _mm512_castsi512_ps(v), _CMP_UNORD_Q);
    __mmask16 nz = _mm512_cmpeq_epi32_mask(v, sign);
    fix |= nz | _mm512_mask_cmpneq_epi32_mask(nan, v, canon);
    v = _mm512_mask_mov_epi32(v, nan, canon);
    v = _mm512_mask_mov_epi32(v, nz, _mm512_setzero_si512());
    return _mm512_xor_si512(v, _mm512_or_si512(_mm512_srai_epi32(v, 31), sign));
  } else if constexpr (std::is_same_v<T, int32_t>) {
    return _mm512_xor_si512(v, sign);
  } else {
    return v;
  }
}
template <typename T>
inline __m512i vvalue32(__m512i k) {
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  if constexpr (std::is_same_v<T, float>) {
    __m512i nk = _mm512_xor_si512(k, _mm512_set1_epi32(-1));
    return _mm512_xor_si512(k, _mm512_or_si512(_mm512_srai_epi32(nk, 31), sign));
  } else if constexpr (std::is_same_v<T, int32_t>) {
    return _mm512_xor_si512(k, sign);
  } else {
    return k;
  }
}
template <typename T>
inline __m512i vkey64(__m512i v, __mmask8& fix) {
  const __m512i sign = _mm512_set1_epi64(static_cast<long long>(0x8000000000000000ull));
  if constexpr (std::is_same_v<T, double>) {
    const __m512i canon = _mm512_set1_epi64(0x7FF8000000000000ll);
    __mmask8 nan = _mm512_cmp_pd_mask(_mm512_castsi512_pd(v), _mm512_castsi512_pd(v), _CMP_UNORD_Q);
    __mmask8 nz = _mm512_cmpeq_epi64_mask(v, sign);
    fix |= nz | _mm512_mask_cmpneq_epi64_mask(nan, v, canon);
    v = _mm512_mask_mov_epi64(v, nan, canon);
    v = _mm512_mask_mov_epi64(v, nz, _mm512_setzero_si512());
    return _mm512_xor_si512(v, _mm512_or_si512(_mm512_srai_epi64(v, 63), sign));
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return _mm512_xor_si512(v, sign);
  } else {
    return v;
  }
}
template <typename T>
inline __m512i vvalue64(__m512i k) {
  const __m512i sign = _mm512_set1_epi64(static_cast<long long>(0x8000000000000000ull));
  if constexpr (std::is_same_v<T, double>) {
    __m512i nk = _mm512_xor_si512(k, _mm512_set1_epi64(-1));
    return _mm512_xor_si512(k, _mm512_or_si512(_mm512_srai_epi64(nk, 63), sign));
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return _mm512_xor_si512(k, sign);
  } else {
    return k;
  }
}

inline __mmask16 tail16(int64_t m) { return m >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << m) - 1); }
inline __mmask8 tail8(int64_t m) { return m >= 8 ? __mmask8(0xFF) : __mmask8((1u << m) - 1); }

// The merge plan, from the buffer.
inline void block_pass(uint32_t* buf, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += 16) {
    __m512i r[16];
    for (int k = 0; k < 16; ++k) r[k] = _mm512_load_si512(buf + (c0 + k) * kLanes);
    clean16_regs<false>(r);
    for (int k = 0; k < 16; ++k) _mm512_store_si512(buf + (c0 + k) * kLanes, r[k]);
  }
}
inline void block_pass(uint64_t* buf, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += 16)
    for (int g = 0; g < 2; ++g) {
      __m512i r[16];
      for (int k = 0; k < 16; ++k) r[k] = _mm512_load_si512(buf + (c0 + k) * kLanes + 8 * g);
      clean16_regs<true>(r);
      for (int k = 0; k < 16; ++k) _mm512_store_si512(buf + (c0 + k) * kLanes + 8 * g, r[k]);
    }
}
inline void run_plan(uint32_t* buf, int64_t n, const std::vector<uint32_t>& plan) {
  for (uint32_t ab : plan) {
    if (ab == kBlockPass) {
      block_pass(buf, n);
      continue;
    }
    uint32_t* pa = buf + (ab & 0xFFFF) * kLanes;
    uint32_t* pb = buf + (ab >> 16) * kLanes;
    __m512i x = _mm512_load_si512(pa), y = _mm512_load_si512(pb);
    _mm512_store_si512(pa, _mm512_min_epu32(x, y));
    _mm512_store_si512(pb, _mm512_max_epu32(x, y));
  }
}
inline void run_plan(uint64_t* buf, int64_t n, const std::vector<uint32_t>& plan) {
  for (uint32_t ab : plan) {
    if (ab == kBlockPass) {
      block_pass(buf, n);
      continue;
    }
    uint64_t* pa = buf + (ab & 0xFFFF) * kLanes;
    uint64_t* pb = buf + (ab >> 16) * kLanes;
    __m512i x0 = _mm512_load_si512(pa), y0 = _mm512_load_si512(pb);
    __m512i x1 = _mm512_load_si512(pa + 8), y1 = _mm512_load_si512(pb + 8);
    _mm512_store_si512(pa, _mm512_min_epu64(x0, y0));
    _mm512_store_si512(pb, _mm512_max_epu64(x0, y0));
    _mm512_store_si512(pa + 8, _mm512_min_epu64(x1, y1));
    _mm512_store_si512(pb + 8, _mm512_max_epu64(x1, y1));
  }
}

// Prefetch the rows of the next row-block (`next_nr` rows from x + 16 n) at the same columns
// while this block loads: the block is read column chunk by column chunk, 16 rows apart,
// which the hardware prefetchers follow poorly.
template <typename T>
inline void prefetch_next(const T* x, int64_t n, int next_nr, int64_t c) {
  for (int i = 0; i < next_nr; ++i) _mm_prefetch(reinterpret_cast<const char*>(x + (kLanes + i) * n + c), _MM_HINT_T0);
}

// Keys of `nr` <= 16 rows (row stride n) into buf, each 16-position block sorted. Returns a
// bit per row whose bit patterns the key round trip does not keep.
template <typename T>
uint32_t load_keys(const T* x, int64_t n, int nr, typename KeyType<T>::U* buf, int next_nr) {
  uint32_t rowfix = 0;
  if constexpr (sizeof(T) == 4) {
    const __m512i ones = _mm512_set1_epi32(-1);
    for (int64_t c0 = 0; c0 < n; c0 += 16) {
      __mmask16 cm = tail16(n - c0);
      __m512i r[16];
      prefetch_next(x, n, next_nr, c0);
      for (int i = 0; i < 16; ++i) {
        if (i < nr) {
          __mmask16 fix = 0;
          r[i] = vkey32<T>(_mm512_maskz_loadu_epi32(cm, x + i * n + c0), fix);
          r[i] = _mm512_mask_mov_epi32(ones, cm, r[i]);  // tail: the largest key
          rowfix |= uint32_t(fix != 0) << i;
        } else {
          r[i] = ones;
        }
      }
      transpose16(r);
      sort16_regs<false>(r);
      for (int k = 0; k < 16; ++k) _mm512_store_si512(buf + (c0 + k) * kLanes, r[k]);
    }
  } else {
    const __m512i ones = _mm512_set1_epi64(-1);
    for (int64_t c0 = 0; c0 < n; c0 += 16) {
      prefetch_next(x, n, next_nr, c0);
      prefetch_next(x, n, next_nr, c0 + 8);
      for (int g = 0; g < 2; ++g) {  // rows 8g..8g+7
        __m512i r[16];
        for (int h = 0; h < 2; ++h) {  // columns c0 + 8h ..
          __mmask8 cm = c0 + 8 * h < n ? tail8(n - c0 - 8 * h) : __mmask8(0);
          for (int i = 0; i < 8; ++i) {
            int row = 8 * g + i;
            if (row < nr) {
              __mmask8 fix = 0;
              __m512i v = vkey64<T>(_mm512_maskz_loadu_epi64(cm, x + row * n + c0 + 8 * h), fix);
              r[8 * h + i] = _mm512_mask_mov_epi64(ones, cm, v);
              rowfix |= uint32_t(fix != 0) << row;
            } else {
              r[8 * h + i] = ones;
            }
          }
          transpose8(r + 8 * h);
        }
        sort16_regs<true>(r);
        for (int k = 0; k < 16; ++k) _mm512_store_si512(buf + (c0 + k) * kLanes + 8 * g, r[k]);
      }
    }
  }
  return rowfix;
}

// Keys in buf (sorted but for the last stage's 16-block half-cleaners, which run here when
// n > 16) -> values of `nr` rows.
template <typename T>
void store_values(typename KeyType<T>::U* buf, int64_t n, int nr, T* out) {
  const bool clean = n > 16;
  if constexpr (sizeof(T) == 4) {
    for (int64_t c0 = 0; c0 < n; c0 += 16) {
      __mmask16 cm = tail16(n - c0);
      __m512i r[16];
      for (int k = 0; k < 16; ++k) r[k] = _mm512_load_si512(buf + (c0 + k) * kLanes);
      if (clean) clean16_regs<false>(r);
      transpose16(r);
      for (int i = 0; i < nr; ++i) _mm512_mask_storeu_epi32(out + i * n + c0, cm, vvalue32<T>(r[i]));
    }
  } else {
    for (int g = 0; g < 2 && 8 * g < nr; ++g) {
      for (int64_t c0 = 0; c0 < n; c0 += 16) {
        __m512i r[16];
        for (int k = 0; k < 16; ++k) r[k] = _mm512_load_si512(buf + (c0 + k) * kLanes + 8 * g);
        if (clean) clean16_regs<true>(r);
        for (int h = 0; h < 2 && c0 + 8 * h < n; ++h) {
          __mmask8 cm = tail8(n - c0 - 8 * h);
          transpose8(r + 8 * h);
          for (int i = 0; i < 8 && 8 * g + i < nr; ++i)
            _mm512_mask_storeu_epi64(out + (8 * g + i) * n + c0 + 8 * h, cm, vvalue64<T>(r[8 * h + i]));
        }
      }
    }
  }
}

// Composites (key << 32 | index) of `nr` rows of 32-bit values into buf (16-blocks sorted).
template <typename T>
void load_composites(const T* x, int64_t n, int nr, uint64_t* buf, int next_nr) {
  static_assert(sizeof(T) == 4, "composites hold 32-bit keys");
  const __m512i ones = _mm512_set1_epi64(-1);
  for (int64_t c0 = 0; c0 < n; c0 += 16) {
    __mmask16 cm = tail16(n - c0);
    __m512i r[16];
    prefetch_next(x, n, next_nr, c0);
    for (int i = 0; i < 16; ++i) {
      __mmask16 fix = 0;
      r[i] = i < nr ? vkey32<T>(_mm512_maskz_loadu_epi32(cm, x + i * n + c0), fix) : _mm512_setzero_si512();
    }
    transpose16(r);
    for (int g = 0; g < 2; ++g) {
      __m512i w[16];
      for (int k = 0; k < 16; ++k) {
        __m256i half = g == 0 ? _mm512_castsi512_si256(r[k]) : _mm512_extracti64x4_epi64(r[k], 1);
        __m512i key = _mm512_slli_epi64(_mm512_cvtepu32_epi64(half), 32);
        w[k] = c0 + k < n ? _mm512_or_si512(key, _mm512_set1_epi64(c0 + k)) : ones;
      }
      sort16_regs<true>(w);
      for (int k = 0; k < 16; ++k) _mm512_store_si512(buf + (c0 + k) * kLanes + 8 * g, w[k]);
    }
  }
}

// Composites in buf (sorted but for the last 16-block half-cleaners) -> the indices.
inline void store_indices(uint64_t* buf, int64_t n, int nr, int32_t* out) {
  const bool clean = n > 16;
  for (int64_t c0 = 0; c0 < n; c0 += 16) {
    __mmask16 cm = tail16(n - c0);
    __m512i lo[16], hi[16], r[16];
    for (int k = 0; k < 16; ++k) {
      lo[k] = _mm512_load_si512(buf + (c0 + k) * kLanes);
      hi[k] = _mm512_load_si512(buf + (c0 + k) * kLanes + 8);
    }
    if (clean) {
      clean16_regs<true>(lo);
      clean16_regs<true>(hi);
    }
    for (int k = 0; k < 16; ++k)
      r[k] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo[k])), _mm512_cvtepi64_epi32(hi[k]), 1);
    transpose16(r);
    for (int i = 0; i < nr; ++i) _mm512_mask_storeu_epi32(out + i * n + c0, cm, r[i]);
  }
}

#else  // portable: the same buffer layout and network, with plain loops

template <typename U>
inline void cx_lanes(U* __restrict a, U* __restrict b) {
  for (int l = 0; l < kLanes; ++l) {
    U x = a[l], y = b[l];
    a[l] = x < y ? x : y;
    b[l] = x < y ? y : x;
  }
}
template <typename U>
void sort16_blocks(U* buf, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += 16)
    for (int t = 0; t < kNet16.m; ++t) cx_lanes(buf + (c0 + kNet16.a[t]) * kLanes, buf + (c0 + kNet16.b[t]) * kLanes);
}
template <typename U>
void block_pass(U* buf, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += 16)
    for (int t = 0; t < 32; ++t) cx_lanes(buf + (c0 + kClean16.a[t]) * kLanes, buf + (c0 + kClean16.b[t]) * kLanes);
}
template <typename U>
void run_plan(U* buf, int64_t n, const std::vector<uint32_t>& plan) {
  for (uint32_t ab : plan) {
    if (ab == kBlockPass) block_pass(buf, n);
    else cx_lanes(buf + (ab & 0xFFFF) * kLanes, buf + (ab >> 16) * kLanes);
  }
}

template <typename T>
uint32_t load_keys(const T* x, int64_t n, int nr, typename KeyType<T>::U* buf, int) {
  using U = typename KeyType<T>::U;
  uint32_t rowfix = 0;
  for (int l = 0; l < kLanes; ++l) {
    const T* xr = x + l * n;
    bool fix = false;
    for (int64_t c = 0; c < round16(n); ++c) {
      U k = ~U(0);
      if (l < nr && c < n) {
        k = key_of(xr[c]);
        fix |= changes_bits(xr[c]);
      }
      buf[c * kLanes + l] = k;
    }
    rowfix |= uint32_t(fix) << l;
  }
  sort16_blocks(buf, n);
  return rowfix;
}
template <typename T>
void store_values(typename KeyType<T>::U* buf, int64_t n, int nr, T* out) {
  if (n > 16) block_pass(buf, n);
  for (int l = 0; l < nr; ++l)
    for (int64_t c = 0; c < n; ++c) out[l * n + c] = value_of<T>(buf[c * kLanes + l]);
}
template <typename T>
void load_composites(const T* x, int64_t n, int nr, uint64_t* buf, int) {
  for (int l = 0; l < kLanes; ++l)
    for (int64_t c = 0; c < round16(n); ++c)
      buf[c * kLanes + l] = (l < nr && c < n) ? (uint64_t(key_of(x[l * n + c])) << 32) | uint64_t(c) : ~uint64_t(0);
  sort16_blocks(buf, n);
}
inline void store_indices(uint64_t* buf, int64_t n, int nr, int32_t* out) {
  if (n > 16) block_pass(buf, n);
  for (int l = 0; l < nr; ++l)
    for (int64_t c = 0; c < n; ++c) out[l * n + c] = static_cast<int32_t>(buf[c * kLanes + l]);
}

#endif  // JAXSTATS_AVX512

// Row-blocks through the network. For a partial last block the unused lanes carry padding.
template <typename T>
void net_sort_rows(const T* x, T* out, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  U* buf = net_buffer<U>(n);
  const std::vector<uint32_t>& plan = merge_plan(n);
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    int nr = static_cast<int>(std::min<int64_t>(kLanes, rows - r0));
    int next_nr = static_cast<int>(std::clamp<int64_t>(rows - r0 - kLanes, 0, kLanes));
    uint32_t fix = load_keys<T>(x + r0 * n, n, nr, buf, next_nr);
    run_plan(buf, n, plan);
    store_values<T>(buf, n, nr, out + r0 * n);
    for (int i = 0; fix; ++i, fix >>= 1)
      if (fix & 1) fix_tied_bits(x + (r0 + i) * n, out + (r0 + i) * n, n);
  }
}

template <typename T>
void net_argsort_rows(const T* x, int32_t* out, int64_t rows, int64_t n) {
  uint64_t* buf = net_buffer<uint64_t>(n);
  const std::vector<uint32_t>& plan = merge_plan(n);
  for (int64_t r0 = 0; r0 < rows; r0 += kLanes) {
    int nr = static_cast<int>(std::min<int64_t>(kLanes, rows - r0));
    int next_nr = static_cast<int>(std::clamp<int64_t>(rows - r0 - kLanes, 0, kLanes));
    load_composites<T>(x + r0 * n, n, nr, buf, next_nr);
    run_plan(buf, n, plan);
    store_indices(buf, n, nr, out + r0 * n);
  }
}

// For every row: the stably sorted keys (k0) and the permutation (p0) into `s`, then
// fn(row, s). Short rows of 32-bit keys go through the network, others through the radix sort.
template <typename T, typename Fn>
void for_each_sorted_row(const T* x, int64_t rows, int64_t n, Fn&& fn) {
  using U = typename KeyType<T>::U;
  auto& s = scratch<U>();
  s.reserve(n);
  int64_t net_rows = 0;
  if constexpr (sizeof(U) == 4) {
    net_rows = network_rows(kArg32Rule, rows, n);
    uint64_t* buf = net_rows ? net_buffer<uint64_t>(n) : nullptr;
    const std::vector<uint32_t>* plan = net_rows ? &merge_plan(n) : nullptr;
    for (int64_t r0 = 0; r0 < net_rows; r0 += kLanes) {
      int nr = static_cast<int>(std::min<int64_t>(kLanes, net_rows - r0));
      int next_nr = static_cast<int>(std::clamp<int64_t>(net_rows - r0 - kLanes, 0, kLanes));
      load_composites<T>(x + r0 * n, n, nr, buf, next_nr);
      run_plan(buf, n, *plan);
      if (n > 16) block_pass(buf, n);  // the last stage's half-cleaners
      for (int l = 0; l < nr; ++l) {
        for (int64_t i = 0; i < n; ++i) {
          uint64_t c = buf[i * kLanes + l];
          s.k0[i] = static_cast<U>(c >> 32);
          s.p0[i] = static_cast<U>(c & 0xFFFFFFFFu);
        }
        fn(r0 + l, s);
      }
    }
  }
  for (int64_t r = net_rows; r < rows; ++r) {
    load_row(x + r * n, n, s, false);
    radix_sort_pairs(s, n);
    fn(r, s);
  }
}

// ======================================================================================
// Row drivers
// ======================================================================================

template <typename T>
void argsort_rows(const T* x, int32_t* out, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  int64_t net_rows = 0;
  if constexpr (sizeof(U) == 4) {
    net_rows = network_rows(kArg32Rule, rows, n);
    if (net_rows) net_argsort_rows(x, out, net_rows, n);
  }
  auto& s = scratch<U>();
  s.reserve(n);
  for (int64_t r = net_rows; r < rows; ++r) {
    load_row(x + r * n, n, s, false);
    radix_sort_pairs(s, n);
    int32_t* o = out + r * n;
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<int32_t>(s.p0[i]);
  }
}

template <typename T>
void sort_rows(const T* x, T* out, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  int64_t net_rows = sizeof(U) == 4 ? network_rows(kSort32Rule, rows, n) : network_rows(kSort64Rule, rows, n);
  if (net_rows) net_sort_rows(x, out, net_rows, n);
  auto& s = scratch<U>();
  s.reserve(n);
  for (int64_t r = net_rows; r < rows; ++r) {
    load_row(x + r * n, n, s, true);  // payload = original bits: a stable sort of the values
    radix_sort_pairs(s, n);
    T* o = out + r * n;
    for (int64_t i = 0; i < n; ++i) {
      typename KeyType<T>::U b = s.p0[i];
      std::memcpy(&o[i], &b, sizeof(T));
    }
  }
}

// Per-element int32 results computed in sorted order go back to input order (out[j][src]).
// A random scatter is cheap while the outputs stay in cache; for longer rows its cache misses
// dominated tie_bounds (n >> L2), so there it takes two passes. First, one 8-byte record per
// element, (values << shift | low bits of src), is appended to the bucket of src's high bits:
// bucket b holds the destinations [b << shift, (b + 1) << shift), so its size is known in
// advance and a record's bucket gives back src's high bits. Then, bucket by bucket, the
// records are scattered within their bucket's range of the outputs (L1/L2-resident), with the
// next range prefetched for writing.
// Measured (2e6 elements): 256 buckets, not fewer (with fewer, the bucket counters collide
// in the out-of-order window: memory-order pipeline flushes), and bucket regions staggered by
// two cache lines (equal-size regions at multiples of 64 KiB all map to the same L1 sets).
#ifndef JAXSTATS_UNSORT_DIRECT_MAX
#define JAXSTATS_UNSORT_DIRECT_MAX (1 << 17)
#endif
constexpr int64_t kUnsortDirectMax = JAXSTATS_UNSORT_DIRECT_MAX;
constexpr int kUnsortBucketBits = 8;
constexpr int64_t kUnsortPad = 16;  // records between bucket regions

template <int NV>
class Unsorter {  // NV = 1 or 2 output arrays
 public:
  Unsorter(int64_t n, int32_t* const* out) : n_(n) {
    for (int j = 0; j < NV; ++j) out_[j] = out[j];
    while ((int64_t(1) << vbits_) <= n) ++vbits_;  // the values lie in [0, n]
    while ((n - 1) >> (shift_ + kUnsortBucketBits)) ++shift_;
    // Records that do not fit 64 bits (n > ~8e6) fall back to the direct scatter.
    direct_ = n <= kUnsortDirectMax || shift_ + NV * vbits_ > 64;
    if (direct_) return;
    nb_ = ((n - 1) >> shift_) + 1;
    stride_ = (int64_t(1) << shift_) + kUnsortPad;
    thread_local std::vector<uint64_t> rec;
    if (static_cast<int64_t>(rec.size()) < nb_ * stride_) rec.resize(nb_ * stride_);
    rec_ = rec.data();
    cur_.resize(nb_);
    for (int64_t b = 0; b < nb_; ++b) cur_[b] = b * stride_;
  }
  bool direct() const { return direct_; }
  inline void put_direct(uint64_t src, uint32_t v0, uint32_t v1 = 0) {
    out_[0][src] = static_cast<int32_t>(v0);
    if (NV == 2) out_[NV - 1][src] = static_cast<int32_t>(v1);
  }
  // The values of a record, packed once per tie group.
  inline uint64_t pack(uint32_t v0, uint32_t v1 = 0) const {
    uint64_t r = uint64_t(v0) << shift_;
    if (NV == 2) r |= uint64_t(v1) << (shift_ + vbits_);
    return r;
  }
  inline void put_packed(uint64_t src, uint64_t packed) {
    rec_[cur_[src >> shift_]++] = (src & low_mask()) | packed;
  }
  void finish() {
    if (direct_) return;
    const uint64_t low = low_mask(), vmask = (uint64_t(1) << vbits_) - 1;
    const int64_t size = int64_t(1) << shift_;
    for (int64_t b = 0; b < nb_; ++b) {
      const int64_t base = b << shift_, count = std::min(size, n_ - base);
      const int64_t next = base + size, next_count = std::max<int64_t>(0, std::min(size, n_ - next));
      const uint64_t* rec = rec_ + b * stride_;
      int32_t* o0 = out_[0] + base;
      int32_t* o1 = out_[NV - 1] + base;
      int64_t pf = 0;
      for (int64_t q = 0; q < count; ++q) {
        if ((q & 7) == 0 && pf < next_count) {  // 16 outputs per line; pace: one line per 8 records
          for (int j = 0; j < NV; ++j) __builtin_prefetch(out_[j] + next + pf, 1);
          pf += 16;
        }
        uint64_t r = rec[q];
        uint64_t src = r & low;
        o0[src] = static_cast<int32_t>((r >> shift_) & vmask);
        if (NV == 2) o1[src] = static_cast<int32_t>((r >> (shift_ + vbits_)) & vmask);
      }
    }
  }

 private:
  uint64_t low_mask() const { return (uint64_t(1) << shift_) - 1; }
  int64_t n_, nb_ = 0, stride_ = 0;
  int32_t* out_[NV];
  int vbits_ = 1, shift_ = 0;
  bool direct_ = true;
  uint64_t* rec_ = nullptr;
  std::vector<int64_t> cur_;
};

// Calls emit(j, lo, hi) for the sorted positions j in order, with [lo - 1, hi) the tie group
// of j. Untied keys take one predictable branch each (a branch-free lookahead pass was
// slower); a tie group is emitted once its end is found.
template <typename U, typename Emit>
inline void walk_tie_groups(const U* k, int64_t n, Emit&& emit) {
  for (int64_t j = 0; j < n;) {
    U key = k[j];
    if (j + 1 == n || k[j + 1] != key) {
      emit(j, static_cast<uint32_t>(j + 1), static_cast<uint32_t>(j + 1));
      ++j;
      continue;
    }
    int64_t e = j + 2;
    while (e < n && k[e] == key) ++e;
    for (int64_t q = j; q < e; ++q) emit(q, static_cast<uint32_t>(j + 1), static_cast<uint32_t>(e));
    j = e;
  }
}

// Sorted values (stable) and, for each element in input order, the 1-based first and last
// rank of its tie group.
template <typename T>
void tie_bounds_rows(const T* x, T* sorted, int32_t* lo, int32_t* hi, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  for_each_sorted_row(x, rows, n, [&](int64_t r, Scratch<U>& s) {
    const T* xr = x + r * n;
    T* so = sorted + r * n;
    const U* k = s.k0.data();
    const U* perm = s.p0.data();
    int32_t* outs[2] = {lo + r * n, hi + r * n};
    Unsorter<2> un(n, outs);
    // The values are decoded from the keys (sequential writes) rather than gathered from xr.
    if (un.direct()) {
      walk_tie_groups(k, n, [&](int64_t j, uint32_t l, uint32_t h) {
        so[j] = value_of<T>(k[j]);
        un.put_direct(perm[j], l, h);
      });
    } else {
      walk_tie_groups(k, n, [&](int64_t j, uint32_t l, uint32_t h) {
        so[j] = value_of<T>(k[j]);
        un.put_packed(perm[j], un.pack(l, h));
      });
      un.finish();
    }
    // +-0.0 and NaN payloads decode to +0.0 and the canonical NaN: put the input's bit
    // patterns back. Both sorts keep a tie group in input order (the radix sort is stable,
    // the network's composites hold the index), so that is a gather over these groups only.
    if constexpr (std::is_floating_point_v<T>) {
      constexpr U kZero = U(1) << (8 * sizeof(U) - 1);
      const U kNan = key_of(std::numeric_limits<T>::quiet_NaN());  // the largest key
      for (int64_t j = std::lower_bound(k, k + n, kZero) - k; j < n && k[j] == kZero; ++j) so[j] = xr[perm[j]];
      for (int64_t j = std::lower_bound(k, k + n, kNan) - k; j < n; ++j) so[j] = xr[perm[j]];
    }
  });
}

// Dense ranks (tie groups numbered 1, 2, ... in ascending order), input order. One output
// array: here the direct scatter measured faster than the two-pass Unsorter (2e6 elements).
template <typename T>
void dense_rank_rows(const T* x, int32_t* dense, int64_t rows, int64_t n) {
  using U = typename KeyType<T>::U;
  for_each_sorted_row(x, rows, n, [&](int64_t r, Scratch<U>& s) {
    const U* k = s.k0.data();
    const U* perm = s.p0.data();
    int32_t* d = dense + r * n;
    int32_t group = 0;
    for (int64_t i = 0; i < n; ++i) {
      group += i == 0 || k[i] != k[i - 1];
      d[perm[i]] = group;
    }
  });
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
