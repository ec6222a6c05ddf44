// Launchers of the convolution kernels in kernels/conv.cu, called by the strategies in cpp/src/cuda/conv.cpp.
// Every launcher enqueues on ctx.stream() and checks the launch. Pointers are device memory.
//
// The Gemm strategy's column buffer ("col") holds, for a chunk of nb images starting at image n0 and the
// output positions [p0, p0 + pc) of each, the matrix col[j][b * pc + p] (j = ci * kvol + kernel offset,
// row length nb * pc), i.e. one wide matrix whose image b is the column block at b * pc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend.hpp"
#include "cuda/context.hpp"

namespace magmasr {
namespace cuda {
namespace convk {

// ---- Gemm strategy helpers ----
void im2col(const Context& ctx, const ConvGeom& g, const float* x, int64_t n0, int64_t nb, int64_t p0, int64_t pc,
            float* col);
// dx[n0 .. n0+nb) (+)= the gather of col over the chunk's output positions; replicate padding adds the
// contributions of the clamped border positions. accumulate = false overwrites every element of the images.
void col2im(const Context& ctx, const ConvGeom& g, const float* col, int64_t n0, int64_t nb, int64_t p0,
            int64_t pc, bool accumulate, float* dx);
// y = relu?(y + b) on the chunk (b may be null).
void bias_relu(const Context& ctx, const ConvGeom& g, int64_t n0, int64_t nb, int64_t p0, int64_t pc,
               const float* b, bool relu, float* y);
// out[co][b * pc + p] = dy[n0 + b][co][p0 + p]
void pack_rows(const Context& ctx, const ConvGeom& g, const float* dy, int64_t n0, int64_t nb, int64_t p0,
               int64_t pc, float* out);

// ---- bias gradient (both strategies): db[co] = sum over n and positions of dy ----
size_t bias_grad_workspace(const Context& ctx, const ConvGeom& g);  // bytes
void bias_grad(const Context& ctx, const ConvGeom& g, const float* dy, float* db, void* ws);

// ---- Direct strategy ----
// Which kernel direct_forward runs where the shape has a tiled kernel (many output channels, the filter sizes of
// SRCNN and 3DSRnet); elsewhere (one output channel, other filters) every variant runs the same kernel.
//   Tiled:        the tiled kernel (a 32 x 32 output tile of one image and 16 output channels per block).
//   TiledAsync:   its variant that copies the next input channel into shared memory (cp.async, two buffers) while
//                 it computes the current one; the same sums in the same order, so bit for bit Tiled's output.
//   ImplicitGemm: an implicit GEMM over the flattened (image, position) index, so that small pictures (training
//                 patches) leave no tile half empty; each output is the same fmaf chain as in Tiled (input
//                 channel, then tap, then the bias), so bit for bit Tiled's output.
enum class DirectVariant { Tiled, TiledAsync, ImplicitGemm };
// y = relu?(conv(x, w) + b).
void direct_forward(const Context& ctx, const ConvGeom& g, const float* x, const float* w, const float* b, float* y,
                    bool relu, DirectVariant v);
// True when direct_forward runs a tiled kernel for g, i.e. when TiledAsync selects a different kernel.
bool direct_forward_is_tiled(const ConvGeom& g);
// True when ImplicitGemm selects a different kernel (a tiled shape whose indices fit the GEMM's 32 bits).
bool direct_forward_has_igemm(const ConvGeom& g);
// wt[ci][co][k] = w[co][ci][kvol - 1 - k]: the weights of the backward-data pass seen as a forward pass.
void flip_transpose_weights(const Context& ctx, const ConvGeom& g, const float* w, float* wt);
// With replicate padding: dx += the gradient that reaches border samples through the clamped positions.
void replicate_backward_data_fix(const Context& ctx, const ConvGeom& g, const float* dy, const float* w, float* dx);
// Implicit-GEMM backward-weight with a split reduction; db is not touched.
size_t direct_backward_weight_workspace(const Context& ctx, const ConvGeom& g);  // bytes
void direct_backward_weight(const Context& ctx, const ConvGeom& g, const float* x, const float* dy, float* dw,
                            void* ws);

}  // namespace convk
}  // namespace cuda
}  // namespace magmasr
