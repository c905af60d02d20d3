// jaxstats compensated reductions, called from JAX through the XLA FFI (jax.ffi.ffi_call) by
// jaxstats/evidence.py (compensated_sum, log_bayes_factor, log_posterior) on CPU.
//
// Every target reduces a row-major array viewed as (outer, n, inner) over its middle axis and
// writes the sums as double words (hi, lo) of shape (outer, inner): hi is the sum rounded once
// (hi == fl(hi + lo)) and lo the remainder. All dimensions before the last two are "outer", so a
// vmapped call (batch dimension prepended) needs no special handling.
//
// Accumulation (Ogita-Rump-Oishi Sum2 per lane): many independent lanes, each a TwoSum
// accumulator (hi) plus a plain sum of the TwoSum errors (lo). Lanes run in lock-step over the
// input, so the compiler vectorizes them (GCC/Clang vector extensions: AVX-512 with
// -march=native, narrower vectors otherwise), and part of the additions are issued on the FMA
// ports (add_on_fma). Each register lane takes at most kFlush = 64 terms before it is added into
// a second level of lanes in memory (flush), so the plain sums of errors stay short whatever n.
// At the end the lanes of one column are folded with TwoSum (the fold's own errors through a
// second TwoSum chain) and rounded once.
//
//   * inner <= 16 ("stream"): the (n, inner) block of one outer index is one flat stream read
//     with L = 64..240 lanes, L a multiple of inner, so lane j always accumulates column
//     j % inner.
//   * larger inner, or short blocks ("columns"): vectorized across the columns, with up to 64
//     accumulator rows (row i goes to accumulator row i % R), folded per column at the end.
//
// Targets:
//   JaxstatsCompensatedSum(x)              terms x
//   JaxstatsDifferenceSum(a, b)            terms a - b, each formed exactly (TwoSum pair)
//   JaxstatsCenteredSum(x[, mask]; group)  terms x - m, formed exactly (pairs), m the max of
//                                          the live elements of each run of `group` consecutive
//                                          elements (a row's hypotheses); a masked-out element
//                                          counts as 0 - m (log_posterior)
// Pair terms (h, l) are formed in registers where possible (differences; groups of 2 without a
// mask), otherwise into L1-sized buffers first.
//
// Non-finite values behave like a plain sum: a lane's hi holds every inf/NaN it met (inf + -inf
// is NaN), the fold of the lanes' hi is an ordinary sum of them, and whenever that is not finite
// it is returned as is with lo = 0 (the TwoSum error terms of infinities are NaN and are never
// used). A finite sum that overflows gives inf, as a plain sum would.
//
// No fast-math: TwoSum needs IEEE round-to-nearest and no re-association. There are no
// multiplications (the FMAs multiply by exactly 1), so contraction cannot change anything.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// ------------------------------------------------------------------------------------------
// Vectors (64 bytes: one AVX-512 register; the compiler splits them on narrower targets)
// ------------------------------------------------------------------------------------------

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(64)));
  static constexpr int W = 16;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(64)));
  static constexpr int W = 8;
};

