// The erf filter H of Eq. 16 fused into the rfft2 spectrum multiply, and the apodisation window;
// float32, CUDA C for NVRTC (no includes, extern "C" names). The CUDA C twin of
// svrt/kernels/triton_filter.py. H is the formula of svrt.optics.filters.erf_filter_profile
// (the canonical definition): H = 0.5 * (erf(n (nu + w/2)) - erf(n (nu - w/2))), nu = |f| / cutoff,
// on the fftfreq (rows) x rfftfreq (columns) grid.
//
//   svrt_erf_filter grid (ceil(Y*(X/2+1) / blockDim.x), ceil(N / planes_per_prog)):
//       spec, out = interleaved complex float32 [N, Y, X/2+1, 2] (may alias: in place)
//   svrt_apodize    grid (ceil(Y*X / blockDim.x), N): out[n] = x[n] * w, x strided, out contiguous

extern "C" __global__ void svrt_erf_filter(
    const float* spec, float* out, long long N, int ny, int nxh, int planes_per_prog,
    float inv_y, float inv_x, float inv_cutoff, float sharpness, float half_width)
{
    int n_pos = ny * nxh;
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= n_pos) return;
    int ky = o / nxh, kx = o - ky * nxh;
    if (ky > (ny - 1) / 2) ky -= ny;
    float fy = (float)ky * inv_y, fx = (float)kx * inv_x;
    float nu = sqrtf(fy * fy + fx * fx) * inv_cutoff;
    float h = 0.5f * (erff(sharpness * (nu + half_width)) - erff(sharpness * (nu - half_width)));
    long long first = (long long)blockIdx.y * planes_per_prog;
    long long last = min(first + planes_per_prog, N);
    const float2* s2 = reinterpret_cast<const float2*>(spec);
    float2* o2 = reinterpret_cast<float2*>(out);
    for (long long n = first; n < last; ++n) {
        float2 v = s2[n * n_pos + o];
        v.x *= h;
        v.y *= h;
        o2[n * n_pos + o] = v;
    }
}

extern "C" __global__ void svrt_apodize(
    const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ out,
    int ny, int nx, long long s_n, long long s_y, long long s_x, long long n0)
{
    long long n = (long long)blockIdx.y + n0;
    int n_pix = ny * nx;
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= n_pix) return;
    int yy = o / nx, xx = o - yy * nx;
    out[n * n_pix + o] = x[n * s_n + yy * s_y + xx * s_x] * w[o];
}
