// Fused CPU kernels for the Neural ePDO's normalised spatially varying stencil product.
//
// Layouts (all contiguous, channels last; L = g * d channels of one partition):
//   taps (B, H, W, kk, L)   generated coefficients r[o, f, c] at every pixel, offsets first
//   x    (B, H, W, P, L)    operator input, P partitions of g fields of d components
//   y    (B, H, W, P, L)    y[n, f, c](p) = sum_o r[o, f, c](p) x[n, f, c](p + o) / N_f(p)
// with N_f(p) = sum_{o, c} |r[o, f, c](p)| + eps and zero padding outside the image.
// Every inner loop runs over the L contiguous channels of one offset or partition.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

struct Dims {
  int64_t B, H, W, kk, L, P, g, d, k, r;
};

Dims dims_of(const torch::Tensor& taps, const torch::Tensor& x, int64_t k, int64_t g) {
  TORCH_CHECK(taps.dim() == 5 && x.dim() == 5, "taps and x must be 5-d channels-last views");
  TORCH_CHECK(taps.is_contiguous() && x.is_contiguous(), "taps and x must be contiguous");
  Dims s{taps.size(0), taps.size(1), taps.size(2), taps.size(3), taps.size(4),
         x.size(3), g, taps.size(4) / g, k, k / 2};
  TORCH_CHECK(s.kk == k * k, "taps has ", s.kk, " offsets, expected ", k * k);
  TORCH_CHECK(s.L % g == 0, "L = ", s.L, " is not a multiple of g = ", g);
  TORCH_CHECK(x.size(0) == s.B && x.size(1) == s.H && x.size(2) == s.W && x.size(4) == s.L,
              "x does not match taps");
  return s;
}

// o += a * b over n contiguous elements
template <typename T>
inline void fma_row(T* __restrict__ o, const T* __restrict__ a, const T* __restrict__ b,
                    int64_t n) {
#pragma omp simd
  for (int64_t e = 0; e < n; ++e) o[e] += a[e] * b[e];
}

// Calls fn(q, pixel) for every offset q = a*k + c whose neighbour of (b, i, j) lies inside
// the image: (i + dir*(a - r), j + dir*(c - r)); dir = +1 reads p + o, dir = -1 reads p - o.
template <typename Fn>
inline void for_each_tap(const Dims& s, int64_t b, int64_t i, int64_t j, int64_t dir, Fn&& fn) {
  for (int64_t a = 0; a < s.k; ++a) {
    const int64_t ii = i + dir * (a - s.r);
    if (ii < 0 || ii >= s.H) continue;
    for (int64_t c = 0; c < s.k; ++c) {
      const int64_t jj = j + dir * (c - s.r);
      if (jj < 0 || jj >= s.W) continue;
      fn(a * s.k + c, (b * s.H + ii) * s.W + jj);
    }
  }
}

// inv[c] = 1 / N_f for every channel c of field f (so rows can be scaled channel-wise)
template <typename T>
void inverse_norms(const T* __restrict__ r, const Dims& s, double eps, T* __restrict__ inv,
                   T* __restrict__ acc) {
  for (int64_t c = 0; c < s.L; ++c) acc[c] = 0;
  for (int64_t q = 0; q < s.kk; ++q) {
    const T* row = r + q * s.L;
#pragma omp simd
    for (int64_t c = 0; c < s.L; ++c) acc[c] += std::abs(row[c]);
  }
  for (int64_t f = 0; f < s.g; ++f) {
    T total = 0;
    for (int64_t c = 0; c < s.d; ++c) total += acc[f * s.d + c];
    const T v = T(1) / (total + T(eps));
    for (int64_t c = 0; c < s.d; ++c) inv[f * s.d + c] = v;
  }
}

template <typename T>
void forward_impl(const torch::Tensor& taps, const torch::Tensor& x, torch::Tensor& y,
                  const Dims& s, double eps) {
  const T* rp = taps.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  const int64_t rpix = s.kk * s.L, xpix = s.P * s.L;
  at::parallel_for(0, s.B * s.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> inv(s.L), acc(s.L);
    for (int64_t bi = begin; bi < end; ++bi) {
      const int64_t b = bi / s.H, i = bi % s.H;
      for (int64_t j = 0; j < s.W; ++j) {
        const int64_t pix = bi * s.W + j;
        const T* r = rp + pix * rpix;
        T* out = yp + pix * xpix;
        inverse_norms(r, s, eps, inv.data(), acc.data());
        for (int64_t t = 0; t < xpix; ++t) out[t] = 0;
        for_each_tap(s, b, i, j, 1, [&](int64_t q, int64_t src) {
          const T* xs = xp + src * xpix;
          for (int64_t n = 0; n < s.P; ++n) fma_row(out + n * s.L, r + q * s.L, xs + n * s.L, s.L);
        });
        for (int64_t n = 0; n < s.P; ++n) {
          T* o = out + n * s.L;
#pragma omp simd
          for (int64_t c = 0; c < s.L; ++c) o[c] *= inv[c];
        }
      }
    }
  });
}