template <typename V, typename T>
inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename T>
inline void store(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// Knuth's TwoSum: s = fl(a + b) and s + e == a + b exactly (s finite). Scalars and vectors.
template <typename X>
inline void two_sum(X a, X b, X& s, X& e) {
  s = a + b;
  X bv = s - a;
  X av = s - bv;
  e = (a - av) + (b - bv);
}

// Additions issued as fused multiply-adds with a factor of exactly 1: fma(a, 1, b) is a + b
// rounded once, bit for bit (inf/NaN/signed zeros included), but it runs on the FMA ports.
// x86 cores have as many FMA as add ports (Zen 4: two of each), so moving three of the seven
// additions of an accumulation step there lifts the stream loop, otherwise bound by the add
// ports (measured on a Zen 4 EPYC: 10**6 float32 in 130 -> 79 us). Without AVX-512 it is a
// plain addition.
#if defined(__AVX512F__)
inline Simd<float>::V add_on_fma(Simd<float>::V a, Simd<float>::V b) {
  return (Simd<float>::V)_mm512_fmadd_ps((__m512)a, _mm512_set1_ps(1.0f), (__m512)b);
}
inline Simd<float>::V sub_on_fma(Simd<float>::V a, Simd<float>::V b) {
  return (Simd<float>::V)_mm512_fmsub_ps((__m512)a, _mm512_set1_ps(1.0f), (__m512)b);
}
inline Simd<double>::V add_on_fma(Simd<double>::V a, Simd<double>::V b) {
  return (Simd<double>::V)_mm512_fmadd_pd((__m512d)a, _mm512_set1_pd(1.0), (__m512d)b);
}
inline Simd<double>::V sub_on_fma(Simd<double>::V a, Simd<double>::V b) {
  return (Simd<double>::V)_mm512_fmsub_pd((__m512d)a, _mm512_set1_pd(1.0), (__m512d)b);
}
#else
template <typename V>
inline V add_on_fma(V a, V b) {
  return a + b;
}
template <typename V>
inline V sub_on_fma(V a, V b) {
  return a - b;
}
#endif

// One accumulation step of a vector of lanes: (hi, lo) += x by TwoSum, the error into lo,
// with the additions spread over the add and FMA ports (same values as two_sum).
template <typename V>
inline void accumulate(V& hi, V& lo, V x) {
  V s = hi + x;
  V bv = sub_on_fma(s, hi);
  V av = s - bv;
  V e = sub_on_fma(hi, av) + (x - bv);
  hi = s;
  lo = add_on_fma(e, lo);
}

template <typename T>
inline bool finite(T v) {
  return v - v == T(0);  // false for inf and NaN
}

// Fold of accumulators into one column: a TwoSum chain over the hi terms whose errors, and the
// lo terms, go through a second TwoSum chain (eh), so only the errors of that chain (el, third
// order) are summed plainly. With a plain sum of the errors instead, the fold of 128 lanes was
// the largest error term at condition numbers ~1e8 (a few ulps); now it is negligible.
template <typename X>
struct Fold {
  X s{}, eh{}, el{};
  inline void add(X hi, X lo) {
    X t, f, u, g;
    two_sum(s, hi, t, f);
    s = t;
    two_sum(eh, f, u, g);
    el += g;
    two_sum(u, lo, eh, g);
    el += g;
  }
  inline void add(const Fold& o) {  // another fold's (s, eh, el)
    add(o.s, o.eh);
    el += o.el;
  }
};

// Round a column's fold to the output pair (hi = the sum rounded once, lo = the remainder).
// A non-finite s is a plain sum of the infinities/NaNs met (the errors are meaningless there).
template <typename T>
inline void finish(const Fold<T>& f, T* out_hi, T* out_lo) {
  if (!finite(f.s)) {
    *out_hi = f.s;
    *out_lo = T(0);
    return;
  }
  T h, t, h2, l2;
  two_sum(f.s, f.eh, h, t);
  two_sum(h, t + f.el, h2, l2);
  *out_hi = h2;
  *out_lo = finite(h2) ? l2 : T(0);
}

// Swap the elements of each adjacent pair of a vector: {x1, x0, x3, x2, ...}.
inline Simd<float>::V swap_pairs(Simd<float>::V v) {
#if defined(__clang__)
  return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
#else
  typedef int32_t I __attribute__((vector_size(64)));
  return __builtin_shuffle(v, I{1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14});
#endif
}
inline Simd<double>::V swap_pairs(Simd<double>::V v) {
#if defined(__clang__)
  return __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
#else
  typedef int64_t I __attribute__((vector_size(64)));
  return __builtin_shuffle(v, I{1, 0, 3, 2, 5, 4, 7, 6});
#endif
}

// ------------------------------------------------------------------------------------------
// Term sources. get(): the terms of a flat range [start, start + count) of one (n, inner)
// block, as pointers to the high parts (and, for exact pairs, the low parts), formed in the
// scratch buffers when they are not the input itself. vterms() (kVector sources only): the
// terms of the W elements at `pos` as vectors, formed in registers by the stream loop.
// ------------------------------------------------------------------------------------------

template <typename T>
struct PlainTerms {
  static constexpr bool kHasLo = false;
  static constexpr bool kBuffered = false;
  static constexpr bool kVector = true;
  const T* x = nullptr;
  const T* x_slab = nullptr;
  T* hbuf = nullptr;
  T* lbuf = nullptr;
  T* tbuf = nullptr;
  void slab(int64_t offset) { x_slab = x + offset; }
  inline void get(int64_t start, int64_t /*count*/, const T** h, const T** l) {
    *h = x_slab + start;
    *l = nullptr;
  }
  template <typename V>
  inline void vterms(int64_t pos, V& h, V& /*l*/) const {
    h = load<V>(x_slab + pos);
  }
};

template <typename T>
struct DifferenceTerms {
  static constexpr bool kHasLo = true;
  static constexpr bool kBuffered = true;
  static constexpr bool kVector = true;
  const T* a = nullptr;
  const T* b = nullptr;
  const T* a_slab = nullptr;
  const T* b_slab = nullptr;
  T* hbuf = nullptr;
  T* lbuf = nullptr;
  T* tbuf = nullptr;
  void slab(int64_t offset) {
    a_slab = a + offset;
    b_slab = b + offset;
  }
  inline void get(int64_t start, int64_t count, const T** h, const T** l) {
    const T* __restrict pa = a_slab + start;
    const T* __restrict pb = b_slab + start;
    T* __restrict ph = hbuf;
    T* __restrict pl = lbuf;
    for (int64_t i = 0; i < count; ++i) {
      T s, e;
      two_sum(pa[i], -pb[i], s, e);
      ph[i] = s;
      pl[i] = (s - s == T(0)) ? e : T(0);
    }
    *h = hbuf;
    *l = lbuf;
  }
  // The error term is not zeroed where h is not finite: h then makes its lane's hi non-finite,
  // and a non-finite fold is returned without lo.
  template <typename V>
  inline void vterms(int64_t pos, V& h, V& l) const {
    two_sum(load<V>(a_slab + pos), -load<V>(b_slab + pos), h, l);
  }
};

// x - max over each group of K consecutive elements (a row's hypotheses), as the exact pair
// two_sum(x, -m); m is taken as 0 when it is not finite (all -inf, +inf or NaN), NaN propagates
// through the max (as jnp.max). With a mask the max is over the live elements, and a masked-out
// element counts as 0 shifted like the others, (-m, 0): every hypothesis of a row is shifted by
// the same m, so the shift cancels in log_posterior's normalization whatever the mask.
// K = 0: runtime group size k; a compile-time K lets the compiler unroll the group and
// vectorize across groups.
template <typename T>
inline T max_nan(T m, T v) {
  return (v > m || v != v) ? v : m;
}

template <typename T, int K, bool Masked>
void center_fill(const T* __restrict px, const uint8_t* __restrict pm, int64_t count,
                 int64_t k_rt, T* __restrict ph, T* __restrict pl) {
  const int64_t k = K ? K : k_rt;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t g = 0; g < count; g += k) {
    T m = neg_inf;
    for (int64_t j = 0; j < k; ++j) m = max_nan(m, px[g + j]);
    const T nm = (m - m == T(0)) ? -m : T(0);
    for (int64_t j = 0; j < k; ++j) {
      T s, e;
      two_sum(px[g + j], nm, s, e);
      e = (s - s == T(0)) ? e : T(0);
      if constexpr (Masked) {
        const bool live = pm[g + j] != 0;
        ph[g + j] = live ? s : nm;
        pl[g + j] = live ? e : T(0);
      } else {
        ph[g + j] = s;
        pl[g + j] = e;
      }
    }
  }
}

