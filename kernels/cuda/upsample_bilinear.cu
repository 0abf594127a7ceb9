// Bilinear upsampling of the mode grid (align_corners=False) and its adjoint, float32, CUDA C.
//
// The CUDA C twin of svrt/kernels/triton_upsample.py, for hosts that load kernels with NVRTC
// (no includes, extern "C" names). Same contract: F.interpolate(coarse, size=(Y, X),
// mode="bilinear", align_corners=False); same arithmetic, in PyTorch's order; same gather adjoint in
// two separable passes (no atomics). See the Python module docstring for the footprint derivation.
//
// Launch (one plane p = b * M + m per blockIdx.y, plane0 added for grids beyond 65535 planes):
//   svrt_upsample_fwd   grid (ceil(Y*X / blockDim.x), planes)
//   svrt_upsample_adj_x grid (ceil(Y*Xg / blockDim.x), planes)  -> scratch [P, Y, Xg] float32
//   svrt_upsample_adj_y grid (ceil(Yg*Xg / blockDim.x), planes) -> out [P, Yg, Xg]
// scale_* = (float)n_in / (float)n_out, inv_scale_* = n_out / n_in, n_cand_* = min(n_out, ceil(2 n_out / n_in) + 4).

struct SvrtLin {
    int i0, i1;
    float l0, l1;
};

__device__ __forceinline__ SvrtLin svrt_lin(int dst, float scale, int n_in) {
    SvrtLin r;
    float src = fmaxf(scale * ((float)dst + 0.5f) - 0.5f, 0.0f);
    r.i0 = min((int)src, n_in - 1);
    r.i1 = r.i0 + ((r.i0 < n_in - 1) ? 1 : 0);
    r.l1 = src - (float)r.i0;
    r.l0 = 1.0f - r.l1;
    return r;
}

extern "C" __global__ void svrt_upsample_fwd(
    const float* __restrict__ src, float* __restrict__ dst, int M, int in_h, int in_w, int out_h, int out_w,
    long long s_b, long long s_m, long long s_h, long long s_w, float scale_h, float scale_w, long long plane0)
{
    long long p = (long long)blockIdx.y + plane0;
    long long b = p / M, m = p - b * M;
    int n_out = out_h * out_w;
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= n_out) return;
    int oy = o / out_w, ox = o - oy * out_w;
    SvrtLin y = svrt_lin(oy, scale_h, in_h);
    SvrtLin x = svrt_lin(ox, scale_w, in_w);
    const float* s = src + b * s_b + m * s_m;
    float v00 = s[y.i0 * s_h + x.i0 * s_w], v01 = s[y.i0 * s_h + x.i1 * s_w];
    float v10 = s[y.i1 * s_h + x.i0 * s_w], v11 = s[y.i1 * s_h + x.i1 * s_w];
    dst[p * n_out + o] = y.l0 * (x.l0 * v00 + x.l1 * v01) + y.l1 * (x.l0 * v10 + x.l1 * v11);
}

extern "C" __global__ void svrt_upsample_adj_x(
    const float* __restrict__ g, float* __restrict__ t, int M, int in_w, int out_h, int out_w,
    long long g_sb, long long g_sm, long long g_sh, long long g_sw,
    float scale_w, float inv_scale_w, int n_cand, long long plane0)
{
    long long p = (long long)blockIdx.y + plane0;
    long long b = p / M, m = p - b * M;
    int n_t = out_h * in_w;
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= n_t) return;
    int oy = o / in_w, j = o - oy * in_w;
    int lo = max((int)floorf(((float)j - 0.5f) * inv_scale_w - 0.5f) - 1, 0);
    int hi = min((int)floorf(((float)j + 1.5f) * inv_scale_w - 0.5f) + 1, out_w - 1);
    const float* row = g + b * g_sb + m * g_sm + (long long)oy * g_sh;
    float acc = 0.0f;
    for (int k = 0; k < n_cand; ++k) {
        int ox = lo + k;
        if (ox > hi) break;
        SvrtLin x = svrt_lin(ox, scale_w, in_w);
        float w = (x.i0 == j ? x.l0 : 0.0f) + (x.i1 == j ? x.l1 : 0.0f);
        acc += w * row[(long long)ox * g_sw];
    }
    t[p * n_t + o] = acc;
}

extern "C" __global__ void svrt_upsample_adj_y(
    const float* __restrict__ t, float* __restrict__ out, int in_h, int in_w, int out_h,
    float scale_h, float inv_scale_h, int n_cand, long long plane0)
{
    long long p = (long long)blockIdx.y + plane0;
    int n_c = in_h * in_w;
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= n_c) return;
    int i = o / in_w, j = o - i * in_w;
    int lo = max((int)floorf(((float)i - 0.5f) * inv_scale_h - 0.5f) - 1, 0);
    int hi = min((int)floorf(((float)i + 1.5f) * inv_scale_h - 0.5f) + 1, out_h - 1);
    const float* col = t + p * (long long)out_h * in_w + j;
    float acc = 0.0f;
    for (int k = 0; k < n_cand; ++k) {
        int oy = lo + k;
        if (oy > hi) break;
        SvrtLin y = svrt_lin(oy, scale_h, in_h);
        float w = (y.i0 == i ? y.l0 : 0.0f) + (y.i1 == i ? y.l1 : 0.0f);
        acc += w * col[(long long)oy * in_w];
    }
    out[p * n_c + o] = acc;
}
