// jaxstats pool-adjacent-violators (PAV), called from JAX through the XLA FFI
// (jax.ffi.ffi_call) by jaxstats/soft.py (the isotonic regression behind soft_rank, soft_sort
// and soft_quantile) on CPU.
//
// JaxstatsPav(a, b; kind) -> (ids, block_a, block_b, count)
//
//   a, b      [..., n] float32 or float64 (all leading dimensions are rows, solved
//             independently; n >= 1)
//   kind      0 = "l2": block statistics are sums (a = sum of y, b = sum of weights), a block's
//                       value is a / b;
//             1 = "kl": block statistics are log-sum-exps, a block's value is a - b
//   ids       int32 [..., n]: index of each coordinate's block (0, 1, ... along the row)
//   block_a   dtype of a [..., n]: pooled a of each coordinate's block
//   block_b   dtype of a [..., n]: pooled b of each coordinate's block
//   count     int32 [..., n]: size of each coordinate's block; for "l2" round(block_b) (half to
//             even), as the XLA solver does (callers pass unit weights, so this is the size)
//
// The same algorithm and arithmetic as _pav_single / _pav_rows in soft.py: push one coordinate
// at a time onto a stack of blocks and pool the top two while they violate the non-increasing
// order (l2: pa / pb < ta / tb; kl: pa - pb < ta - tb). Pooling adds the statistics (l2) or
// log-adds them with logaddexp written as jnp.logaddexp does: max + log1p(exp(-|d|)), d the
// difference, and x1 + x2 when d is NaN (both -inf -> -inf, both +inf -> +inf, NaN -> NaN).
// Each coordinate is pushed once and each pool removes a block: O(n) per row. The only
// difference from the XLA loop is that exp/log1p come from the C library instead of XLA's own
// approximations (the "kl" statistics may differ in the last bit or two).
//
// No fast-math: the comparisons must see IEEE quotients / differences, as XLA does.

#include <cmath>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
inline T log_add_exp(T x1, T x2) {
  const T d = x1 - x2;
  if (std::isnan(d)) return x1 + x2;
  const T m = x1 > x2 ? x1 : x2;  // d is not NaN, so neither is; max as lax.max
  return m + std::log1p(std::exp(-std::fabs(d)));
}

template <typename T, int Kind>
void pav_rows(const T* a, const T* b, int32_t* ids, T* ba, T* bb, int32_t* cnt, int64_t rows,
              int64_t n) {
  // Stack of finished blocks below the top: statistics and first coordinate.
  std::vector<T> sa(n), sb(n);
  std::vector<int64_t> start(n + 1);
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = a + r * n;
    const T* br = b + r * n;
    int64_t k = 0;  // blocks on the stack below the top
    T ta = ar[0], tb = br[0];
    int64_t ts = 0;  // first coordinate of the top block
    for (int64_t i = 1; i <= n; ++i) {
      // Pool the top with the block below while they violate the order.
      while (k > 0) {
        const T pa = sa[k - 1], pb = sb[k - 1];
        bool viol;
        if (Kind == 0) {
          viol = pa / pb < ta / tb;
        } else {
          viol = pa - pb < ta - tb;
        }
        if (!viol) break;
        if (Kind == 0) {
          ta = pa + ta;
          tb = pb + tb;
        } else {
          ta = log_add_exp(pa, ta);
          tb = log_add_exp(pb, tb);
        }
        --k;
        ts = start[k];
      }
      if (i == n) break;
      sa[k] = ta;
      sb[k] = tb;
      start[k] = ts;
      ++k;
      ta = ar[i];
      tb = br[i];
      ts = i;
    }
    sa[k] = ta;
    sb[k] = tb;
    start[k] = ts;
    start[k + 1] = n;
    // Broadcast the blocks back to their coordinates.
    int32_t* idr = ids + r * n;
    T* bar = ba + r * n;
    T* bbr = bb + r * n;
    int32_t* cr = cnt + r * n;
    for (int64_t j = 0; j <= k; ++j) {
      const int64_t lo = start[j], hi = start[j + 1];
      const T va = sa[j], vb = sb[j];
      const int32_t c = Kind == 0 ? static_cast<int32_t>(std::nearbyint(vb))
                                  : static_cast<int32_t>(hi - lo);
      for (int64_t t = lo; t < hi; ++t) {
        idr[t] = static_cast<int32_t>(j);
        bar[t] = va;
        bbr[t] = vb;
        cr[t] = c;
      }
    }
  }
}

template <typename T>
void run(const ffi::AnyBuffer& a, const ffi::AnyBuffer& b, ffi::AnyBuffer& ids,
         ffi::AnyBuffer& ba, ffi::AnyBuffer& bb, ffi::AnyBuffer& cnt, int64_t rows, int64_t n,
         int64_t kind) {
  const T* pa = static_cast<const T*>(a.untyped_data());
  const T* pb = static_cast<const T*>(b.untyped_data());
  int32_t* pid = static_cast<int32_t*>(ids.untyped_data());
  T* pba = static_cast<T*>(ba.untyped_data());
  T* pbb = static_cast<T*>(bb.untyped_data());
  int32_t* pc = static_cast<int32_t*>(cnt.untyped_data());
  if (kind == 0) {
    pav_rows<T, 0>(pa, pb, pid, pba, pbb, pc, rows, n);
  } else {
    pav_rows<T, 1>(pa, pb, pid, pba, pbb, pc, rows, n);
  }
}

ffi::Error PavImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> ids,
                   ffi::Result<ffi::AnyBuffer> ba, ffi::Result<ffi::AnyBuffer> bb,
                   ffi::Result<ffi::AnyBuffer> cnt, int64_t kind) {
  auto dims = a.dimensions();
  if (dims.size() < 1) return ffi::Error::InvalidArgument("jaxstats pav: operand rank must be >= 1");
  if (kind != 0 && kind != 1) return ffi::Error::InvalidArgument("jaxstats pav: kind must be 0 or 1");
  const size_t total = a.element_count();
  const auto et = a.element_type();
  if (b.element_type() != et || b.element_count() != total || ba->element_type() != et ||
      bb->element_type() != et || ids->element_type() != ffi::S32 ||
      cnt->element_type() != ffi::S32 || ids->element_count() != total ||
      ba->element_count() != total || bb->element_count() != total ||
      cnt->element_count() != total) {
    return ffi::Error::InvalidArgument("jaxstats pav: operand/result mismatch");
  }
  const int64_t n = dims[dims.size() - 1];
  if (n == 0 || total == 0) return ffi::Error::Success();
  const int64_t rows = static_cast<int64_t>(total) / n;
  switch (et) {
    case ffi::F32: run<float>(a, b, *ids, *ba, *bb, *cnt, rows, n, kind); break;
    case ffi::F64: run<double>(a, b, *ids, *ba, *bb, *cnt, rows, n, kind); break;
    default: return ffi::Error::InvalidArgument("jaxstats pav: float32/float64 only");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxstatsPav, PavImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("kind"));