template <typename T, bool Masked>
void center_fill_any(const T* px, const uint8_t* pm, int64_t count, int64_t k, T* ph, T* pl) {
  switch (k) {
    case 1: center_fill<T, 1, Masked>(px, pm, count, k, ph, pl); break;
    case 2: center_fill<T, 2, Masked>(px, pm, count, k, ph, pl); break;
    case 3: center_fill<T, 3, Masked>(px, pm, count, k, ph, pl); break;
    case 4: center_fill<T, 4, Masked>(px, pm, count, k, ph, pl); break;
    case 5: center_fill<T, 5, Masked>(px, pm, count, k, ph, pl); break;
    case 6: center_fill<T, 6, Masked>(px, pm, count, k, ph, pl); break;
    case 7: center_fill<T, 7, Masked>(px, pm, count, k, ph, pl); break;
    case 8: center_fill<T, 8, Masked>(px, pm, count, k, ph, pl); break;
    default: center_fill<T, 0, Masked>(px, pm, count, k, ph, pl); break;
  }
}

// With a mask, masked-out entries are first replaced by -inf (they never raise the max, and a
// group with no live entry has max -inf and is not shifted), branch-free; the mask is read as
// bytes (XLA's PRED is one byte, 0 or 1; bytes vectorize where bool does not).
template <typename T>
void center_fill_masked(const T* __restrict px, const uint8_t* __restrict pm, int64_t count,
                        int64_t k, T* __restrict tmp, T* __restrict ph, T* __restrict pl) {
  const T neg_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < count; ++i) {
    const T v = px[i];
    tmp[i] = pm[i] != 0 ? v : neg_inf;
  }
  center_fill_any<T, true>(tmp, pm, count, k, ph, pl);
}

