// jaxstats exact selection among the O(n^2) implicit pair values of a sorted sample, called
// from JAX through the XLA FFI by jaxstats/_pairsel.py (Hodges-Lehmann, Qn) on CPU.
//
// JaxstatsSelectPair(a, k_hi, k_lo; kind, with_next) -> (value, next)
//
//   a          [..., n] float32 or float64; every row sorted ascending and free of NaN
//   k_hi, k_lo int32 [...]: the 1-based rank k = k_hi * 2^15 + k_lo, one per row
//   kind       0 = "walsh":   pairs i <= j, value a_i * 0.5 + a_j * 0.5
//              1 = "absdiff": pairs i <  j, value a_j - a_i, and 0 when a_i == a_j
//   with_next  1: also return the (k+1)-th smallest value; 0: next = value
//   value      [...]: the k-th smallest pair value (NaN when k is outside [1, number of pairs])
//   next       [...]: the (k+1)-th smallest (equal to value when tied; +inf when k is the last)
//
// The pair values are computed exactly as _pairsel.pair_value computes them (no FMA
// contraction: the build is ISO C++), so the answer is the exact order statistic of the values
// the XLA path and a naive implementation compare.
//
// Algorithm. Row i of the sorted sample holds its pair values in non-decreasing column order,
// and a row's split at a threshold t (the first column whose value exceeds t) moves
// monotonically with i: non-decreasing for "absdiff" (a_j - a_i falls as i grows), non-
// increasing for "walsh" (a_i/2 + a_j/2 grows with i). So the number of pairs <= t is counted
// by one two-pointer sweep in O(n), not O(n log n). (IEEE subtraction, multiplication and
// addition are monotone in each operand, so this holds for the rounded values.)
//
// Every row keeps a bracket [L_i, R_i) of candidate columns: pairs left of it rank below the
// target, pairs right of it above. A round (Floyd-Rivest style)
//   1. draws a stratified random sample of m candidates (one uniform position in each of m
//      equal strata of the row-major candidate list, O(n + m));
//   2. picks the sample order statistics p1 <= p2 three binomial standard errors below and
//      above the target's expected sample position (two nth_element calls, O(m));
//   3. splits every row at "<= p1" and "< p2" (two sweeps) and keeps the splits that bound
//      the target. Both pivots are candidates, so every round removes at least one candidate;
//      when the target lies in "<= p1" but not in "< p2" (p1 == p2) it is p1.
// When at most `cap` candidates are left they are copied out and the target is selected with
// nth_element. Typically two or three rounds (n = 10^3..10^6); the sample only affects speed,
// never the result. Pseudo-random numbers come from a fixed-seed splitmix64 generator, so the
// kernel is deterministic.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLimb = 15;

struct SplitMix64 {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
};

// Rows are copied into a buffer with kPad readable elements before and after them.
constexpr int64_t kPad = 8;

template <typename T, int Kind>
struct Pairs {
  const T* a;  // the sorted row; a[-kPad] .. a[n + kPad - 1] readable when the sweeps run
  int64_t n;

  T value(int64_t i, int64_t j) const { return value_at(a[i], a[j]); }
  int64_t start(int64_t i) const { return Kind == 0 ? i : std::min(i + 1, n); }
  int64_t n_pairs() const { return Kind == 0 ? n * (n + 1) / 2 : n * (n - 1) / 2; }

  // Moves the column pointer p of row i from its start to the first column in [lo, hi] whose
  // value is > t (>= t when Strict): rightwards ("absdiff"; p starts at or left of the answer)
  // or leftwards ("walsh"; p starts at or right of it). Rows are monotone, so the columns that
  // pass in a window of kWin form a prefix of it, and their number is the distance to the
  // answer when below kWin: a branch-free step, which most rows need only once (the pointer
  // moves O(1) per row on average). The window reads up to kWin elements past either end of
  // the row: the row is a padded copy (-inf before, +inf after), so the padded row is
  // monotone as well, and the count is clamped to the bracket. A non-finite a_i (where
  // inf - inf or inf + -inf would appear) takes the same step with explicit per-lane masks.
  template <bool Strict>
  __attribute__((always_inline)) inline void advance(int64_t i, int64_t lo, int64_t hi, T t,
                                                    int64_t& p) const {
    constexpr int kWin = 4;
    static_assert(kWin <= kPad, "the window must stay inside the padding");
    const T ai = a[i];
    if (std::isfinite(ai)) {
      for (;;) {
        int c = 0;
        for (int u = 0; u < kWin; ++u) {
          if (Kind == 1) {
            const T v = a[p + u] - ai;  // = value_at: a_j == a_i gives 0 when finite
            c += Strict ? v < t : v <= t;
          } else {
            const T v = ai * T(0.5) + a[p - 1 - u] * T(0.5);
            c += Strict ? v >= t : v > t;
          }
        }
        const int64_t room = Kind == 1 ? hi - p : p - lo;
        const int64_t step = std::min<int64_t>(c, room);
        p += Kind == 1 ? step : -step;
        if (c < kWin || room <= kWin) return;
      }
    }
    for (;;) {
      int c = 0;
      for (int u = 0; u < kWin; ++u) {
        if (Kind == 1) {
          const int64_t j = p + u;
          const T v = value_at(ai, a[j]);
          c += (j < hi) & (Strict ? v < t : v <= t);
        } else {
          const int64_t j = p - 1 - u;
          const T v = value_at(ai, a[j]);
          c += (j >= lo) & (Strict ? v >= t : v > t);
        }
      }
      p += Kind == 1 ? c : -c;
      if (c < kWin) return;
    }
  }