// Gradients with respect to taps and x, given gy and y (layouts above):
//   gs = gy / N;  gn_f = -sum_{n, c in f} gs y
//   gtaps[o](p) = sum_n gs_n(p) x_n(p + o) + sign(r[o](p)) gn_f(p)
//   gx_n(p') = sum_o r[o](p' - o) gs_n(p' - o)       (a gather: no write conflicts)
template <typename T>
void backward_impl(const torch::Tensor& taps, const torch::Tensor& x, const torch::Tensor& gy,
                   const torch::Tensor& y, torch::Tensor& gtaps, torch::Tensor& gx,
                   const Dims& s, double eps) {
  const T* rp = taps.data_ptr<T>();
  const T* xp = x.data_ptr<T>();
  const T* gyp = gy.data_ptr<T>();
  const T* yp = y.data_ptr<T>();
  T* grp = gtaps.data_ptr<T>();
  T* gxp = gx.data_ptr<T>();
  const int64_t rpix = s.kk * s.L, xpix = s.P * s.L;
  auto gs_t = torch::empty_like(gy);
  T* gsp = gs_t.data_ptr<T>();
  at::parallel_for(0, s.B * s.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> inv(s.L), acc(s.L), gn(s.L);
    for (int64_t bi = begin; bi < end; ++bi) {
      const int64_t b = bi / s.H, i = bi % s.H;
      for (int64_t j = 0; j < s.W; ++j) {
        const int64_t pix = bi * s.W + j;
        const T* r = rp + pix * rpix;
        inverse_norms(r, s, eps, inv.data(), acc.data());
        for (int64_t c = 0; c < s.L; ++c) acc[c] = 0;
        for (int64_t n = 0; n < s.P; ++n) {
          const int64_t off = pix * xpix + n * s.L;
          for (int64_t c = 0; c < s.L; ++c) {
            const T v = gyp[off + c] * inv[c];
            gsp[off + c] = v;
            acc[c] += v * yp[off + c];
          }
        }
        for (int64_t f = 0; f < s.g; ++f) {
          T total = 0;
          for (int64_t c = 0; c < s.d; ++c) total += acc[f * s.d + c];
          for (int64_t c = 0; c < s.d; ++c) gn[f * s.d + c] = -total;
        }
        T* gr = grp + pix * rpix;
        for (int64_t q = 0; q < s.kk; ++q) {
          const T* row = r + q * s.L;
          T* grow = gr + q * s.L;
#pragma omp simd
          for (int64_t c = 0; c < s.L; ++c)
            grow[c] = (T(row[c] > 0) - T(row[c] < 0)) * gn[c];
        }
        const T* gsv = gsp + pix * xpix;
        for_each_tap(s, b, i, j, 1, [&](int64_t q, int64_t src) {
          const T* xs = xp + src * xpix;
          for (int64_t n = 0; n < s.P; ++n) fma_row(gr + q * s.L, gsv + n * s.L, xs + n * s.L, s.L);
        });
      }
    }
  });
  at::parallel_for(0, s.B * s.H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bi = begin; bi < end; ++bi) {
      const int64_t b = bi / s.H, i = bi % s.H;
      for (int64_t j = 0; j < s.W; ++j) {
        T* out = gxp + (bi * s.W + j) * xpix;
        for (int64_t t = 0; t < xpix; ++t) out[t] = 0;
        for_each_tap(s, b, i, j, -1, [&](int64_t q, int64_t src) {
          const T* tap = rp + src * rpix + q * s.L;
          const T* gsv = gsp + src * xpix;
          for (int64_t n = 0; n < s.P; ++n) fma_row(out + n * s.L, tap, gsv + n * s.L, s.L);
        });
      }
    }
  });
}

}  // namespace

torch::Tensor stencil_forward(torch::Tensor taps, torch::Tensor x, torch::Tensor y, int64_t k,
                              int64_t g, double eps) {
  const Dims s = dims_of(taps, x, k, g);
  TORCH_CHECK(y.is_contiguous() && y.sizes() == x.sizes(), "y must be contiguous like x");
  AT_DISPATCH_FLOATING_TYPES(taps.scalar_type(), "stencil_forward",
                             [&] { forward_impl<scalar_t>(taps, x, y, s, eps); });
  return y;
}

std::vector<torch::Tensor> stencil_backward(torch::Tensor taps, torch::Tensor x,
                                            torch::Tensor gy, torch::Tensor y, int64_t k,
                                            int64_t g, double eps) {
  const Dims s = dims_of(taps, x, k, g);
  TORCH_CHECK(gy.is_contiguous() && y.is_contiguous(), "gy and y must be contiguous");
  auto gtaps = torch::empty_like(taps);
  auto gx = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(taps.scalar_type(), "stencil_backward", [&] {
    backward_impl<scalar_t>(taps, x, gy, y, gtaps, gx, s, eps);
  });
  return {gtaps, gx};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &stencil_forward, "normalised stencil product (channels last, taps first)");
  m.def("backward", &stencil_backward, "its gradients with respect to the taps and x");
}