// Pairs of hypotheses (group 2) without a mask (Pairs = true) are formed in registers by the
// stream loop (a group never straddles a vector); every other case fills the buffers.
template <typename T, bool Pairs>
struct CenteredTerms {
  static constexpr bool kHasLo = true;
  static constexpr bool kBuffered = true;
  static constexpr bool kVector = Pairs;
  const T* x = nullptr;
  const uint8_t* mask = nullptr;
  int64_t group = 2;
  const T* x_slab = nullptr;
  const uint8_t* m_slab = nullptr;
  T* hbuf = nullptr;
  T* lbuf = nullptr;
  T* tbuf = nullptr;
  void slab(int64_t offset) {
    x_slab = x + offset;
    m_slab = mask ? mask + offset : nullptr;
  }
  inline void get(int64_t start, int64_t count, const T** h, const T** l) {
    if (m_slab == nullptr) {
      center_fill_any<T, false>(x_slab + start, nullptr, count, group, hbuf, lbuf);
    } else {
      center_fill_masked<T>(x_slab + start, m_slab + start, count, group, tbuf, hbuf, lbuf);
    }
    *h = hbuf;
    *l = lbuf;
  }
  // Group 2, no mask: the terms of get(), lanes 2i and 2i + 1 forming one group. (Where the two
  // values are equal the max may be the other zero, -0.0 for +0.0: the terms are the same.)
  // l is not zeroed where h is not finite: see DifferenceTerms::vterms.
  template <typename V>
  inline void vterms(int64_t pos, V& h, V& l) const {
    const V v = load<V>(x_slab + pos);
    const V w = swap_pairs(v);
    const V m = ((w > v) | (w != w)) ? w : v;
    const V ms = (m - m == V{}) ? m : V{};
    two_sum(v, -ms, h, l);
  }
};

// ------------------------------------------------------------------------------------------
// Stream path: U vector accumulators (L = U * W lanes) over one flat (n, inner) block,
// L a multiple of inner.
// ------------------------------------------------------------------------------------------

// Elements per buffered chunk (a multiple of L): small enough to stay in L1.
template <typename T>
inline int64_t chunk_elems(int64_t lanes) {
  const int64_t target = 8192 / static_cast<int64_t>(sizeof(T));  // 8 KiB per buffer
  return lanes * std::max<int64_t>(1, target / lanes);
}

// Two levels of accumulators. The register lanes (level 1) take at most kFlush terms each and
// are then added into memory lanes (level 2, TwoSum on hi, plain sum of lo) and restarted from
// zero. The only rounding errors of Sum2 are those of the plain sums of TwoSum errors; with a
// restart they are errors of sums of kFlush small terms (of partial sums of kFlush terms)
// instead of n / L, so long inputs keep the accuracy of short ones, at the cost of one flush
// per kFlush * L terms.
constexpr int64_t kFlush = 64;

// Level 1 -> level 2: (mh, ml) += (hi, lo) (the caller restarts hi and lo from zero).
template <typename V, typename T>
inline void flush(V hi, V lo, T* mh, T* ml) {
  V s, e;
  two_sum(load<V>(mh), hi, s, e);
  store(mh, s);
  store(ml, load<V>(ml) + (e + lo));
}