  // The first column in [lo, hi] whose value is > t (>= t when Strict): binary search.
  template <bool Strict>
  int64_t seek(int64_t i, int64_t lo, int64_t hi, T t) const {
    const T ai = a[i];
    while (lo < hi) {
      const int64_t mid = lo + ((hi - lo) >> 1);
      const T v = value_at(ai, a[mid]);
      if (Strict ? v < t : v <= t) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  T value_at(T ai, T aj) const {
    if (Kind == 0) return ai * T(0.5) + aj * T(0.5);
    return ai == aj ? T(0) : aj - ai;
  }

  // Splits every row at "<= t1" (into A) and at "< t2" (into B): the first column in
  // [L_i, R_i] whose value is > t1, resp. >= t2. Returns (sum(A - L), sum(B - L)). One sweep
  // over the rows in ascending order with two monotone pointers (O(n) steps in all). A pointer
  // may jump to a bracket end, which needs the selection's invariant that the bracket ends
  // bound every pivot: values left of L_i are below it ("absdiff" jumps to L_i), values from
  // R_i on above it ("walsh" jumps to R_i). Both pivots are candidates, which keeps it.
  //
  // The pointer chain of one sweep is a serial dependency (load, compare, add), so the rows are
  // cut into kSeg contiguous segments swept in lockstep, each with its own pointers (found for
  // its first row by binary search): independent chains the CPU overlaps.
  std::pair<int64_t, int64_t> split2(const int32_t* L, const int32_t* R, T t1, T t2, int32_t* A,
                                     int32_t* B) const {
    constexpr int kSeg = 8;
    const int64_t seg = (n + kSeg - 1) / kSeg;
    int64_t pa[kSeg], pb[kSeg], tot_a[kSeg], tot_b[kSeg];
    for (int s = 0; s < kSeg; ++s) {
      const int64_t i = std::min(s * seg, n - 1);  // each segment starts at its answer
      pa[s] = seek<false>(i, L[i], R[i], t1);
      pb[s] = seek<true>(i, L[i], R[i], t2);
      tot_a[s] = tot_b[s] = 0;
    }
    for (int64_t r = 0; r < seg; ++r) {
      for (int s = 0; s < kSeg; ++s) {
        const int64_t i = s * seg + r;
        if (i >= n) continue;
        const int64_t lo = L[i], hi = R[i];
        int64_t qa = std::min(std::max(pa[s], lo), hi);
        int64_t qb = std::min(std::max(pb[s], lo), hi);
        advance<false>(i, lo, hi, t1, qa);
        advance<true>(i, lo, hi, t2, qb);
        A[i] = static_cast<int32_t>(qa);
        B[i] = static_cast<int32_t>(qb);
        tot_a[s] += qa - lo;
        tot_b[s] += qb - lo;
        pa[s] = qa;
        pb[s] = qb;
      }
    }
    int64_t sa = 0, sb = 0;
    for (int s = 0; s < kSeg; ++s) {
      sa += tot_a[s];
      sb += tot_b[s];
    }
    return {sa, sb};
  }
};

template <typename T>
struct Work {
  std::vector<int32_t> L, R, A, B;  // brackets and the two splits of a round
  std::vector<T> row;               // padded copy of the row
  std::vector<T> sample, buf;       // sampled candidates; enumerated candidates
};

// Sample size per round and the candidate count below which candidates are enumerated: rounds
// cost O(n + m), the final selection O(cap).
int64_t sample_size(int64_t n) { return std::max<int64_t>(2048, std::min<int64_t>(n / 4, 1 << 18)); }
int64_t enumeration_cap(int64_t n) { return 8 * sample_size(n); }

// The smallest value at the columns S_i < n over all rows (+inf if none). With S_i the first
// column of each row above some bound, that is the smallest pair value above it.
template <typename T, int Kind>
T min_at(const Pairs<T, Kind>& P, const int32_t* S) {
  T best = std::numeric_limits<T>::infinity();
  for (int64_t i = 0; i < P.n; ++i) {
    if (S[i] < P.n) best = std::min(best, P.value(i, S[i]));
  }
  return best;
}

// The k-th smallest pair value and, with_next, the (k+1)-th (else the k-th again). Pairs right
// of the final brackets are above every candidate, so the (k+1)-th is either the next candidate
// or the smallest of them: no second count is needed.
template <typename T, int Kind>
std::pair<T, T> select_row(const Pairs<T, Kind>& P, Work<T>& w, int64_t k, bool with_next) {
  const int64_t n = P.n;
  const int64_t total_pairs = P.n_pairs();
  int32_t* L = w.L.data();
  int32_t* R = w.R.data();
  int32_t* A = w.A.data();
  int32_t* B = w.B.data();
  for (int64_t i = 0; i < n; ++i) {
    L[i] = static_cast<int32_t>(P.start(i));
    R[i] = static_cast<int32_t>(n);
  }
  const int64_t m = sample_size(n);
  const int64_t cap = enumeration_cap(n);
  std::vector<T>& sample = w.sample;
  sample.resize(m);
  SplitMix64 rng{0x6A09E667F3BCC909ull ^ static_cast<uint64_t>(n) * 0x9E3779B97F4A7C15ull ^
                 static_cast<uint64_t>(k)};
  int64_t ell = 0;           // pairs left of the brackets (all rank below the target)
  int64_t C = total_pairs;  // candidates inside the brackets
  while (C > cap) {
    // 1. Stratified sample over the row-major candidate list.
    const double step = static_cast<double>(C) / static_cast<double>(m);
    int64_t row = 0, before = 0;  // candidates in rows < row
    for (int64_t t = 0; t < m; ++t) {
      int64_t pos = static_cast<int64_t>((static_cast<double>(t) + rng.uniform()) * step);
      pos = std::min(pos, C - 1);
      while (before + (R[row] - L[row]) <= pos) {
        before += R[row] - L[row];
        ++row;
      }
      sample[t] = P.value(row, L[row] + (pos - before));
    }
    // 2. Pivots around the target's expected sample position.
    const int64_t r = k - ell;  // target rank among the candidates, 1-based
    const double f = (static_cast<double>(r) - 0.5) / static_cast<double>(C);
    const double centre = f * static_cast<double>(m);
    const double delta = 3.0 * std::sqrt(static_cast<double>(m) * f * (1.0 - f)) + 1.0;
    const int64_t j1 = std::clamp<int64_t>(static_cast<int64_t>(std::floor(centre - delta)), 0, m - 1);
    const int64_t j2 = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(centre + delta)), j1, m - 1);
    std::nth_element(sample.begin(), sample.begin() + j2, sample.end());
    const T p2 = sample[j2];
    std::nth_element(sample.begin(), sample.begin() + j1, sample.begin() + j2 + 1);
    const T p1 = sample[j1];
    // 3. Split at "<= p1" and "< p2"; keep the bounds.
    const auto [tot_a, tot_b] = P.split2(L, R, p1, p2, A, B);
    const int64_t cnt_a = ell + tot_a;
    const int64_t cnt_b = ell + tot_b;
    const bool a_up = cnt_a >= k;  // the target is <= p1
    const bool b_up = cnt_b >= k;  // the target is < p2
    if (a_up && !b_up) {  // then p1 == p2 and the target equals it; A splits above p1
      return {p1, !with_next || cnt_a > k ? p1 : min_at(P, A)};
    }
    // Splits at thresholds are nested: A <= B everywhere when p1 < p2, B <= A when equal.
    const bool a_first = p1 < p2;
    if (a_up) {  // target < p2 too: the tighter upper bound is the smaller split
      const int32_t* U = a_first ? A : B;
      std::copy(U, U + n, R);
      C = (a_first ? cnt_a : cnt_b) - ell;
    } else if (b_up) {  // p1 < target < p2
      std::copy(A, A + n, L);
      std::copy(B, B + n, R);
      C = cnt_b - cnt_a;
      ell = cnt_a;
    } else {  // target >= p2 and > p1: the larger split is the lower bound
      const int32_t* D = a_first ? B : A;
      std::copy(D, D + n, L);
      const int64_t lower = a_first ? cnt_b : cnt_a;
      C -= lower - ell;
      ell = lower;
    }
  }
  // Enumerate the remaining candidates and select.
  std::vector<T>& buf = w.buf;
  buf.resize(std::max<int64_t>(C, 1));
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = L[i]; j < R[i]; ++j) buf[c++] = P.value(i, j);
  }
  const int64_t r = k - ell - 1;
  std::nth_element(buf.begin(), buf.begin() + r, buf.begin() + c);
  const T v = buf[r];
  if (!with_next) return {v, v};
  // Everything after position r is >= v now; past the last candidate, R splits above them.
  return {v, r + 1 < c ? *std::min_element(buf.begin() + r + 1, buf.begin() + c) : min_at(P, R)};
}