// Level 1 over the full lane blocks [s0, s1) (at most kFlush per lane), then flushed into the
// memory lanes. Local accumulators per call keep them in registers.
template <typename T, int U, typename Src>
inline void stream_level1(const Src& src, int64_t s0, int64_t s1, T* lane_hi, T* lane_lo) {
  using V = typename Simd<T>::V;
  constexpr int W = Simd<T>::W;
  constexpr int L = U * W;
  V hi[U], lo[U];
  for (int u = 0; u < U; ++u) {
    hi[u] = V{};
    lo[u] = V{};
  }
  for (int64_t i = s0; i < s1; i += L) {
    for (int u = 0; u < U; ++u) {
      V h, l;
      src.vterms(i + u * W, h, l);
      if constexpr (Src::kHasLo) lo[u] += l;
      accumulate(hi[u], lo[u], h);
    }
  }
  for (int u = 0; u < U; ++u) flush(hi[u], lo[u], lane_hi + u * W, lane_lo + u * W);
}

// The same over buffered terms h (and l) of `count` elements, a multiple of L.
template <typename T, int U, bool HasLo>
inline void buffer_level1(const T* h, const T* l, int64_t count, T* lane_hi, T* lane_lo) {
  using V = typename Simd<T>::V;
  constexpr int W = Simd<T>::W;
  constexpr int L = U * W;
  V hi[U], lo[U];
  for (int u = 0; u < U; ++u) {
    hi[u] = V{};
    lo[u] = V{};
  }
  for (int64_t i = 0; i < count; i += L) {
    for (int u = 0; u < U; ++u) {
      if constexpr (HasLo) lo[u] += load<V>(l + i + u * W);
      accumulate(hi[u], lo[u], load<V>(h + i + u * W));
    }
  }
  for (int u = 0; u < U; ++u) flush(hi[u], lo[u], lane_hi + u * W, lane_lo + u * W);
}

template <typename T, int U, typename Src>
void stream_block(Src& src, int64_t total, int64_t inner, T* lane_hi, T* lane_lo, T* out_hi,
                  T* out_lo) {
  constexpr int L = U * Simd<T>::W;
  std::fill(lane_hi, lane_hi + L, T(0));
  std::fill(lane_lo, lane_lo + L, T(0));
  const int64_t full = total - total % L;
  if constexpr (Src::kVector) {
    for (int64_t s0 = 0; s0 < full; s0 += kFlush * L) {
      stream_level1<T, U>(src, s0, std::min(full, s0 + kFlush * L), lane_hi, lane_lo);
    }
  } else {
    // Buffers of at most kFlush terms per lane (chunk_elems <= 8 KiB < kFlush * L elements).
    const int64_t chunk = chunk_elems<T>(L);
    for (int64_t c0 = 0; c0 < full; c0 += chunk) {
      const int64_t count = std::min(chunk, full - c0);
      const T* h;
      const T* l;
      src.get(c0, count, &h, &l);
      buffer_level1<T, U, Src::kHasLo>(h, l, count, lane_hi, lane_lo);
    }
  }
  if (full < total) {  // tail: element full + t goes to lane t (column t % inner)
    const T* h;
    const T* l;
    src.get(full, total - full, &h, &l);
    for (int64_t t = 0; t < total - full; ++t) {
      T s, e;
      two_sum(lane_hi[t], h[t], s, e);
      lane_hi[t] = s;
      if constexpr (Src::kHasLo) {
        lane_lo[t] += e + l[t];
      } else {
        lane_lo[t] += e;
      }
    }
  }
  // Fold: when every vector holds whole periods of the columns (W % inner == 0) the U vectors
  // are first folded into one with vector arithmetic; then the lanes of each column.
  constexpr int W = Simd<T>::W;
  using V = typename Simd<T>::V;
  if (W % inner == 0) {
    Fold<V> fv;
    for (int u = 0; u < U; ++u) fv.add(load<V>(lane_hi + u * W), load<V>(lane_lo + u * W));
    alignas(64) T fs[W], fh[W], fl[W];
    store(fs, fv.s);
    store(fh, fv.eh);
    store(fl, fv.el);
    for (int64_t c = 0; c < inner; ++c) {
      Fold<T> f;
      for (int64_t j = c; j < W; j += inner) f.add(Fold<T>{fs[j], fh[j], fl[j]});
      finish(f, out_hi + c, out_lo + c);
    }
  } else {
    for (int64_t c = 0; c < inner; ++c) {
      Fold<T> f;
      for (int64_t j = c; j < L; j += inner) f.add(lane_hi[j], lane_lo[j]);
      finish(f, out_hi + c, out_lo + c);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Column path: vectorized across (a chunk of) the columns, R accumulator rows per column,
// flushed into a second level every kFlush sweeps of R rows (as in the stream path).
// ------------------------------------------------------------------------------------------

template <typename T, bool HasLo>
inline void column_add(T* __restrict ah, T* __restrict al, const T* __restrict h,
                       const T* __restrict l, int64_t width) {
  for (int64_t c = 0; c < width; ++c) {
    T s, e;
    two_sum(ah[c], h[c], s, e);
    ah[c] = s;
    if constexpr (HasLo) {
      al[c] += e + l[c];
    } else {
      al[c] += e;
    }
  }
}

template <typename T>
inline void column_flush(T* __restrict ah, T* __restrict al, T* __restrict th,
                         T* __restrict tl, int64_t count) {
  for (int64_t c = 0; c < count; ++c) {
    T s, e;
    two_sum(th[c], ah[c], s, e);
    th[c] = s;
    tl[c] += e + al[c];
    ah[c] = T(0);
    al[c] = T(0);
  }
}

template <typename T, typename Src>
void column_block(Src& src, int64_t n, int64_t inner, int64_t col_chunk, T* acc, T* out_hi,
                  T* out_lo) {
  for (int64_t c0 = 0; c0 < inner; c0 += col_chunk) {
    const int64_t width = std::min(col_chunk, inner - c0);
    // Accumulator rows: enough lanes to keep the vector units busy and the per-lane error
    // small, but never more than n / 4 (short blocks would pay for folding empty rows).
    int64_t rows = std::max<int64_t>(1, 256 / width);
    rows = std::min<int64_t>(rows, 64);
    rows = std::max<int64_t>(1, std::min<int64_t>(rows, n / 4));
    const int64_t cells = rows * width;
    T* acc_hi = acc;
    T* acc_lo = acc + cells;
    T* tot_hi = acc + 2 * cells;
    T* tot_lo = acc + 3 * cells;
    std::fill(acc, acc + 4 * cells, T(0));
    int64_t i = 0;
    int64_t sweeps = 0;
    for (; i + rows <= n; i += rows) {
      for (int64_t r = 0; r < rows; ++r) {
        const T* h;
        const T* l;
        src.get((i + r) * inner + c0, width, &h, &l);
        column_add<T, Src::kHasLo>(acc_hi + r * width, acc_lo + r * width, h, l, width);
      }
      if (++sweeps == kFlush) {
        column_flush(acc_hi, acc_lo, tot_hi, tot_lo, cells);
        sweeps = 0;
      }
    }
    for (int64_t r = 0; i < n; ++i, ++r) {
      const T* h;
      const T* l;
      src.get(i * inner + c0, width, &h, &l);
      column_add<T, Src::kHasLo>(acc_hi + r * width, acc_lo + r * width, h, l, width);
    }
    column_flush(acc_hi, acc_lo, tot_hi, tot_lo, cells);
    for (int64_t c = 0; c < width; ++c) {
      Fold<T> f;
      for (int64_t r = 0; r < rows; ++r) f.add(tot_hi[r * width + c], tot_lo[r * width + c]);
      finish(f, out_hi + c0 + c, out_lo + c0 + c);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Driver
// ------------------------------------------------------------------------------------------

inline int64_t gcd64(int64_t a, int64_t b) {
  while (b) {
    int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Vector accumulators of the stream path for this inner size (0: use the column path).
template <typename T>
int stream_vectors(int64_t inner) {
  constexpr int W = Simd<T>::W;
  if (inner < 1 || inner > 16) return 0;
  const int base = static_cast<int>(inner / gcd64(inner, W));  // lcm(W, inner) / W
  if (base <= 2) return 8;
  if (base == 3) return 6;
  return base;  // 5, 7, 9, 11, 13 or 15
}

struct Scratch {
  std::vector<char> bytes;
  template <typename T>
  T* get(int64_t count) {
    const size_t need = static_cast<size_t>(count) * sizeof(T) + 64;
    if (bytes.size() < need) bytes.resize(need);
    return reinterpret_cast<T*>(bytes.data());
  }
};

template <typename T, typename Src>
void reduce(Src& src, int64_t outer, int64_t n, int64_t inner, int64_t group, T* out_hi,
            T* out_lo) {
  if (outer == 0 || inner == 0) return;
  if (n == 0) {
    std::fill(out_hi, out_hi + outer * inner, T(0));
    std::fill(out_lo, out_lo + outer * inner, T(0));
    return;
  }
  constexpr int W = Simd<T>::W;
  const int64_t total = n * inner;
  int u = stream_vectors<T>(inner);
  if (u && total < 2 * static_cast<int64_t>(u) * W) u = 0;  // short: the fold would dominate
  // Column chunk: whole groups, at most ~512 columns (accumulators stay in L1/L2).
  const int64_t col_chunk = std::min<int64_t>(inner, std::max<int64_t>(group, (512 / group) * group));
  const int64_t lanes = u ? static_cast<int64_t>(u) * W : 0;
  const int64_t buf = Src::kBuffered ? std::max<int64_t>(u ? chunk_elems<T>(lanes) : 0, col_chunk) : 0;
  thread_local Scratch scratch;
  // Accumulators: the stream path's memory lanes (hi, lo), or the column path's two levels
  // of (hi, lo) for at most 256 / width (>= 1) ... 64 rows of col_chunk columns.
  const int64_t cells = std::max<int64_t>(256, col_chunk);
  const int64_t acc = u ? 2 * lanes : 4 * cells;
  T* base = scratch.get<T>(acc + 3 * buf + 16);
  T* acc_hi = base;
  T* acc_lo = base + lanes;
  src.hbuf = base + acc;
  src.lbuf = base + acc + buf;
  src.tbuf = base + acc + 2 * buf;
  for (int64_t o = 0; o < outer; ++o) {
    src.slab(o * total);
    T* oh = out_hi + o * inner;
    T* ol = out_lo + o * inner;
    switch (u) {
      case 5: stream_block<T, 5>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      case 6: stream_block<T, 6>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      case 7: stream_block<T, 7>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      case 8: stream_block<T, 8>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      case 9: stream_block<T, 9>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      case 11: stream_block<T, 11>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      case 13: stream_block<T, 13>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      case 15: stream_block<T, 15>(src, total, inner, acc_hi, acc_lo, oh, ol); break;
      default: column_block<T>(src, n, inner, col_chunk, base, oh, ol); break;
    }
  }
}

// Shape (..., n, inner) -> (outer, n, inner); checks the outputs hold outer * inner elements.
ffi::Error split(ffi::AnyBuffer::Dimensions dims, size_t out_elems, int64_t* outer, int64_t* n,
                 int64_t* inner) {
  if (dims.size() < 2) {
    return ffi::Error::InvalidArgument("jaxstats compensated sum: operand rank must be >= 2");
  }
  *inner = dims[dims.size() - 1];
  *n = dims[dims.size() - 2];
  *outer = 1;
  for (size_t i = 0; i + 2 < dims.size(); ++i) *outer *= dims[i];
  if (static_cast<size_t>(*outer * *inner) != out_elems) {
    return ffi::Error::InvalidArgument("jaxstats compensated sum: result shape mismatch");
  }
  return ffi::Error::Success();
}

template <typename T>
void run_plain(const ffi::AnyBuffer& x, ffi::AnyBuffer& hi, ffi::AnyBuffer& lo, int64_t outer,
               int64_t n, int64_t inner) {
  PlainTerms<T> src;
  src.x = x.typed_data<T>();
  reduce<T>(src, outer, n, inner, 1, hi.typed_data<T>(), lo.typed_data<T>());
}

ffi::Error CompensatedSumImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> hi,
                              ffi::Result<ffi::AnyBuffer> lo) {
  int64_t outer, n, inner;
  if (auto err = split(x.dimensions(), hi->element_count(), &outer, &n, &inner); !err.success()) {
    return err;
  }
  if (hi->element_type() != x.element_type() || lo->element_type() != x.element_type()) {
    return ffi::Error::InvalidArgument("jaxstats compensated sum: result dtype mismatch");
  }
  switch (x.element_type()) {
    case ffi::F32: run_plain<float>(x, *hi, *lo, outer, n, inner); break;
    case ffi::F64: run_plain<double>(x, *hi, *lo, outer, n, inner); break;
    default: return ffi::Error::InvalidArgument("jaxstats compensated sum: float32/float64 only");
  }
  return ffi::Error::Success();
}

template <typename T>
void run_difference(const ffi::AnyBuffer& a, const ffi::AnyBuffer& b, ffi::AnyBuffer& hi,
                    ffi::AnyBuffer& lo, int64_t outer, int64_t n, int64_t inner) {
  DifferenceTerms<T> src;
  src.a = a.typed_data<T>();
  src.b = b.typed_data<T>();
  reduce<T>(src, outer, n, inner, 1, hi.typed_data<T>(), lo.typed_data<T>());
}

ffi::Error DifferenceSumImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> hi,
                             ffi::Result<ffi::AnyBuffer> lo) {
  int64_t outer, n, inner;
  if (auto err = split(a.dimensions(), hi->element_count(), &outer, &n, &inner); !err.success()) {
    return err;
  }
  if (b.element_type() != a.element_type() || b.element_count() != a.element_count() ||
      hi->element_type() != a.element_type() || lo->element_type() != a.element_type()) {
    return ffi::Error::InvalidArgument("jaxstats difference sum: operand/result mismatch");
  }
  switch (a.element_type()) {
    case ffi::F32: run_difference<float>(a, b, *hi, *lo, outer, n, inner); break;
    case ffi::F64: run_difference<double>(a, b, *hi, *lo, outer, n, inner); break;
    default: return ffi::Error::InvalidArgument("jaxstats difference sum: float32/float64 only");
  }
  return ffi::Error::Success();
}

template <typename T, bool Pairs>
void run_centered_with(const T* x, const uint8_t* mask, ffi::AnyBuffer& hi, ffi::AnyBuffer& lo,
                       int64_t outer, int64_t n, int64_t inner, int64_t group) {
  CenteredTerms<T, Pairs> src;
  src.x = x;
  src.mask = mask;
  src.group = group;
  reduce<T>(src, outer, n, inner, group, hi.typed_data<T>(), lo.typed_data<T>());
}

template <typename T>
void run_centered(const ffi::AnyBuffer& x, const uint8_t* mask, ffi::AnyBuffer& hi,
                  ffi::AnyBuffer& lo, int64_t outer, int64_t n, int64_t inner, int64_t group) {
  const T* px = x.typed_data<T>();
  if (mask == nullptr && group == 2) {  // two hypotheses, the common case
    run_centered_with<T, true>(px, nullptr, hi, lo, outer, n, inner, group);
  } else {
    run_centered_with<T, false>(px, mask, hi, lo, outer, n, inner, group);
  }
}

ffi::Error CenteredSumImpl(ffi::AnyBuffer x, ffi::RemainingArgs rest,
                           ffi::Result<ffi::AnyBuffer> hi, ffi::Result<ffi::AnyBuffer> lo,
                           int64_t group) {
  int64_t outer, n, inner;
  if (auto err = split(x.dimensions(), hi->element_count(), &outer, &n, &inner); !err.success()) {
    return err;
  }
  if (group < 1 || inner % group != 0) {
    return ffi::Error::InvalidArgument("jaxstats centered sum: group must divide the last axis");
  }
  if (hi->element_type() != x.element_type() || lo->element_type() != x.element_type()) {
    return ffi::Error::InvalidArgument("jaxstats centered sum: result dtype mismatch");
  }
  const uint8_t* mask = nullptr;
  if (rest.size() > 1) {
    return ffi::Error::InvalidArgument("jaxstats centered sum: at most one mask operand");
  }
  if (rest.size() == 1) {
    auto m = rest.get<ffi::AnyBuffer>(0);
    if (!m.has_value()) return m.error();
    if (m->element_type() != ffi::PRED || m->element_count() != x.element_count()) {
      return ffi::Error::InvalidArgument("jaxstats centered sum: mask must be bool, shaped like x");
    }
    mask = reinterpret_cast<const uint8_t*>(m->untyped_data());
  }
  switch (x.element_type()) {
    case ffi::F32: run_centered<float>(x, mask, *hi, *lo, outer, n, inner, group); break;
    case ffi::F64: run_centered<double>(x, mask, *hi, *lo, outer, n, inner, group); break;
    default: return ffi::Error::InvalidArgument("jaxstats centered sum: float32/float64 only");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsCompensatedSum, CompensatedSumImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsDifferenceSum, DifferenceSumImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsCenteredSum, CenteredSumImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .RemainingArgs()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("group"));