// The k-th (and (k+1)-th) pair value of one sorted row; v and nx stay NaN for an invalid k.
// Rows with few pairs are enumerated at once; the sweeps of the rounds read a padded copy.
template <typename T, int Kind>
void select_one(const T* row, int64_t n, int64_t k, bool with_next, Work<T>& w, T& v, T& nx) {
  const Pairs<T, Kind> raw{row, n};
  if (k < 1 || k > raw.n_pairs()) return;
  if (raw.n_pairs() <= enumeration_cap(n)) {
    std::tie(v, nx) = select_row(raw, w, k, with_next);
    return;
  }
  w.row.resize(n + 2 * kPad);
  std::fill(w.row.begin(), w.row.begin() + kPad, -std::numeric_limits<T>::infinity());
  std::fill(w.row.end() - kPad, w.row.end(), std::numeric_limits<T>::infinity());
  std::copy(row, row + n, w.row.begin() + kPad);
  std::tie(v, nx) = select_row(Pairs<T, Kind>{w.row.data() + kPad, n}, w, k, with_next);
}

template <typename T>
void run(const T* a, const int32_t* khi, const int32_t* klo, T* value, T* next, int64_t rows,
         int64_t n, int64_t kind, bool with_next) {
  Work<T> w;
  w.L.resize(n);
  w.R.resize(n);
  w.A.resize(n);
  w.B.resize(n);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t k = (static_cast<int64_t>(khi[r]) << kLimb) + klo[r];
    T v = nan, nx = nan;
    if (kind == 0) {
      select_one<T, 0>(a + r * n, n, k, with_next, w, v, nx);
    } else {
      select_one<T, 1>(a + r * n, n, k, with_next, w, v, nx);
    }
    value[r] = v;
    next[r] = nx;
  }
}

ffi::Error SelectPairImpl(ffi::AnyBuffer a, ffi::Buffer<ffi::S32> khi, ffi::Buffer<ffi::S32> klo,
                          ffi::Result<ffi::AnyBuffer> value, ffi::Result<ffi::AnyBuffer> next,
                          int64_t kind, int64_t with_next) {
  auto dims = a.dimensions();
  if (dims.size() < 1) {
    return ffi::Error::InvalidArgument("jaxstats select_pair: operand rank must be >= 1");
  }
  if (kind != 0 && kind != 1) {
    return ffi::Error::InvalidArgument("jaxstats select_pair: kind must be 0 or 1");
  }
  const int64_t n = dims[dims.size() - 1];
  if (n >= (int64_t{1} << 22)) {
    return ffi::Error::InvalidArgument("jaxstats select_pair: n must be < 2^22");
  }
  const auto et = a.element_type();
  const int64_t rows = static_cast<int64_t>(value->element_count());
  if (value->element_type() != et || next->element_type() != et ||
      next->element_count() != static_cast<size_t>(rows) ||
      khi.element_count() != static_cast<size_t>(rows) ||
      klo.element_count() != static_cast<size_t>(rows) ||
      a.element_count() != static_cast<size_t>(rows * n)) {
    return ffi::Error::InvalidArgument("jaxstats select_pair: operand/result mismatch");
  }
  if (rows == 0) return ffi::Error::Success();
  switch (et) {
    case ffi::F32:
      run<float>(static_cast<const float*>(a.untyped_data()), khi.typed_data(), klo.typed_data(),
                 static_cast<float*>(value->untyped_data()),
                 static_cast<float*>(next->untyped_data()), rows, n, kind, with_next != 0);
      break;
    case ffi::F64:
      run<double>(static_cast<const double*>(a.untyped_data()), khi.typed_data(),
                  klo.typed_data(), static_cast<double*>(value->untyped_data()),
                  static_cast<double*>(next->untyped_data()), rows, n, kind, with_next != 0);
      break;
    default:
      return ffi::Error::InvalidArgument("jaxstats select_pair: float32/float64 only");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsSelectPair, SelectPairImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("with_next"));
